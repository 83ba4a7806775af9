"""Progressive distillation's round driver: rounds K → K/2 → … → pd_final_steps.

  python -m fdistill_jax.pd_rounds --config=configs/toy2d_pd.py --workdir=runs/toy2d_pd

`run_rounds(cfg, workdir)` trains one round per student step count (progressive.round_steps), each
with `compose.train` in workdir/round{r}_{N}steps, and saves its student as student.msgpack, which
becomes the next round's frozen teacher (config.method.teacher_params); a finished round is
skipped on rerun. student.msgpack is a verified cache (progressive.save_params: a fileio.write_cache
envelope keyed by progressive.student_key, i.e. the round's step count, pd_base_steps and a digest
of the problem): one that fails its sha256, is foreign or belongs to another round/problem is never
used; its round is run again instead, which resumes from the round's checkpoint (re-exporting the
student with no training when that checkpoint is final, retraining only what is missing). It composes the engine and the method, so it lives above both.
"""
from __future__ import annotations

import copy
import json

import jax
from absl import logging
from etils import epath

from fdistill_jax import compose, fileio
from fdistill_jax.methods import progressive
from fdistill_jax.methods.progressive import round_steps


def _copy_cache(src_dir: str, dst_dir: str, name: str = "pretrained_denoiser.msgpack") -> None:
  """Shares a problem's pretrained-init cache between rounds so every round starts alike."""
  src, dst = epath.Path(src_dir) / name, epath.Path(dst_dir) / name
  if src.exists() and not dst.exists():
    fileio.write_bytes(dst, src.read_bytes())


def _verified(path: str, key: dict) -> bool:
  """Whether path is a sound student file for `key`; a damaged or foreign one is logged (and
  later overwritten by the round's re-export)."""
  if not epath.Path(path).exists():
    return False
  try:
    fileio.read_cache(path, key)
    return True
  except fileio.CacheError as e:
    logging.warning("%s; running its round again (resumes from the round's checkpoint)", e)
    return False


class RoundInterrupted(RuntimeError):
  """A round's training was preempted (SIGTERM) before its last step."""


def run_rounds(cfg, workdir: str, devices=None) -> list[dict]:
  """Trains PD rounds pd_base_steps → … → pd_final_steps; returns [{steps, workdir, params,
  metrics (the round's final_metrics.json)}].

  Each round calls `compose.train` in its own workdir (checkpointed and resumable there) and saves
  the student as student.msgpack, which becomes the next round's frozen teacher; a round whose
  student.msgpack exists and passes fileio.read_cache is skipped, one whose file fails it is run
  again (see the module docstring). `devices`
  (default: all) is handed to every round's `compose.train`.
  """
  m = cfg.method
  schedule = round_steps(m)
  fileio.makedirs(workdir)  # Local or gs://.
  teacher_path, prev_dir, rounds = m.teacher_params, workdir, []
  for r, n in enumerate(schedule):
    rdir = str(fileio.makedirs(epath.Path(workdir) / f"round{r}_{n}steps"))
    _copy_cache(prev_dir, rdir)
    rcfg = copy.deepcopy(cfg)
    rcfg.method.student_steps = n
    rcfg.method.teacher_params = teacher_path
    out = str(epath.Path(rdir) / "student.msgpack")
    key = progressive.student_key(rcfg, n)
    if not _verified(out, key):
      # Writes final_metrics.json (evaluated with the N-step sampler).
      res = compose.train(rcfg, rdir, devices=devices)
      if "preempted_at" in res:  # A partial round must not become the next round's teacher.
        raise RoundInterrupted(f"round {r} ({n} steps) stopped at step {res['preempted_at']}; "
                               f"rerun the same command to resume it from {rdir}")
      _, state = compose.load_trained(rcfg, rdir)
      params = jax.device_get(compose.generator_params(state, rcfg.eval.params))
      progressive.save_params(out, params, key)
    _copy_cache(rdir, workdir)  # The root keeps the shared init too (round 0 may have made it).
    metrics = None  # Written by process 0; None on other hosts when workdirs are not shared.
    if (epath.Path(rdir) / "final_metrics.json").exists():
      metrics = fileio.read_json(epath.Path(rdir) / "final_metrics.json")
    rounds.append({"round": r, "steps": n, "workdir": rdir, "params": out,
                   "teacher_params": teacher_path, "metrics": metrics})
    teacher_path, prev_dir = out, rdir
  fileio.write_json(epath.Path(workdir) / "rounds.json", rounds)
  return rounds


def _main(argv) -> None:
  """CLI: python -m fdistill_jax.pd_rounds --config=configs/toy2d_pd.py --workdir=DIR."""
  del argv
  from absl import flags
  from fdistill_jax import config_checks
  cfg = flags.FLAGS.config
  config_checks.check(cfg)
  print(json.dumps(run_rounds(cfg, flags.FLAGS.workdir), indent=1))


if __name__ == "__main__":
  from absl import app, flags
  from ml_collections import config_flags
  config_flags.DEFINE_config_file("config", None, "PD config file.", lock_config=True)
  flags.DEFINE_string("workdir", None, "Root directory; one sub-directory per round.")
  flags.mark_flags_as_required(["config", "workdir"])
  app.run(_main)
