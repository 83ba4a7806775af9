"""Where the engine's compiled steps spend their time: the top HLO ops of a jax.profiler trace.

  python -m fdistill_jax.benchmarks.profile_steps --config=configs/cifar10_kl.py [--tiny] \
      [--batch=8] [--steps=3] [--profile=DIR] [--profile_steps=3] [--profile_top=10] \
      [--out=benchmark_results/profile_steps]
  python -m fdistill_jax.benchmarks.engine_speed --configs=... --profile=DIR   (the same per config)

The config runs as in engine_speed (random teacher weights, synthetic data, --config and --tiny as
in versus_torch): engine_speed times each phase first (its warm-ups included), then each phase's
compiled step -- the executable loop.Run compiled, called as the loop calls it, state donated --
runs --profile_steps times inside `jax.profiler.trace(DIR/<phase>)`. The written XSpace is read
back with jax.profiler.ProfileData, and every event that XLA tagged with an HLO op of that step's
module is summed per op as self time (a while loop's own time excludes its body's ops, which are
counted themselves), per step, with its share of the traced steps' wall time (block_until_ready
to block_until_ready). The category (fusion kind and the main op inside it, custom-call target,
or opcode) and the source (the JAX op_name in the op's metadata) come from the compiled HLO module;
the ops' shares are also summed per category. Prints a markdown table per phase and writes
<out>/profile_steps.json (engine_speed: the same record under each run's "profile").

Where the per-op events are (jax 0.10.2's raw XSpace, no xprof post-processing):
* GPU: XLA's CUPTI collector writes one plane per device, '/device:GPU:<i>', one line per CUDA
  stream; every kernel and memcpy carries the annotation of the thunk that launched it as the
  stats 'hlo_op' and 'hlo_module': device time. While a profiler is active XLA runs command
  buffers (CUDA graphs) thunk by thunk (xla_enable_command_buffers_during_profiling is off), so
  each kernel keeps its op, and a traced step can be slower than an untraced one.
* CPU: no device plane; XLA:CPU's thunk executor records one host event per thunk on '/host:CPU',
  on the lines of the threads that run it ('tf_XLAPjRtCpuClient/…', 'tf_XLAEigen/…'), with the
  same stats plus 'device_ordinal'; a while loop's event encloses its body's events on its line.
Op times are those of the backend that ran them: CPU times say nothing about a GPU's.
"""
from __future__ import annotations

import collections
import glob
import json
import os
import re
import tempfile
import time

from absl import app, flags, logging

from fdistill_jax.benchmarks.common import parse_entry, set_key, shared_flag

_CONFIG, _TINY = shared_flag("config"), shared_flag("tiny")
_BATCH, _STEPS, _OUT = shared_flag("batch"), shared_flag("steps"), shared_flag("out")
_PROFILE = shared_flag("profile")
_PROFILE_STEPS, _PROFILE_TOP = shared_flag("profile_steps"), shared_flag("profile_top")
_FUSED_MAIN = ("convolution", "dot", "scatter", "gather", "reduce-window", "reduce", "sort")


def _opcode(inst) -> str:
  """HloOpcode.kCustomCall -> 'custom-call', the name HLO text uses."""
  name = str(inst.opcode).rsplit(".", 1)[-1][1:]
  return re.sub(r"(?<!^)(?=[A-Z])", "-", name).lower()


def hlo_ops(compiled) -> tuple[str, dict[str, dict]]:
  """(module name, {instruction name: {'category', 'source'}}) of a compiled step's HLO module."""
  module = compiled.runtime_executable().hlo_modules()[0]
  comps = {c.name: c for c in module.computations()}
  ops = {}
  for comp in comps.values():
    for inst in comp.instructions():
      text, code = inst.to_string(), _opcode(inst)
      if code == "fusion":
        called = re.search(r"calls=%?([\w.\-]+)", text)
        inner = {_opcode(i) for i in comps[called.group(1)].instructions()} if called else set()
        main = next((o for o in _FUSED_MAIN if o in inner), "elementwise")
        kind = re.search(r"kind=k(\w+)", text)
        custom = re.search(r'"kind":"(__[\w$]+)"', text)  # e.g. GPU __triton_gemm, __cudnn$fusion
        code = " ".join(filter(None, [kind and kind.group(1).lower(), custom and custom.group(1),
                                      f"fusion ({main})"]))
      elif code == "convolution":  # Grouped (depthwise), strided, dilated: XLA:CPU's slow paths.
        attrs = re.findall(r"\b(feature_group_count|batch_group_count)=(\d+)|"
                           r"\b(size|stride|lhs_dilate|rhs_dilate)=([\dx]+)", text)
        attrs = [f"{a or c}={b or d}" for a, b, c, d in attrs]
        code += f" ({', '.join(attrs)})" if attrs else ""
      elif code == "custom-call":
        target = re.search(r'custom_call_target="([^"]+)"', text)
        code = f"custom-call {target.group(1)}" if target else code
      source = re.search(r'op_name="([^"]*)"', text)
      ops[inst.name] = {"category": code, "source": source.group(1) if source else ""}
  return module.name, ops


def _self_times(events) -> list[float]:
  """Self time of each (start, end) interval of one timeline line, sorted by start: its duration
  less that of the intervals nested directly inside it (a while loop's body, a call)."""
  self_ns, stack = [e - s for s, e in events], []
  for i, (s, e) in enumerate(events):
    while stack and events[stack[-1]][1] <= s:
      stack.pop()
    if stack:
      self_ns[stack[-1]] -= e - s
    stack.append(i)
  return self_ns


def op_times(profile, module: str) -> tuple[str, dict[str, list[float]]]:
  """(plane name, {hlo_op: [self ns, events]}) of the events tagged with `module`'s ops: on the
  first device plane that has any (GPU), else on the host plane (CPU, device_ordinal 0 only)."""
  planes = sorted((p for p in profile.planes if p.name.startswith("/device:")),
                  key=lambda p: p.name) + [p for p in profile.planes if p.name == "/host:CPU"]
  for plane in planes:
    totals = collections.defaultdict(lambda: [0.0, 0])
    for line in plane.lines:
      tagged = []
      for ev in line.events:
        stats = dict(ev.stats)
        if stats.get("hlo_module") == module and "hlo_op" in stats and int(
            stats.get("device_ordinal", 0)) == 0:
          tagged.append((ev.start_ns, ev.start_ns + ev.duration_ns, str(stats["hlo_op"])))
      tagged.sort()
      for (_, _, op), ns in zip(tagged, _self_times([t[:2] for t in tagged])):
        totals[op][0] += ns
        totals[op][1] += 1
    if totals:
      return plane.name, dict(totals)
  return "", {}


def _step(run, phase: str, batch) -> None:
  """One call of the phase's compiled step as the loop makes it (state donated), to completion."""
  import jax
  run.state, metrics = run.compiled[phase](run.state, run.frozen, batch)
  jax.block_until_ready((run.state, metrics))


def trace_phase(run, batch, phase: str, trace_dir: str, steps: int) -> tuple[str, list[float]]:
  """Runs `steps` steps of the phase's compiled step under jax.profiler.trace(trace_dir);
  returns (the written .xplane.pb, each step's wall seconds)."""
  import jax
  times = []
  with jax.profiler.trace(trace_dir):
    for _ in range(steps):
      t0 = time.perf_counter()
      _step(run, phase, batch)
      times.append(time.perf_counter() - t0)
  files = glob.glob(os.path.join(trace_dir, "**", "*.xplane.pb"), recursive=True)
  if not files:
    raise FileNotFoundError(f"jax.profiler.trace wrote no *.xplane.pb under {trace_dir}")
  return max(files, key=os.path.getmtime), times


def profile(run, batch, trace_dir: str, steps: int = 3, top: int = 10, warmup: int = 1) -> dict:
  """{phase: record} for each compiled phase of a loop.Run: `warmup` untraced steps, `steps`
  traced ones, then the top `top` ops by self time and the top `top` categories (summed over
  all the step's ops)."""
  import jax
  from jax.profiler import ProfileData
  out = {}
  for phase, fn in run.compiled.items():
    for _ in range(warmup):
      _step(run, phase, batch)
    path, times = trace_phase(run, batch, phase, os.path.join(trace_dir, phase), steps)
    module, ops = hlo_ops(fn)
    plane, totals = op_times(ProfileData.from_file(path), module)
    if not totals:
      raise ValueError(f"{path}: no event tagged hlo_module={module} with an hlo_op on a "
                       "'/device:*' or '/host:CPU' plane")
    wall_ns = sum(times) * 1e9
    rows = [{"op": op, "category": ops.get(op, {}).get("category", "?"),
             "source": ops.get(op, {}).get("source", ""), "ms_per_step": ns / steps / 1e6,
             "share": ns / wall_ns, "events_per_step": n / steps}
            for op, (ns, n) in sorted(totals.items(), key=lambda kv: -kv[1][0])]
    cats = collections.defaultdict(lambda: [0.0, 0])
    for r in rows:
      cats[r["category"]][0] += r["share"]
      cats[r["category"]][1] += 1
    out[phase] = {"trace": path, "plane": plane, "module": module, "steps": steps,
                  "step_ms": [t * 1e3 for t in times], "ops_timed": len(rows),
                  "op_time_share": sum(r["share"] for r in rows), "top": rows[:top],
                  "by_category": [{"category": c, "share": v, "ops": n} for c, (v, n) in
                                  sorted(cats.items(), key=lambda kv: -kv[1][0])][:top]}
  return out


def _short(source: str, n: int = 60) -> str:
  source = re.sub(r"^jit\([^)]*\)/", "", source)
  return source if len(source) <= n else "…" + source[-n + 1:]


def table(prof: dict) -> str:
  """Markdown: one table per phase, top ops by self time."""
  lines = []
  for phase, p in prof.items():
    step = sum(p["step_ms"]) / len(p["step_ms"])
    lines += [f"\n{phase} step ({p['plane']}): {step:.1f} ms per traced step, {p['ops_timed']} "
              f"ops timed, their self times sum to {p['op_time_share']:.0%} of it\n",
              "| # | HLO op | category | ms/step | share of step | events/step | "
              "source (JAX op_name) |",
              "|---|---|---|---|---|---|---|"]
    lines += [f"| {i} | `{r['op']}` | {r['category']} | {r['ms_per_step']:.3f} | "
              f"{r['share']:.1%} | {r['events_per_step']:g} | {_short(r['source'])} |"
              for i, r in enumerate(p["top"], 1)]
    lines.append("\nby category (share of step, ops): " + "; ".join(
        f"{c['category']} {c['share']:.0%} ({c['ops']})" for c in p["by_category"][:6]))
  return "\n".join(lines)


def main(argv):
  del argv
  import jax
  # Their functions (engine_speed imports this module for --profile: imported here, not above).
  from fdistill_jax.benchmarks import engine_speed as es, versus_torch as vt
  logging.set_verbosity(logging.WARNING)
  name, path, over = parse_entry(_CONFIG.value)
  cfg = es.synthetic_config(path, {}, _BATCH.value)
  if _TINY.value:
    vt.shrink(cfg)
  for k, v in over.items():
    set_key(cfg, k, v)
  cfg.eval.num_samples = min(cfg.eval.num_samples, cfg.train.batch_size)
  out = _OUT.value
  with tempfile.TemporaryDirectory() as wd:
    rec = es.speed(cfg, wd, _STEPS.value, _PROFILE.value or os.path.join(out, "trace"),
                   _PROFILE_STEPS.value, _PROFILE_TOP.value)
  rec.update(config=name + (" (tiny)" if _TINY.value else ""),
             device=jax.devices()[0].device_kind, jax=jax.__version__,
             date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()))
  os.makedirs(out, exist_ok=True)
  with open(os.path.join(out, "profile_steps.json"), "w") as f:
    json.dump(rec, f, indent=1)
  print(f"\n{rec['config']}, batch {rec['batch']}, {rec['device']}, jax {rec['jax']}: "
        f"{rec['iterations_per_s']:.2f} it/s untraced" + table(rec["profile"]))


if __name__ == "__main__":
  flags.FLAGS.set_default("out", "benchmark_results/profile_steps")
  app.run(main)
