"""Digits benchmark: the one-step student of each divergence vs. the packaged teacher.

  python -m fdistill_jax.benchmarks.digits [--divergences=js,kl,rkl] [--steps=600]
      [--out=benchmark_results/digits]

Runs configs/digits_js.py with each divergence (same seed, same steps), and reports the digits
metric (Fréchet distance of the digits classifier's features over 500 samples, class coverage,
confidence) of the student's 0.99-EMA against the teacher at 1, 2, 4 and 35 NFE, with wall
time and steps/s. Prints a markdown table and writes <out>/digits.json.
"""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import time

from absl import app, flags, logging

_DIVS = flags.DEFINE_list("divergences", ["js", "kl", "rkl"], "Divergences to run.")
_STEPS = flags.DEFINE_integer("steps", None, "Override train.steps.")
_OUT = flags.DEFINE_string("out", "benchmark_results/digits", "Output folder.")

_CONFIG = os.path.join(os.path.dirname(__file__), "..", "..", "configs", "digits_js.py")


def _config():
  spec = importlib.util.spec_from_file_location("digits_cfg", os.path.abspath(_CONFIG))
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod.get_config()


def _row(name, m, extra=""):
  return (f"| {name} | {m['fd']:.2f} | {m['class_coverage']:.2f} | {m['mean_confidence']:.3f} | "
          f"{m['class_histogram_tv']:.3f} | {extra} |")


def main(argv):
  del argv
  from fdistill_jax.engine import loop
  logging.set_verbosity(logging.WARNING)
  os.makedirs(_OUT.value, exist_ok=True)
  results = {}
  for div in _DIVS.value:
    cfg = _config()
    cfg.method.divergence = div
    if _STEPS.value:
      cfg.train.steps = _STEPS.value
    wd = os.path.join(_OUT.value, "runs", div)
    shutil.rmtree(wd, ignore_errors=True)
    t0 = time.time()
    out = loop.train(cfg, wd)
    out["wall_s"] = time.time() - t0
    out["steps"] = cfg.train.steps
    results[div] = out
    print(f"{div}: FD {out['student']['fd']:.2f}  ({out['wall_s']:.0f} s)", flush=True)
  with open(os.path.join(_OUT.value, "digits.json"), "w") as f:
    json.dump(results, f, indent=1)
  print("\n| sampler | FD (500 samples) | class coverage | confidence | class-hist TV | wall |")
  print("|---|---|---|---|---|---|")
  ref = next(iter(results.values()))
  for k, v in ref.items():
    if k.startswith("teacher_nfe"):
      print(_row(f"teacher, {k[len('teacher_nfe'):]} NFE", v))
  for div, out in results.items():
    print(_row(f"one-step student, {div} ({out['steps']} steps)", out["student"],
               f"{out['wall_s']:.0f} s"))


if __name__ == "__main__":
  app.run(main)
