"""Digits benchmark: one-step students of every method vs. the packaged teacher, same protocol.

  python -m fdistill_jax.benchmarks.digits [--divergences=js,kl,rkl]
      [--configs=configs/digits_sid.py,configs/digits_dmd2.py@train.steps=1500,...]
      [--steps=600] [--seed=0] [--out=benchmark_results/digits] [--notensorboard]

f-distill entries run defaults.digits_distill(divergence) (the shared 1:1, 600-iteration protocol
of the other digits configs; configs/digits_js.py is the tuned quickstart recipe, add it with
--configs to compare); --configs adds any digits config
file, optionally with overrides after '@' (';'-separated dotted keys, Python literals). Every
run uses the same seed, batch and evaluation: the digits metric (Fréchet distance of the digits
classifier's features over 500 samples, class coverage, confidence) of the student's EMA named
by the config's eval.params (0.99 for every config but the quickstart's 0.98),
and the teacher at 1, 2, 4 and 35 NFE. Progressive distillation runs all its rounds and reports
the final 1-step student. Prints a markdown table and writes <out>/digits.json.
"""
from __future__ import annotations

import json
import os
import shutil
import time

from absl import app, flags, logging

from fdistill_jax import defaults
from fdistill_jax.benchmarks.common import (folder_name, load_config, parse_entry, set_key,
                                            split_entries)


def _define_flags() -> None:
  """Defines the command-line flags; only when this module is the program, so that importing
  it (tests, other tools) defines none and cannot clash with another module's flags."""
  global _DIVS, _CONFIGS, _STEPS, _SEED, _OUT, _TB, _CACHE
  _DIVS = flags.DEFINE_list("divergences", ["js", "kl", "rkl"], "f-distill divergences to run.")
  _CONFIGS = flags.DEFINE_string("configs", "", "Extra config files, comma-separated, each "
                                 "optionally 'path@k=v;k=v' (values are Python literals).")
  _STEPS = flags.DEFINE_integer("steps", None, "Override train.steps of every run.")
  _SEED = flags.DEFINE_integer("seed", 0, "config.seed of every run.")
  _OUT = flags.DEFINE_string("out", "benchmark_results/digits", "Output folder.")
  _TB = flags.DEFINE_bool("tensorboard", True, "Write TensorBoard events (needs TensorFlow).")
  _CACHE = flags.DEFINE_string("cache_dir", None, "Digits-classifier cache shared by all runs "
                               "(default <out>/cache: the classifier is trained once).")


def run_one(cfg, workdir: str) -> dict:
  """Trains (all rounds for progressive distillation) and returns the final metrics."""
  from fdistill_jax import config_checks
  from fdistill_jax import compose
  config_checks.check(cfg)
  shutil.rmtree(workdir, ignore_errors=True)
  t0 = time.time()
  if cfg.method.name == "progressive":
    from fdistill_jax import pd_rounds
    rounds = pd_rounds.run_rounds(cfg, workdir)
    out = dict(rounds[-1]["metrics"])
    out["rounds"] = [{"steps": r["steps"], "student": r["metrics"]["student"]} for r in rounds]
    out["train_steps"] = cfg.train.steps * len(rounds)
  else:
    out = compose.train(cfg, workdir)
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
  entries = [(f"f-distill {d}", None, {"method.divergence": d}) for d in _DIVS.value]
  entries += [parse_entry(e) for e in split_entries(_CONFIGS.value)]
  results = {}
  for name, path, over in entries:
    cfg = defaults.digits_distill() if path is None else load_config(path)
    for k, v in over.items():
      set_key(cfg, k, v)
    cfg.seed = _SEED.value
    cfg.train.tensorboard = _TB.value
    cfg.eval.cache_dir = _CACHE.value or os.path.join(_OUT.value, "cache")
    if _STEPS.value:
      cfg.train.steps = _STEPS.value
    out = run_one(cfg, os.path.join(_OUT.value, "runs", folder_name(name)))
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
  _define_flags()
  app.run(main)
