"""Engine speed on full-size configs: compile time, step time, images/s, FLOP rate, memory.

  python -m fdistill_jax.benchmarks.engine_speed \
      --configs=configs/imagenet64_js.py,configs/imagenet64_sid.py@teacher.dtype='float32' \
      [--batch=64] [--steps=10] [--numerics] [--profile=DIR] [--out=benchmark_results/engine_speed]

Each config runs on random teacher weights and synthetic data (`dataset.name=synthetic`: the
numbers are those of the architecture and the method, not of an input pipeline), with
train.batch_size = --batch (global) unless 0. For every phase (generator, critic) it reports the
compile time, the median of --steps timed steps after 2 warm-ups (wall clock around
block_until_ready), the HLO FLOP count of the lowered step (it includes remat recomputation,
so FLOP rate / peak is hardware-FLOP utilisation, an upper bound on MFU), the FLOP rate, and the
device's peak memory (this process's, when several share a device). The iteration rate follows
the method's schedule: (1 generator step + critic_steps critic steps) / (critic_steps + 1).
--numerics also compares each config's teacher network in bfloat16 and in float32 (default
matmul precision) against float32 at 'highest' precision on the same inputs. --profile=DIR then
traces --profile_steps more steps of each phase with jax.profiler into DIR/<config>/<phase> and
reports its top --profile_top HLO ops by time (benchmarks/profile_steps.py). Prints markdown
tables and writes <out>/engine_speed.json.
"""
from __future__ import annotations

import fcntl
import json
import os
import tempfile
import time

import numpy as np
from absl import app, flags, logging

from fdistill_jax.benchmarks.common import (folder_name, load_config, parse_entry, peak_bf16,
                                            set_key, shared_flag, split_entries)

_CONFIGS = flags.DEFINE_string(
    "configs", "configs/imagenet64_js.py,configs/imagenet64_sid.py,configs/imagenet64_dmd2.py,"
    "configs/cifar10_kl.py,configs/cifar10_sid.py",
    "Config files, comma-separated, each optionally 'path@k=v;k=v'.")
_BATCH, _STEPS, _OUT = shared_flag("batch"), shared_flag("steps"), shared_flag("out")
_NUMERICS = flags.DEFINE_bool("numerics", False, "Also compare bf16/f32 teacher outputs.")
_LOCK = flags.DEFINE_string("timing_lock", None, "A file to flock around the timed steps, so that "
                            "several processes can compile concurrently but time alone.")
_PROFILE = shared_flag("profile")
_PROFILE_STEPS, _PROFILE_TOP = shared_flag("profile_steps"), shared_flag("profile_top")

def peak_tflops(kind: str) -> float | None:
  """Dense bf16 peak of a device kind (benchmarks/common.py PEAK_BF16, with its sources)."""
  return peak_bf16(kind)["tflops"]


def matmul_ceiling_tflops(n: int = 8192, reps: int = 10) -> float:
  """Measured bf16 matmul rate of device 0 on random n×n×n products (median of reps)."""
  import jax
  import jax.numpy as jnp
  ka, kb = jax.random.split(jax.random.PRNGKey(0))
  a = jax.random.normal(ka, (n, n), jnp.bfloat16)
  b = jax.random.normal(kb, (n, n), jnp.bfloat16)
  f = jax.jit(lambda x, y: x @ y)
  f(a, b).block_until_ready()
  ts = []
  for _ in range(reps):
    t0 = time.perf_counter()
    f(a, b).block_until_ready()
    ts.append(time.perf_counter() - t0)
  return 2 * n ** 3 / float(np.median(ts)) / 1e12


def _flops(lowered) -> float | None:
  """FLOPs of the step's HLO before XLA's optimisations (the compiled executable's count misses
  convolutions that the GPU backend turns into cuDNN calls: on an H100 it counted 1.1 of the
  63.6 TFLOP of a batch-256 CIFAR-10 f-distill generator step)."""
  cost = lowered.cost_analysis()
  if isinstance(cost, (list, tuple)):
    cost = cost[0] if cost else {}
  return float(cost["flops"]) if cost and "flops" in cost else None


def speed(cfg, workdir: str, steps: int, profile_dir: str | None = None,
          profile_steps: int = 3, profile_top: int = 10, devices=None) -> dict:
  """Builds and compiles the run (on `devices`, default all), times each phase and, with
  profile_dir, profiles it; the record of the module docstring."""
  import jax
  from fdistill_jax import compose
  t0 = time.time()
  run = compose.Run(cfg, workdir, devices=devices, restore=False)
  out = {"build_and_compile_s": time.time() - t0, "phases": {}}
  batch = run.global_batch(0)
  lock = open(_LOCK.value, "a") if _LOCK.value else None
  if lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
  try:
    _time_phases(run, batch, steps, out)
    if profile_dir:  # After the timed steps, which are its warm-up.
      from fdistill_jax.benchmarks import profile_steps as prof
      out["profile"] = prof.profile(run, batch, profile_dir, profile_steps, profile_top, 0)
  finally:
    if lock:
      fcntl.flock(lock, fcntl.LOCK_UN)
      lock.close()
  crit = int(cfg.method.get("critic_steps", 0) or 0) if "critic" in run.compiled else 0
  p = out["phases"]
  it_s = (p["generator"]["step_s"] + crit * p["critic"]["step_s"] if crit else
          p["generator"]["step_s"]) / (crit + 1)
  out.update(iteration_s=it_s, iterations_per_s=1 / it_s,
             images_per_s=cfg.train.batch_size / it_s, critic_steps=crit,
             batch=cfg.train.batch_size, devices=run.mesh.size)
  stats = jax.local_devices()[0].memory_stats() or {}
  out["peak_gib_device0"] = stats.get("peak_bytes_in_use", 0) / 2 ** 30
  return out


def _time_phases(run, batch, steps: int, out: dict) -> None:
  import jax
  for phase, fn in run.compiled.items():
    times = []
    for i in range(2 + steps):
      t1 = time.perf_counter()
      run.state, m = fn(run.state, run.frozen, batch)
      jax.block_until_ready((run.state, m))
      if i >= 2:
        times.append(time.perf_counter() - t1)
    sec = float(np.median(times))
    flops = _flops(run.lowered[phase])
    out["phases"][phase] = {"compile_s": run.compile_times[phase], "step_s": sec,
                            "step_s_min": float(np.min(times)), "hlo_flops": flops,
                            "tflops_per_s": flops / sec / 1e12 if flops else None,
                            "compiled_peak_bytes": compiled_peak_bytes(fn)}


def compiled_peak_bytes(compiled) -> int | None:
  """Per-device bytes the compiled step needs by XLA's buffer assignment (memory_analysis:
  argument + output + temp − donated alias), as memory_plan reports it; None if unavailable."""
  try:
    ma = compiled.memory_analysis()
    return int(ma.argument_size_in_bytes + ma.output_size_in_bytes + ma.temp_size_in_bytes
               - ma.alias_size_in_bytes)
  except Exception:  # pylint: disable=broad-except  (backends without the analysis)
    return None


def numerics(cfg, batch: int = 16) -> dict:
  """Relative L2 error of the teacher's D(x; σ) in bf16 and in f32 (default precision) against
  f32 at 'highest' precision, same random weights and inputs, σ over the EDM range."""
  import jax
  import jax.numpy as jnp
  from fdistill_jax.models.edm import build_edm_precond
  kwargs = cfg.teacher.precond_kwargs.to_dict()
  f32 = build_edm_precond(kwargs, dtype=jnp.float32)
  bf16 = build_edm_precond(kwargs, dtype=jnp.bfloat16)
  res, ch, ld = f32.img_resolution, f32.img_channels, f32.label_dim
  k = jax.random.split(jax.random.key(0, impl="rbg"), 4)
  labels = jax.nn.one_hot(jax.random.randint(k[1], (batch,), 0, max(ld, 1)), ld) if ld else None
  params = jax.jit(f32.init)(k[0], jnp.zeros((1, res, res, ch)), jnp.ones((1,)),
                             None if labels is None else labels[:1])
  # EDM zero-initialises output layers (F ≡ 0, D = c_skip·x at init, which any precision gets
  # right): give every weight a random component so that the network's output is not trivial.
  leaves, tree = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.key(1, impl="rbg"), len(leaves))
  params = jax.tree.unflatten(tree, [
      p + (0.02 if p.ndim < 2 else 1.0 / np.sqrt(np.prod(p.shape[:-1])))
      * jax.random.normal(kk, p.shape, p.dtype) for p, kk in zip(leaves, keys)])
  y = jax.random.uniform(k[2], (batch, res, res, ch), minval=-1.0, maxval=1.0)
  out = {}
  for sigma in (0.02, 0.5, 2.0, 20.0, 80.0):
    s = jnp.full((batch,), sigma)
    x = y + sigma * jax.random.normal(k[3], y.shape)
    run = lambda m: jax.jit(lambda p, x: m.apply(p, x, s, labels))(params, x).astype(jnp.float32)
    with jax.default_matmul_precision("highest"):
      ref = run(f32)
    rel = lambda a: float(jnp.linalg.norm(a - ref) / jnp.linalg.norm(ref))
    out[f"sigma_{sigma:g}"] = {"f32_default_vs_highest": rel(run(f32)),
                               "bf16_vs_f32_highest": rel(run(bf16))}
  return out


def synthetic_config(path: str, overrides: dict, batch: int = 0):
  """The config file's experiment on random teacher weights and synthetic data, global batch
  `batch` (0 keeps the config's), no checkpoints to keep or metrics to compute; then overrides."""
  cfg = load_config(path)
  cfg.teacher.checkpoint = ""
  cfg.dataset.name = "synthetic"
  cfg.train.tensorboard = False
  cfg.train.async_checkpoints = False
  cfg.eval.metric = "none"
  if batch:
    cfg.train.batch_size = batch
  for k, v in overrides.items():
    set_key(cfg, k, v)
  return cfg


def main(argv):
  del argv
  import jax
  logging.set_verbosity(logging.WARNING)
  os.makedirs(_OUT.value, exist_ok=True)
  dev = jax.devices()[0]
  peak = peak_tflops(dev.device_kind)
  ceiling = matmul_ceiling_tflops() if dev.platform == "gpu" else None
  results = {"device": dev.device_kind, "device_count": jax.device_count(),
             "jax": jax.__version__, "peak_bf16_tflops": peak,
             "measured_bf16_matmul_tflops": ceiling, "runs": {}}
  for entry in split_entries(_CONFIGS.value):
    name, path, over = parse_entry(entry)
    cfg = synthetic_config(path, over, _BATCH.value)
    trace = _PROFILE.value and os.path.join(_PROFILE.value, folder_name(name))
    with tempfile.TemporaryDirectory() as wd:
      rec = speed(cfg, wd, _STEPS.value, trace, _PROFILE_STEPS.value, _PROFILE_TOP.value)
    rec["method"], rec["dtype"] = cfg.method.name, cfg.teacher.dtype
    rec["remat"] = bool(cfg.teacher.get("remat", False))
    if _NUMERICS.value:
      rec["numerics"] = numerics(cfg)
    results["runs"][name] = rec
    print(f"{name}: {rec['iterations_per_s']:.2f} it/s, {rec['images_per_s']:.0f} img/s", flush=True)
    with open(os.path.join(_OUT.value, "engine_speed.json"), "w") as f:
      json.dump(results, f, indent=1)
  print(f"\ndevice: {results['device']} ×{results['device_count']}, jax {results['jax']}, "
        f"peak bf16 {peak} TFLOP/s, measured bf16 matmul {ceiling and round(ceiling)} TFLOP/s")
  print("| config | method | dtype | batch | gen step ms | critic step ms | it/s | images/s | "
        "gen TFLOP/s (HFU) | critic TFLOP/s (HFU) | compile s (gen/critic) | peak GiB |")
  print("|---|---|---|---|---|---|---|---|---|---|---|---|")
  for name, r in results["runs"].items():
    g, c = r["phases"]["generator"], r["phases"].get("critic")
    hfu = lambda ph: (f"{ph['tflops_per_s']:.0f} ({ph['tflops_per_s'] / peak:.0%})"
                      if ph and ph["tflops_per_s"] and peak else "–")
    print(f"| {name} | {r['method']} | {r['dtype']} | {r['batch']} | {g['step_s'] * 1e3:.1f} | "
          f"{c['step_s'] * 1e3:.1f} | " if c else f"| {name} | {r['method']} | {r['dtype']} | "
          f"{r['batch']} | {g['step_s'] * 1e3:.1f} | – | ", end="")
    print(f"{r['iterations_per_s']:.2f} | {r['images_per_s']:.0f} | {hfu(g)} | {hfu(c)} | "
          f"{g['compile_s']:.0f}/{c['compile_s'] if c else 0:.0f} | {r['peak_gib_device0']:.1f} |")
  if _NUMERICS.value:
    print("\n| config | σ | f32 default vs highest (rel L2) | bf16 vs f32 highest (rel L2) |")
    print("|---|---|---|---|")
    for name, r in results["runs"].items():
      for s, v in r["numerics"].items():
        print(f"| {name} | {s[6:]} | {v['f32_default_vs_highest']:.2e} | "
              f"{v['bf16_vs_f32_highest']:.2e} |")
  if _PROFILE.value:
    from fdistill_jax.benchmarks import profile_steps as prof
    for name, r in results["runs"].items():
      print(f"\n### {name}: top HLO ops by self time (traced steps)" + prof.table(r["profile"]))


if __name__ == "__main__":
  app.run(main)
