"""Toy benchmark: every divergence (and any method config) on exact Gaussian-mixture teachers.

  python -m fdistill_jax.benchmarks.toy [--problems=ring8,mix8d,grid25,mix16d] [--seeds=0,1,2]
      [--divergences=rkl,kl,js,sf,sh,jf,neyman] [--configs=configs/toy2d_sid.py,...]
      [--configs='configs/toy2d_js.py@student.hidden=256;train.steps=6000']
      [--steps=N] [--out=benchmark_results/toy]

Problems (PROBLEMS; `--problems=list` prints each one's main.py flags): ring8 = 8 modes on a
circle in 2-D, weights ∝ 1,2,3,4,1,2,3,4; mix8d = 6 random modes in 8-D, weights ∝ 1..6;
grid25 = a 5×5 grid of close modes (spacing 1, σ 0.1) in 2-D, weights ∝ 1..5 along each row;
mix16d = 10 random modes in 16-D, weights ∝ 1..10. σ_data is the mixture's exact data std for
every problem. Per run it records the student's metrics (sliced Wasserstein `sw` to exact samples,
in-mode fraction, mode-weight TV and modes covered over in-mode samples, mean/median exact
log-density; evaluation/toy_metrics.py), the teacher's 35-NFE Heun sampler and the initial
generator on the same metrics, wall time and steps/s. Prints mean ± std over seeds and writes
<out>/toy.json. The pretrained denoiser (the generator's initialisation) is cached per problem
and shared by all runs of that problem.
"""
from __future__ import annotations

import json
import os
import shutil
import time

import numpy as np
from absl import app, flags, logging

from fdistill_jax import config_checks, defaults, divergences
from fdistill_jax.benchmarks.common import (folder_name, load_config, parse_entry, set_key,
                                            split_entries)


def _define_flags() -> None:
  """Defines the command-line flags; only when this module is the program, so that importing
  it (tests, other tools) defines none and cannot clash with another module's flags."""
  global FLAGS, _SEEDS, _DIVS, _CONFIGS, _STEPS, _OUT, _TB
  FLAGS = flags.DEFINE_list("problems", ["ring8", "mix8d", "grid25", "mix16d"], "Problems to run.")
  _SEEDS = flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds.")
  _DIVS = flags.DEFINE_list("divergences", list(divergences.NAMES), "f-distill divergences.")
  _CONFIGS = flags.DEFINE_string(
      "configs", "", "Extra config files, comma-separated, each optionally with overrides: "
      "'configs/toy2d_js.py@student.hidden=256;optim.generator.lr=1e-3' (Python literals).")
  _STEPS = flags.DEFINE_integer("steps", None, "Override train.steps.")
  _OUT = flags.DEFINE_string("out", "benchmark_results/toy", "Output folder.")
  _TB = flags.DEFINE_bool("tensorboard", True, "Write TensorBoard events (needs TensorFlow).")


# Each problem is a set of config overrides (pass them as --config.<key>=<value> to main to run
# it alone); σ_data is then set by one rule for all of them: the mixture's exact data std.
PROBLEMS = {
    "ring8": {},
    "mix8d": {"teacher.mixture": "random", "teacher.dim": 8, "teacher.num_modes": 6,
              "teacher.scale": 0.3, "teacher.spread": 2.0, "teacher.weights": (1., 2., 3., 4., 5., 6.)},
    "grid25": {"teacher.mixture": "grid", "teacher.grid_size": 5, "teacher.spacing": 1.0,
               "teacher.scale": 0.1, "teacher.weights": (1., 2., 3., 4., 5.)},
    "mix16d": {"teacher.mixture": "random", "teacher.dim": 16, "teacher.num_modes": 10,
               "teacher.scale": 0.3, "teacher.spread": 1.5,
               "teacher.weights": tuple(float(i) for i in range(1, 11))},
}


def problem_overrides(name: str, cfg=None) -> dict:
  """The overrides of problem `name`, with diffusion.sigma_data = the data std of its mixture
  (rounded to 0.01) computed on `cfg` (default: the toy defaults) with the overrides applied."""
  if name not in PROBLEMS:
    raise ValueError(f"unknown problem {name!r}; allowed: {', '.join(PROBLEMS)}")
  from fdistill_jax.experiments import toy
  from fdistill_jax.teachers import analytic
  cfg = defaults.toy() if cfg is None else cfg.copy_and_resolve_references()
  for k, v in PROBLEMS[name].items():
    set_key(cfg, k, v)
  sd = round(analytic.data_std(toy.make_mixture(cfg.teacher)), 2)
  return {**PROBLEMS[name], "diffusion.sigma_data": sd}


def command_line(name: str) -> str:
  """The main.py flags that run problem `name` on its own."""
  return " ".join(f"'--config.{k}={v!r}'".replace(" ", "") if isinstance(v, tuple) else
                  f"--config.{k}={v}" for k, v in problem_overrides(name).items())


def run_one(cfg, workdir: str, cache: str) -> dict:
  from fdistill_jax import compose
  shutil.rmtree(workdir, ignore_errors=True)
  os.makedirs(workdir)
  for ext in (".msgpack", ".json"):  # The params and their key: other settings pretrain again.
    if os.path.exists(cache + ext):
      shutil.copy(cache + ext, os.path.join(workdir, "pretrained_denoiser" + ext))
  config_checks.check(cfg)
  t0 = time.time()
  if cfg.method.name == "progressive":  # All rounds; the row is the final (1-step) student.
    from fdistill_jax import pd_rounds
    rounds = pd_rounds.run_rounds(cfg, workdir)
    out, total_steps = dict(rounds[-1]["metrics"]), cfg.train.steps * len(rounds)
  else:
    out, total_steps = compose.train(cfg, workdir), cfg.train.steps
  wall = time.time() - t0
  if not os.path.exists(cache + ".msgpack"):
    for ext in (".msgpack", ".json"):
      if os.path.exists(os.path.join(workdir, "pretrained_denoiser" + ext)):
        shutil.copy(os.path.join(workdir, "pretrained_denoiser" + ext), cache + ext)
  out["wall_s"] = wall
  out["steps_per_s"] = total_steps / wall
  return out


def _fmt(vals):
  vals = np.asarray(vals, np.float64)
  return f"{vals.mean():.3f}±{vals.std():.3f}" if len(vals) > 1 else f"{vals[0]:.3f}"


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  if FLAGS.value == ["list"]:
    for p in PROBLEMS:
      print(f"{p}: python -m fdistill_jax.main --config=configs/toy2d_js.py {command_line(p)}")
    return
  os.makedirs(_OUT.value, exist_ok=True)
  entries = [(f"fdistill-{d}", None, {"method.divergence": d}) for d in _DIVS.value]
  entries += [parse_entry(e) for e in split_entries(_CONFIGS.value)]
  results = []
  for prob in FLAGS.value:
    cache = os.path.join(_OUT.value, f"pretrained_{prob}")
    for name, path, over in entries:
      for seed in _SEEDS.value:
        cfg = load_config(path) if path else defaults.toy()
        for k, v in {**problem_overrides(prob, cfg), **over}.items():
          set_key(cfg, k, v)
        cfg.seed = int(seed)
        cfg.train.ckpt_every = 0
        cfg.train.tensorboard = _TB.value
        if _STEPS.value:
          cfg.train.steps = _STEPS.value
        if cfg.method.name == "progressive":  # Same total iterations, split over the rounds.
          from fdistill_jax.methods import progressive
          cfg.train.steps = max(1, cfg.train.steps // len(progressive.round_steps(cfg.method)))
        out = run_one(cfg, os.path.join(_OUT.value, "runs", f"{prob}_{folder_name(name)}_{seed}"),
                      cache)
        rec = {"problem": prob, "method": name, "seed": int(seed), "wall_s": out["wall_s"],
               "steps": cfg.train.steps, "steps_per_s": out["steps_per_s"],
               "student": out["student"], "teacher": out["teacher_heun35"],
               "init": out["init_generator"]}
        results.append(rec)
        s = out["student"]
        print(f"{prob:6s} {name:18s} seed {seed}: sw {s['sw']:.4f} in-mode "
              f"{s['in_mode_fraction']:.3f} tv {s['mode_tv']:.4f} covered "
              f"{s['modes_covered']}/{s['num_modes']}  ({out['wall_s']:.0f}s)", flush=True)
  with open(os.path.join(_OUT.value, "toy.json"), "w") as f:
    json.dump(results, f, indent=1)
  # ---------------------------------------------------------------- table
  print("\n| problem | method | SW to truth | teacher 35-NFE SW | init SW | in-mode | teacher "
        "in-mode | mode TV | modes covered | median log p | wall s/run |")
  print("|---|---|---|---|---|---|---|---|---|---|---|")
  for prob in FLAGS.value:
    for name, _, _ in entries:
      rs = [r for r in results if r["problem"] == prob and r["method"] == name]
      if not rs:
        continue
      g = lambda k, src="student": [r[src][k] for r in rs]
      print(f"| {prob} | {name} | {_fmt(g('sw'))} | {_fmt(g('sw', 'teacher'))} | "
            f"{_fmt(g('sw', 'init'))} | {_fmt(g('in_mode_fraction'))} | "
            f"{_fmt(g('in_mode_fraction', 'teacher'))} | {_fmt(g('mode_tv'))} | "
            f"{min(g('modes_covered'))}–{max(g('modes_covered'))}/{rs[0]['student']['num_modes']} | "
            f"{_fmt(g('median_log_prob'))} | "
            f"{np.mean([r['wall_s'] for r in rs]):.0f} |")


if __name__ == "__main__":
  _define_flags()
  app.run(main)
