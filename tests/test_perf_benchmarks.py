"""The performance tools run end to end at a tiny size on CPU.

* versus_torch.compare: both sides train (ours, theirs, theirs, ours) and sample, and the record
  holds positive rates for every phase and a finite ratio;
* memory_plan.measure: compile-only memory analysis on 2 of the fake devices of conftest, fsdp 2:
  the compiled per-device argument bytes equal the exact state + batch shards, and fsdp 2 halves
  the trainable state; the per-sample activation slope is a least-squares line;
* the compilation cache: a second process loads what the first one compiled;
* profile_steps: the top ops of a jax.profiler trace of the engine's compiled steps are ops of
  those steps' HLO, with positive times and shares of the step in (0, 1].
"""
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from fdistill_jax import compose, defaults
from fdistill_jax.benchmarks import engine_speed, memory_plan, profile_steps, versus_torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _tiny(batch):
  cfg = engine_speed.synthetic_config(os.path.join(REPO, "configs", "cifar10_kl.py"), {}, 0)
  versus_torch.shrink(cfg)
  cfg.teacher.update(dtype="float32", remat=False)  # CPU: cheapest compile.
  # Smaller still: an 8×8 one-level DDPM++ goes through the same code as --tiny's 16×16 three
  # levels in a fraction of the compile time (compiling is most of these tests' time on CPU).
  cfg.teacher.precond_kwargs.update(img_resolution=8, model_channels=8, channel_mult=(1,),
                                    attn_resolutions=(8,))
  cfg.dataset.resolution = 8
  cfg.disc.feature_keys = ("enc8",)
  cfg.train.batch_size = batch
  cfg.eval.num_samples = batch
  return cfg


@pytest.mark.slow
def test_versus_torch_runs_both_sides(tmp_path, fast_compile):
  torch = pytest.importorskip("torch")
  # One intra-op thread for torch's side, as in test_torch_reference: tiny tensors, and on two
  # busy cores its default pool spends more CPU waiting than computing. Rates are only checked > 0.
  threads = torch.get_num_threads()
  torch.set_num_threads(1)
  try:
    _versus_torch_runs_both_sides(tmp_path)
  finally:
    torch.set_num_threads(threads)


def _versus_torch_runs_both_sides(tmp_path):
  cfg = _tiny(8)
  opts = dict(amp=None, compile=False, channels_last=False, fused_adam=False, checkpointing=False)
  ours = versus_torch.Ours(cfg, str(tmp_path))  # Compiled once, compared twice (gpu_suite).
  rec = versus_torch.compare(cfg, steps=1, sample_batch=4, nfes=[3], device="cpu",
                             torch_opts=opts, ours=ours)
  assert [r["side"] for r in rec["rounds"]] == ["ours", "theirs", "theirs", "ours"]
  for side in ("ours", "theirs"):
    assert rec[side]["images_per_s"] > 0 and rec[side]["critic_images_per_s"] > 0
    assert set(rec["sampling"][side]) == {"one_step", "heun_3"}
  assert np.isfinite(rec["ratio_images_per_s"]) and rec["ratio_images_per_s"] > 0
  assert "| iteration at 1:4, images/s |" in versus_torch.table(rec)
  # Against a second PyTorch setting, same Ours, no sampling: nothing of ours compiles again.
  compiled = dict(ours.run.compiled)
  again = versus_torch.compare(cfg, steps=1, sample_batch=4, nfes=[3], device="cpu",
                               torch_opts=dict(opts, channels_last=True), ours=ours, sample=False)
  assert ours.run.compiled == compiled and "sampling" not in again
  assert again["torch_options"]["channels_last"] == "True" and again["ratio_images_per_s"] > 0
  assert "sampling" not in versus_torch.table(again)
  assert set(ours._samplers) == {(4, "one_step"), (4, 3)}  # pylint: disable=protected-access


@pytest.mark.slow
def test_memory_plan_shards_the_state(fast_compile):
  cfg = _tiny(8)
  cfg.mesh.fsdp_min_size = 0  # The tiny net's leaves are all under the default 16k threshold.
  cfg.teacher.precond_kwargs.attn_resolutions = ()  # Fewer ops: a cheaper compile.
  r = memory_plan.measure(cfg, 2, 2, phases=("generator",))  # One compile: the costly part.
  assert r["mesh"] == {"data": 1, "fsdp": 2}
  p, mine = r["phases"]["generator"], r["per_device"]
  # The exact per-device parts are what the compiler was handed: state, teacher and the batch
  # less its real images (jit drops inputs the generator step does not read).
  res = cfg.teacher.precond_kwargs.img_resolution
  images = 4 * res * res * 3 * 4  # 4 images per device, float32.
  assert p["argument"] == mine["state"] + mine["batch"] - images, (p, mine)
  # fsdp=2 halves the trainable state (params, Adam moments, EMA) bar a few odd-sized leaves.
  trainable = mine["state"] - mine["frozen"]
  assert 0.45 * r["state_bytes"] < trainable < 0.55 * r["state_bytes"], (mine, r["state_bytes"])
  assert p["temp"] > 0 and p["peak"] >= p["argument"]
  text = memory_plan.table("tiny", [r])
  assert f"| {r['batch']} | 2 | 1×2 | 4 | generator |" in text and "frozen" in text


def test_memory_plan_activation_slope():
  recs = [{"batch": 64, "devices": d, "per_device": {"state": 7},
           "phases": {"generator": {"temp": 100 + 3 * (64 // d)}}} for d in (8, 16, 32)]
  a, s = memory_plan.activation_slope(recs, "generator")
  assert a == pytest.approx(100) and s == pytest.approx(3)
  assert memory_plan.activation_slope(recs[:1], "generator") is None
  recs[0]["per_device"]["state"] = 8  # A different state per device: no common line.
  assert memory_plan.activation_slope(recs, "generator") is None


def test_compilation_cache_is_written_and_reused(tmp_path):
  code = ("import jax, jax.numpy as jnp\n"
          "from fdistill_jax.engine import compile_cache\n"
          f"compile_cache.enable({str(tmp_path)!r})\n"
          "print(float(jax.jit(lambda x: jnp.sin(x) * 3)(jnp.ones(3)).sum()))\n")
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  counts = []
  for _ in range(2):
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=REPO, capture_output=True,
                         text=True, check=True)
    assert float(out.stdout.strip()) == pytest.approx(3 * 3 * np.sin(1.0), rel=1e-6)
    counts.append(len(os.listdir(tmp_path)))
  assert counts[0] > 0, "no cache entry written"
  assert counts[1] == counts[0], "the second process compiled again instead of loading"
  from fdistill_jax.engine import compile_cache
  assert compile_cache.cache_dir("workdir", "/w") == "/w/jax_cache"
  assert compile_cache.cache_dir("", "/w") is None


def test_profile_self_times_nest():
  # A while loop (0-10 ns) holding two body ops, then an op on its own.
  assert profile_steps._self_times([(0, 10), (2, 5), (6, 8), (11, 12)]) == [5, 3, 2, 1]


@pytest.mark.slow
def test_profile_names_the_steps_ops(tmp_path, fast_compile):
  """The engine's toy f-distill steps (MLPs: an image UNet's steps take minutes to compile on this
  CPU), traced as engine_speed --profile traces them."""
  import jax
  cfg = defaults.toy()
  cfg.pretrain.steps, cfg.student.depth, cfg.student.hidden = 10, 1, 32
  cfg.disc.enabled = False  # Fewer ops: a cheaper compile.
  cfg.train.update(batch_size=64, async_checkpoints=False, tensorboard=False)
  run = compose.Run(cfg, str(tmp_path / "wd"), devices=jax.devices()[:1], restore=False)
  prof = profile_steps.profile(run, run.global_batch(0), str(tmp_path / "trace"), steps=2, top=5)
  assert set(prof) == {"generator", "critic"}
  for phase, p in prof.items():
    hlo = run.compiled[phase].as_text()
    assert hlo.startswith(f"HloModule {p['module']},") and p["plane"] == "/host:CPU", p
    assert 0 < len(p["top"]) <= 5 <= p["ops_timed"], p
    ms = [r["ms_per_step"] for r in p["top"]]
    assert ms == sorted(ms, reverse=True) and ms[-1] > 0, ms
    for r in p["top"]:
      assert 0 < r["share"] <= 1 and r["events_per_step"] >= 1, r
      assert re.search(rf"%{re.escape(r['op'])} = ", hlo), f"{r['op']} is not in the {phase} step"
      assert r["category"] and r["category"] != "?", r
    assert len(p["step_ms"]) == 2 and min(p["step_ms"]) > 0
  assert "| 1 | `" in profile_steps.table(prof)
