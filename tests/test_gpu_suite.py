"""benchmarks/gpu_suite.py, the one-command GPU suite of issue 31, on CPU.

* --dry_run lists the five stages in priority order with allowances that add up to the budget,
  and runs nothing;
* the runner: cumulative deadlines (an overrun is taken from later stages), a stage under its
  minimum window skipped with the reason, a stage that raises recorded while the suite goes on,
  the JSON rewritten atomically after every stage;
* the PixArt batch search (next_batch) and the compile-stage mode (compile_mode) as functions;
* the PixArt stage in process: bf16-vs-fp32 numerics on the committed digits teacher and a tiny
  random PixArt, and the batch search through an out-of-memory (the step timing faked);
* with a package of the engine missing, or without a GPU and without --tiny, the suite refuses
  to run and says why (exit 2);
* --tiny end to end in a subprocess on the MFU, compile and profile stages (the versus_torch
  stage's pieces are tests/test_perf_benchmarks.py::test_versus_torch_runs_both_sides; the whole
  tiny suite takes ~7 min on 2 cores, too long for the suite).
"""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from fdistill_jax import testing
from fdistill_jax.benchmarks import common, gpu_suite

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _cli(args, timeout, env=None):
  env = dict(os.environ, PYTHONPATH=REPO, **(env or {}))
  return subprocess.run([sys.executable, "-m", "fdistill_jax.benchmarks.gpu_suite", *args],
                        cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout,
                        check=False)


def test_dry_run_lists_stages_and_runs_nothing(tmp_path):
  out = tmp_path / "out"
  xdg = tmp_path / "xdg"
  proc = _cli([f"--out={out}", "--dry_run", "--budget_s=600"], 120,
              env={"XDG_CACHE_HOME": str(xdg)})
  assert proc.returncode == 0, proc.stderr[-2000:]
  text = proc.stdout
  # The compilation cache (native code the suite runs, emptied first) is per user and host, apart
  # from the runs' cache, never inside --out (which may be shared).
  assert f"compilation cache {gpu_suite.default_cache_dir({'XDG_CACHE_HOME': str(xdg)})}" in text
  assert str(xdg / "fdistill_jax" / "gpu_suite_jax_cache") in text and f"{out}/jax_cache" not in text
  names = [s.name for s in gpu_suite.STAGES]
  assert names == ["versus_torch", "mfu", "compile", "pixart", "profile"]
  pos = [text.index(f"{i}. {n}:") for i, n in enumerate(names, 1)]
  assert pos == sorted(pos), text
  assert "must end by 600 s" in text and "versus_torch --config=configs/cifar10_kl.py" in text
  assert "--torch_amp=fp32 --torch_compile=off" in text and '"batch": 256' in text
  assert sum(s.share for s in gpu_suite.STAGES) == pytest.approx(1.0)
  assert not out.exists(), "a dry run writes nothing"
  tiny = _cli([f"--out={out}", "--dry_run", "--tiny"], 120).stdout
  assert "mode tiny" in tiny and '"batch": 4' in tiny


class _Clock:
  def __init__(self):
    self.t = 1000.0

  def __call__(self):
    return self.t


def test_runner_deadlines_skips_errors_and_saves(tmp_path):
  clock, seen = _Clock(), {}
  suite = gpu_suite.Suite(str(tmp_path), budget_s=100.0, tiny=False, clock=clock)
  plan = lambda tiny: {"settings": {}, "commands": []}

  def first(s, rec):
    rec["figure"] = 1.5
    clock.t += 50  # Its window is 40 s: overruns by 10.

  def second(s, rec):
    seen["saved"] = json.load(open(s.path))["stages"]["first"]  # Saved before this one ran.
    seen["window"] = s.left()
    raise ValueError("boom")

  def fourth(s, rec):
    seen["fourth_window"] = s.left()
    rec["figure"] = 2.0

  stages = [gpu_suite.Stage("first", "1", 0.4, 10.0, first, plan),
            gpu_suite.Stage("second", "2", 0.2, 5.0, second, plan),
            gpu_suite.Stage("third", "3", 0.1, 30.0, lambda s, r: None, plan),
            gpu_suite.Stage("fourth", "4", 0.3, 5.0, fourth, plan)]
  res = suite.run(stages)
  st = res["stages"]
  assert st["first"]["status"] == "ok" and st["first"]["overran_s"] == pytest.approx(10)
  assert seen["saved"]["figure"] == 1.5 and seen["saved"]["status"] == "ok"
  assert seen["window"] == pytest.approx(10)  # Deadline 60 s, 50 s gone.
  assert st["second"]["status"] == "error" and "ValueError: boom" in st["second"]["error"]
  assert st["third"]["status"] == "skipped" and "needs at least 30 s" in st["third"]["reason"]
  assert st["fourth"]["status"] == "ok" and seen["fourth_window"] == pytest.approx(50)
  on_disk = json.load(open(tmp_path / "gpu_suite.json"))
  assert on_disk["stages"] == json.loads(json.dumps(st))
  assert os.listdir(tmp_path) == ["gpu_suite.json"], "temporary files left behind"
  rows = gpu_suite.summary_rows(res)
  assert ("stage second", "error") == rows[0][:2] and rows[1][:2] == ("stage third", "skipped")


def test_next_batch_search():
  nb = lambda att, limit=None: gpu_suite.next_batch(att, limit, max_batch=512, granularity=8,
                                                    max_attempts=5)
  gib = 2 ** 30
  assert nb([{"batch": 8, "fits": True, "peak_bytes": 20 * gib}]) == 16  # Double.
  # Two fitted peaks: 20 GiB + 2 GiB/image; 0.9·80 GiB is reached at 34 images -> 32 (≤ 4×16).
  two = [{"batch": 8, "fits": True, "peak_bytes": 20 * gib},
         {"batch": 16, "fits": True, "peak_bytes": 36 * gib}]
  assert nb(two, 80 * gib) == 32
  assert nb(two, 1000 * gib) == 64  # Capped at 4× the largest fit.
  assert nb(two + [{"batch": 64, "fits": False}], 1000 * gib) == 40  # Bisect 16..64.
  assert nb([{"batch": 8, "fits": False}]) == 4  # Nothing fits: halve.
  assert nb([{"batch": 8, "fits": True}, {"batch": 16, "fits": False}]) is None  # 8 apart.
  assert nb(two, 36 * gib) is None  # Predicted max below the largest fit: stop.
  assert gpu_suite.next_batch(two, None, 512, 8, max_attempts=2) is None


def test_compile_mode():
  cm = gpu_suite.compile_mode
  assert cm("auto", "cifar10", None, 60, 40)[0] == "fresh"
  assert cm("auto", "cifar10", 100.0, 300, 40)[0] == "fresh"  # 150 + 80 ≤ 300.
  assert cm("auto", "cifar10", 100.0, 200, 40)[0] == "reuse"
  assert cm("auto", "imagenet64", 300.0, 10_000, 40)[0] == "reuse"
  assert cm("auto", "imagenet64", None, 10_000, 40)[0] == "skip"
  assert cm("reuse", "cifar10", None, 10_000, 40)[0] == "skip"
  assert cm("fresh", "imagenet64", 300.0, 0, 40)[0] == "fresh"


def test_peak_table_names_its_source():
  for kind, tflops in (("NVIDIA H100 80GB HBM3", 989.4), ("NVIDIA H100 PCIe", 756.0),
                       ("NVIDIA H200", 989.4), ("NVIDIA A100-SXM4-80GB", 312.0)):
    p = common.peak_bf16(kind)
    assert p["tflops"] == tflops and "datasheet" in p["source"], (kind, p)
  p = common.peak_bf16("cpu")
  assert p["tflops"] is None and "not in" in p["reason"]


@pytest.mark.slow
def test_pixart_stage_numerics_and_batch_search(tmp_path, monkeypatch, fast_compile):
  """The PixArt stage in process at tiny sizes, with the step timing faked: batch 2 fits, 4 runs
  out of memory, so the search stops at 2 (granularity 2) and records both tries."""
  calls = []

  def fake_speed(cfg, workdir, steps, devices=None):
    b = cfg.train.batch_size
    calls.append(b)
    if b >= 4:
      raise RuntimeError("RESOURCE_EXHAUSTED: Out of memory while trying to allocate")
    ph = {p: {"step_s": 0.5, "compiled_peak_bytes": 1000 * b} for p in ("generator", "critic")}
    return {"phases": ph, "images_per_s": b / 0.5, "peak_gib_device0": 0.0}

  monkeypatch.setattr(gpu_suite.engine_speed, "speed", fake_speed)
  suite = gpu_suite.Suite(str(tmp_path), budget_s=1e4, tiny=True)
  rec = {}
  gpu_suite.stage_pixart(suite, rec)
  assert calls == [2, 4]
  for model in ("digits_t2i_teacher", "pixart_tiny_random"):
    num = rec["numerics"][model]
    assert [k for k in num if k.startswith("sigma_")] == [
        f"sigma_{s:g}" for s in gpu_suite.SIGMAS]
    for k, v in num.items():
      if k.startswith("sigma_"):
        # bf16 operands: a visible, bounded error; f32 default = highest on CPU.
        assert 1e-5 < v["D_bf16_vs_f32_highest"] < 0.5, (model, k, v)
        assert 1e-5 < v["eps_bf16_vs_f32_highest"] < 0.5, (model, k, v)
        assert v["D_f32_default_vs_highest"] < 1e-5 and np.isfinite(v["D_rms"])
  steps = rec["steps"]
  assert [(a["batch"], a["fits"]) for a in steps["attempts"]] == [(2, True), (4, False)]
  best = steps["largest_fitting"]
  assert best["batch"] == 2 and best["smallest_failing"] == 4
  assert best["phase_images_per_s"] == {"generator": 4.0, "critic": 4.0}
  assert best["process_peak_gib"] is None  # No allocator statistics on CPU.
  assert "RESOURCE_EXHAUSTED" in steps["attempts"][1]["error"]


# The packages the device machine's image lacks (BENCHMARKS.md; gpu_suite's docstring). Blocking
# TensorFlow too also spares the subprocess its ~6 s import.
_BLOCKED = ("ml_collections", "clu", "grain", "tensorflow")
_BLOCKED_RUN = f"""
import importlib.abc, runpy, sys
class Block(importlib.abc.MetaPathFinder):
  def find_spec(self, name, path, target=None):
    if name.split(".")[0] in {_BLOCKED!r}:
      raise ModuleNotFoundError(f"No module named {{name!r}} (blocked by the test)")
sys.meta_path.insert(0, Block())
sys.argv = ["gpu_suite"] + sys.argv[1:]
runpy.run_module("fdistill_jax.benchmarks.gpu_suite", run_name="__main__")
"""


@pytest.mark.slow
def test_missing_packages_and_no_gpu_are_reported(tmp_path):
  """As on the device image, without ml_collections, clu, grain and TensorFlow, on a host where
  jax sees no GPU: the suite says both, naming each missing package, writes the JSON with the
  environment, runs no stage and exits 2."""
  proc = subprocess.run([sys.executable, "-c", _BLOCKED_RUN, f"--out={tmp_path}", "--stages=mfu"],
                        cwd=REPO, env=dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS="cpu"),
                        capture_output=True, text=True, timeout=300, check=False)
  assert proc.returncode == 2, proc.stderr[-3000:]
  assert "PROBLEM: the engine cannot be imported" in proc.stdout and "ml_collections" in proc.stdout
  problem = next(l for l in proc.stdout.splitlines() if "the engine cannot be imported" in l)
  assert all(f"{m} (ModuleNotFoundError" in problem for m in _BLOCKED), problem
  assert "PROBLEM: jax sees no GPU" in proc.stdout and "not run" in proc.stdout
  rec = json.load(open(tmp_path / "gpu_suite.json"))
  assert rec["aborted"].startswith("preflight: the engine cannot be imported")
  assert rec["stages"] == {} and rec["environment"]["jax"]["backend"] == "cpu"
  assert rec["environment"]["packages"]["jax"] == rec["environment"]["jax"]["version"]


@pytest.mark.slow
def test_tiny_suite_mfu_compile_profile(tmp_path):
  """The CLI end to end at tiny sizes: MFU (no peak for a CPU: null with the reason), the warm
  compile of the ImageNet-64 run in a child on this process's cache (every program a cache hit),
  and the profile of both steps on a run rebuilt from that cache."""
  out = tmp_path / "out"
  # XLA flags for the suite and its compile child alike (the child inherits them, so its cache keys
  # are the parent's): testing.BENCHMARK_COMPILE, and one CPU device, as the suite uses one chip
  # (conftest's 8 fake devices, for the sharding tests, cost this run ~10 s: their threads, their
  # profile lines).
  xla = [f for f in os.environ.get("XLA_FLAGS", "").split()
         if not f.startswith("--xla_force_host_platform_device_count")]
  xla += ["--xla_force_host_platform_device_count=1"] + [
      f"--{k}={str(v).lower()}" for k, v in testing.BENCHMARK_COMPILE.items()]
  proc = _cli([f"--out={out}", "--tiny", "--stages=mfu,compile,profile", "--compile_mode=reuse",
               "--budget_s=1500"], 900, env={"XDG_CACHE_HOME": str(tmp_path / "xdg"),
                                             "XLA_FLAGS": " ".join(xla)})
  assert proc.returncode == 0, proc.stderr[-4000:]
  rec = json.load(open(out / "gpu_suite.json"))
  st = rec["stages"]
  assert list(st) == ["mfu", "compile", "profile"]
  assert all(s["status"] == "ok" for s in st.values()), {k: s.get("error") for k, s in st.items()}
  m = st["mfu"]
  assert m["mfu"] is None and "not in" in m["mfu_reason"]
  for p in ("generator", "critic"):
    ph = m["speed"]["phases"][p]
    assert ph["step_s"] > 0 and ph["hlo_flops"] > 0 and ph["compiled_peak_bytes"] > 0
    assert ph["model_flops"] == pytest.approx(ph["hlo_flops"], rel=0.05)  # No remat in tiny.
  runs = st["compile"]["runs"]
  assert runs["cifar10"]["mode"] == "skipped"  # Reuse asked, versus_torch did not run.
  im = runs["imagenet64"]
  assert im["mode"] == "reuse" and im["warm"]["cache_files_added"] == 0, im
  assert set(im["warm"]["compile_s"]) == {"generator", "critic"}
  prof = st["profile"]["profile"]
  assert set(prof) == {"generator", "critic"} and all(p["top"] for p in prof.values())
  assert "| ImageNet-64 generator top op |" in proc.stdout and "written:" in proc.stdout
  assert "| imagenet64 compile gen/critic, cold → warm (reuse) |" in rec["table"]
