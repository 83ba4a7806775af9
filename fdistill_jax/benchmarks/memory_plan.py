"""Per-device memory of the train steps at pod scale, measured by the compiler (no execution).

  python -m fdistill_jax.benchmarks.memory_plan --config=configs/imagenet64_js.py \
      --devices=8,16,32,64 --batch=512 [--fsdp=8] [--tiny] [--out=benchmark_results/memory_plan]
  python -m fdistill_jax.benchmarks.memory_plan --config=configs/pixart512_js.py \
      --devices=64 --batch=256 --fsdp=8     # PixArt-α 512 (random prompts, N(0, 1) latents)

For every device count N a subprocess fakes N CPU devices (XLA_FLAGS=
--xla_force_host_platform_device_count=N must be set before jax starts), builds the experiment
with zero teacher weights (no init is run), lays the state out on the data×fsdp mesh of
engine/sharding.py (fsdp = --fsdp, data = N / fsdp) and lowers and compiles both train steps
exactly as loop.Run does. Two kinds of figure, labelled as such in the table:
* exact (derived, no compile; --nocompile gives only these, in seconds): the bytes one device
  holds of each state part — params and AdamW moments per net, EMA tracks, the frozen teacher,
  counters — and of the batch, from the leaves' shapes and their NamedShardings. "state fits"
  lists the slices (HBM per chip) that hold this state: a necessary condition for the step.
* measured (CPU compile): compiled.memory_analysis() per device: argument (= state + the batch
  inputs the step reads; jit drops unread ones), output, temp and aliased (donated) bytes, peak ≈
  argument + output + temp − alias, and the compile time. The temp bytes are XLA:CPU's buffer
  assignment, which keeps far more activations live than the GPU/TPU backends (CIFAR-10, 256
  images per device: 93 GiB here vs a 9 GiB peak measured on an H100) and computes in f32, so
  "CPU peak fits" is an overestimate of the need (a sufficient, not a necessary, condition).
With one fsdp size over several device counts (fixed global batch) the state per device is the
same and only the images per device change, so the table also gives the least-squares CPU temp
slope per image per device (derived from the measured rows).
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time

from absl import app, flags

from fdistill_jax import teachers
from fdistill_jax.benchmarks import engine_speed, versus_torch
from fdistill_jax.benchmarks.common import abstract_steps, parse_entry, shared_flag, shrink_pixart

_CONFIG, _TINY = shared_flag("config"), shared_flag("tiny")
_BATCH, _OUT = shared_flag("batch"), shared_flag("out")
_DEVICES = flags.DEFINE_list("devices", ["8", "16", "32", "64"], "Device counts.")
_FSDP = flags.DEFINE_integer("fsdp", 8, "Size of the fsdp mesh axis (capped at N).")
_COMPILE = flags.DEFINE_bool("compile", True, "Compile the steps (else only the exact state "
                              "bytes per device, from the shardings: seconds, not minutes).")
_PHASES = flags.DEFINE_list("phases", ["generator", "critic"],
                            "Train steps to compile (issue 13 sizes the generator step alone).")
_CHILD = flags.DEFINE_integer("child", 0, "Internal: measure in this process with N devices.")

HBM_GIB = {"TPU v5e": 16, "TPU v4": 32, "TPU v6e": 32, "TPU v5p": 95, "A100 40GB": 40,
           "A100 80GB": 80, "H100": 80, "H200": 141}


def per_device_bytes(state, state_sh, frozen, frozen_sh, batch, batch_sh) -> dict:
  """Exact bytes one device holds of each part, from the leaves' shapes and their shardings:
  params / opt (per trainable net), ema, frozen (teacher etc.), other state (step, counters,
  method extras), batch, and 'state' = all but the batch. Shards are even (sharding.py splits
  only divisible dims), so every device holds the same."""
  import jax

  def nbytes(tree, shardings) -> int:
    return int(sum(math.prod(sh.shard_shape(a.shape)) * a.dtype.itemsize for a, sh in
                   zip(jax.tree.leaves(tree), jax.tree.leaves(shardings))))

  out = {f"params/{k}": nbytes(v, state_sh["params"][k]) for k, v in state["params"].items()}
  out.update({f"opt/{k}": nbytes(v, state_sh["opt"][k]) for k, v in state["opt"].items()})
  out["ema"] = nbytes(state["ema"], state_sh["ema"])
  out["other"] = nbytes(state, state_sh) - sum(out.values())
  out["frozen"] = nbytes(frozen, frozen_sh)
  out["state"] = sum(out.values())
  out["batch"] = nbytes(batch, batch_sh)
  return out


def measure(cfg, n: int, fsdp: int, phases=("generator", "critic"),
            compile_steps: bool = True) -> dict:
  """Lowers and compiles the steps on the first n (fake) devices: memory_analysis per device
  (measured), the exact per-device bytes of every state part ('per_device', derived from the
  shardings, no compile needed) and the unsharded state size ('state_bytes')."""
  cfg.mesh.fsdp, cfg.mesh.data = fsdp, -1
  import jax  # pylint: disable=import-outside-toplevel
  built = abstract_steps(cfg, jax.devices()[:n], phases)
  abstract, state_sh, frozen, frozen_sh, spec, batch_sh = (
      built[k] for k in ("abstract", "state_sh", "frozen", "frozen_sh", "spec", "batch_sh"))
  args = built["args"]
  out = {"devices": n, "mesh": dict(built["mesh"].shape), "batch": cfg.train.batch_size,
         "phases": {},
         "state_bytes": int(sum(a.size * a.dtype.itemsize for a in jax.tree.leaves(abstract))),
         "per_device": per_device_bytes(abstract, state_sh, frozen, frozen_sh, spec, batch_sh)}
  if not compile_steps:
    return out
  for phase, fn in built["steps"].items():
    t0 = time.time()
    compiled = fn.lower(*args).compile()
    ma = compiled.memory_analysis()
    rec = {k: int(getattr(ma, f"{k}_size_in_bytes")) for k in ("argument", "output", "temp",
                                                                 "alias")}
    rec["peak"] = rec["argument"] + rec["output"] + rec["temp"] - rec["alias"]
    rec["compile_s"] = time.time() - t0
    out["phases"][phase] = rec
  out["peak_gib"] = max(p["peak"] for p in out["phases"].values()) / 2 ** 30
  return out


def _config():
  name, path, over = parse_entry(_CONFIG.value)
  cfg = engine_speed.synthetic_config(path, over, _BATCH.value)
  if _TINY.value:
    (shrink_pixart if teachers.of(cfg).text_to_image else versus_torch.shrink)(cfg)
  cfg.eval.num_samples = 8
  return name, cfg


def fits(gib: float) -> str:
  return ", ".join(k for k, v in HBM_GIB.items() if gib <= v) or "none"


def activation_slope(recs: list, phase: str):
  """(intercept, bytes per sample) of the least-squares line temp = a + s·b over the records'
  per-device batches b, when the state per device is the same in all of them (same fsdp) and
  there are at least two distinct b; else None. Derived from CPU temp bytes."""
  pts = [(r["batch"] / r["devices"], r["phases"][phase]["temp"]) for r in recs
         if phase in r["phases"]]
  states = {r["per_device"]["state"] for r in recs if phase in r["phases"]}
  if len({b for b, _ in pts}) < 2 or len(states) != 1:
    return None
  mb = sum(b for b, _ in pts) / len(pts)
  mt = sum(t for _, t in pts) / len(pts)
  s = sum((b - mb) * (t - mt) for b, t in pts) / sum((b - mb) ** 2 for b, _ in pts)
  return mt - s * mb, s


def table(name: str, recs: list) -> str:
  """Markdown: per device count and phase, the exact state (derived from the shardings) and the
  compiled memory analysis (measured on the CPU backend), and the slices each verdict allows."""
  g = lambda b: f"{b / 2 ** 30:.2f}"
  batches = sorted({r["batch"] for r in recs})
  rows = [f"{name}, global batch {', '.join(map(str, batches)) or '?'}", "",
          "| global batch | devices | mesh data×fsdp | batch/device | phase | state GiB (exact) | "
          "argument GiB | output GiB | alias GiB | temp GiB (CPU) | peak GiB (CPU) | compile s | "
          "state fits | CPU peak fits |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
  for r in recs:
    st = r["per_device"]["state"]
    for phase, p in r["phases"].items() or {"(not compiled)": None}.items():
      cells = ([g(p[k]) for k in ("argument", "output", "alias", "temp", "peak")]
               + [f"{p['compile_s']:.0f}"] if p else ["–"] * 6)
      rows.append(f"| {r['batch']} | {r['devices']} | {r['mesh']['data']}×{r['mesh']['fsdp']} | "
                  f"{r['batch'] // r['devices']} | {phase} | {g(st)} | " + " | ".join(cells)
                  + f" | {fits(st / 2 ** 30)} | {fits(p['peak'] / 2 ** 30) if p else '–'} |")
  parts = recs[0]["per_device"] if recs else {}
  rows += ["", "State per device (exact, GiB): " + ", ".join(
      f"{k} {g(v)}" for k, v in parts.items() if k not in ("state", "batch")) + (
          f"; batch {g(parts['batch'])}" if parts else "")]
  for phase in ("generator", "critic"):
    fit = activation_slope(recs, phase)
    if fit:
      rows.append(f"{phase}: CPU temp ≈ {g(fit[0])} GiB + {fit[1] / 2 ** 20:.1f} MiB × "
                  "(images per device) (least squares over the rows; CPU buffer assignment)")
  return "\n".join(rows)


def main(argv):
  del argv
  if _CHILD.value:
    _, cfg = _config()
    print("MEMORY_PLAN " + json.dumps(measure(cfg, _CHILD.value, min(_FSDP.value, _CHILD.value),
                                               phases=tuple(_PHASES.value),
                                               compile_steps=_COMPILE.value)),
          flush=True)
    return
  name, _ = _config()
  recs = []
  os.makedirs(_OUT.value, exist_ok=True)
  for n in map(int, _DEVICES.value):
    env = dict(os.environ, JAX_PLATFORMS="cpu",
               XLA_FLAGS=f"{os.environ.get('XLA_FLAGS', '')} "
                         f"--xla_force_host_platform_device_count={n}".strip())
    cmd = [sys.executable, "-m", "fdistill_jax.benchmarks.memory_plan", f"--child={n}",
           f"--config={_CONFIG.value}", f"--batch={_BATCH.value}", f"--fsdp={_FSDP.value}",
           f"--tiny={_TINY.value}", f"--compile={_COMPILE.value}",
           f"--phases={','.join(_PHASES.value)}"]
    t0 = time.time()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    line = [l for l in proc.stdout.splitlines() if l.startswith("MEMORY_PLAN ")]
    if proc.returncode or not line:
      raise RuntimeError(f"memory_plan for {n} devices failed:\n{proc.stderr[-3000:]}")
    rec = json.loads(line[0][len("MEMORY_PLAN "):])
    rec["wall_s"] = time.time() - t0
    recs.append(rec)
    print(f"{n} devices: state {rec['per_device']['state'] / 2 ** 30:.2f} GiB/device, peak "
          f"{rec.get('peak_gib', float('nan')):.2f} GiB/device (CPU), {rec['wall_s']:.0f} s",
          flush=True)
    # One file per invocation (config, batch, device counts): parallel runs do not clobber.
    tag = f"{name}_b{_BATCH.value}_n{'-'.join(_DEVICES.value)}"
    with open(os.path.join(_OUT.value, f"memory_plan_{tag}.json"), "w") as f:
      json.dump(recs, f, indent=1)
  print(table(name, recs))


if __name__ == "__main__":
  flags.FLAGS.set_default("config", "configs/imagenet64_js.py")
  flags.FLAGS.set_default("batch", 512)
  flags.FLAGS.set_default("out", "benchmark_results/memory_plan")
  app.run(main)
