"""Digits benchmark: one-step students of every method vs. the packaged teacher, same protocol.

  python -m fdistill_jax.benchmarks.digits [--divergences=js,kl,rkl]
      [--configs=configs/digits_sid.py,configs/digits_dmd2.py@train.steps=1500,...]
      [--steps=600] [--seed=0] [--out=benchmark_results/digits] [--notensorboard]

f-distill entries run configs/digits_js.py with each divergence; --configs adds any digits config
file, optionally with overrides after '@' (';'-separated dotted keys, Python literals). Every
run uses the same seed, batch and evaluation: the digits metric (Fréchet distance of the digits
classifier's features over 500 samples, class coverage, confidence) of the student's 0.99-EMA,
and the teacher at 1, 2, 4 and 35 NFE. Progressive distillation runs all its rounds and reports
the final 1-step student. Prints a markdown table and writes <out>/digits.json.
"""
from __future__ import annotations

import ast
import json
import os
import shutil
import time

from absl import app, flags, logging

_DIVS = flags.DEFINE_list("divergences", ["js", "kl", "rkl"], "f-distill divergences to run.")
_CONFIGS = flags.DEFINE_list("configs", [], "Extra config files, each optionally 'path@k=v;k=v'.")
_STEPS = flags.DEFINE_integer("steps", None, "Override train.steps of every run.")
_SEED = flags.DEFINE_integer("seed", 0, "config.seed of every run.")
_OUT = flags.DEFINE_string("out", "benchmark_results/digits", "Output folder.")
_TB = flags.DEFINE_bool("tensorboard", True, "Write TensorBoard events (needs TensorFlow).")

_REPO = os.path.join(os.path.dirname(__file__), "..", "..")


def load_config(path: str):
  import importlib.util
  spec = importlib.util.spec_from_file_location("bench_cfg", os.path.abspath(path))
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod.get_config()


def parse_entry(entry: str) -> tuple[str, str, dict]:
  """'configs/x.py@a.b=1;c=d' -> (name 'x[a.b=1;c=d]', path, {'a.b': 1, 'c': 'd'})."""
  path, _, over = entry.partition("@")
  overrides = {}
  for item in filter(None, over.split(";")):
    k, _, v = item.partition("=")
    try:
      overrides[k] = ast.literal_eval(v)
    except (ValueError, SyntaxError):
      overrides[k] = v
  name = os.path.splitext(os.path.basename(path))[0] + (f"[{over}]" if over else "")
  return name, path, overrides


def set_key(cfg, dotted: str, value) -> None:
  node = cfg
  *parents, last = dotted.split(".")
  for p in parents:
    node = node[p]
  node[last] = value


def run_one(cfg, workdir: str) -> dict:
  """Trains (all rounds for progressive distillation) and returns the final metrics."""
  from fdistill_jax import config_checks
  from fdistill_jax.engine import loop
  config_checks.check(cfg)
  shutil.rmtree(workdir, ignore_errors=True)
  t0 = time.time()
  if cfg.method.name == "progressive":
    from fdistill_jax.methods import progressive
    rounds = progressive.run_rounds(cfg, workdir)
    out = dict(rounds[-1]["metrics"])
    out["rounds"] = [{"steps": r["steps"], "student": r["metrics"]["student"]} for r in rounds]
    out["train_steps"] = cfg.train.steps * len(rounds)
  else:
    out = loop.train(cfg, workdir)
    out["train_steps"] = cfg.train.steps
  out["wall_s"] = time.time() - t0
  crit = int(cfg.method.get("critic_steps", 0) or 0)
  has_critic = cfg.method.name not in ("kd", "progressive")
  out["generator_updates"] = (out["train_steps"] // (crit + 1) if has_critic and crit
                              else out["train_steps"])
  return out


def _row(name, m, extra=""):
  return (f"| {name} | {m['fd']:.1f} | {m['class_coverage']:.2f} | {m['mean_confidence']:.3f} | "
          f"{m['class_histogram_tv']:.3f} | {extra} |")


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  os.makedirs(_OUT.value, exist_ok=True)
  js = os.path.join(_REPO, "configs", "digits_js.py")
  entries = [(f"f-distill {d}", js, {"method.divergence": d}) for d in _DIVS.value]
  entries += [parse_entry(e) for e in _CONFIGS.value]
  results = {}
  for name, path, over in entries:
    cfg = load_config(path)
    for k, v in over.items():
      set_key(cfg, k, v)
    cfg.seed = _SEED.value
    cfg.train.tensorboard = _TB.value
    if _STEPS.value:
      cfg.train.steps = _STEPS.value
    safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in name)
    out = run_one(cfg, os.path.join(_OUT.value, "runs", safe))
    out["teacher_checkpoint"] = os.path.basename(cfg.teacher.checkpoint)
    out["method"] = cfg.method.name
    results[name] = out
    print(f"{name}: FD {out['student']['fd']:.2f}  ({out['wall_s']:.0f} s)", flush=True)
    with open(os.path.join(_OUT.value, "digits.json"), "w") as f:
      json.dump(results, f, indent=1)
  print("\n| sampler | FD ↓ | class coverage | confidence | class-hist TV | "
        "iterations / generator updates / wall |")
  print("|---|---|---|---|---|---|")
  seen = set()
  for out in results.values():
    if out["teacher_checkpoint"] in seen:
      continue
    seen.add(out["teacher_checkpoint"])
    for k, v in out.items():
      if k.startswith("teacher_nfe"):
        print(_row(f"teacher {out['teacher_checkpoint']}, {k[len('teacher_nfe'):]} NFE", v))
  for name, out in results.items():
    print(_row(f"one-step {name}", out["student"],
               f"{out['train_steps']} / {out['generator_updates']} / {out['wall_s']:.0f} s"))


if __name__ == "__main__":
  app.run(main)
