"""Composition: a config becomes (experiment, method) and is handed to the engine.

The one place that knows all three layers: `main`, tests and benchmarks call these functions;
the engine (engine/loop.py) runs what it is handed and imports neither methods nor experiments.

  exp, method = build(cfg, workdir)        # experiments.build + the method's prepare hook
  train(cfg, workdir) / Run(cfg, workdir) / load_trained / evaluate_checkpoint / sample_checkpoint
"""
from __future__ import annotations

import os

import jax

from fdistill_jax import experiments
from fdistill_jax.engine import loop, workdir_lock
from fdistill_jax.evaluation import t2i_sampling
from fdistill_jax.methods import registry


def build(cfg, workdir: str, prepare: bool = True):
  """(experiment, method module) of cfg; prepare=False skips the method's hook (e.g. KD's pairs)."""
  method = registry.get(cfg.method.name)
  exp = experiments.build(cfg, workdir, method)
  if prepare and hasattr(method, "prepare"):  # e.g. KD builds its cached teacher pairs.
    exp = method.prepare(cfg, exp, workdir)
  return exp, method


def _problem(cfg, workdir: str, prepare: bool = True):
  return lambda: build(cfg, workdir, prepare)


def Run(cfg, workdir: str, devices=None, restore: bool = True) -> loop.Run:  # pylint: disable=invalid-name
  return loop.Run(cfg, workdir, _problem(cfg, workdir), devices=devices, restore=restore)


def train(cfg, workdir: str, devices=None) -> dict:
  return loop.train(cfg, workdir, _problem(cfg, workdir), devices)


def load_trained(cfg, workdir: str, step: int | None = None):
  """(experiment, state) of the latest checkpoint in workdir (the public 'load a student' API)."""
  return loop.load_trained(cfg, workdir, _problem(cfg, workdir), step)


def evaluate_checkpoint(cfg, workdir: str) -> dict:
  return loop.evaluate_checkpoint(cfg, workdir, _problem(cfg, workdir))


def sample_checkpoint(cfg, workdir: str, prompts: str | None = None,
                      prompt_cache: str | None = None) -> dict:
  """Samples of the latest checkpoint (or of the teacher when there is none); with `prompts`
  (a text file, text-to-image configs) one PNG per prompt and a captioned grid, the prompts'
  embeddings read from `prompt_cache` (default config.teacher.prompt_cache).

  Holds the workdir's lock (engine/workdir_lock.py), like training: restoring may move a step
  that fails verification to checkpoints/corrupt/ (or adopt one), building the problem may
  write the workdir's caches, and the samples are written into the workdir."""
  with workdir_lock.hold(workdir, "sample"):
    if prompts:
      return sample_prompts(cfg, workdir, prompts, prompt_cache)
    return loop.sample_checkpoint(cfg, workdir, _problem(cfg, workdir),
                                  _problem(cfg, workdir, prepare=False))


def sample_prompts(cfg, workdir: str, prompts: str, prompt_cache: str | None = None) -> dict:
  """Text sample mode (evaluation/t2i_sampling.py): the student of the latest checkpoint with
  eval.sampler / eval.params, else the teacher's eval.nfe sampler; writes
  workdir/samples_<tag>_<file stem>/%06d.png and the captioned grid beside it."""
  key = jax.random.fold_in(jax.random.PRNGKey(cfg.seed), 123)
  ckpt_dir = os.path.join(workdir, "checkpoints")
  if os.path.isdir(ckpt_dir) and any(p.isdigit() for p in os.listdir(ckpt_dir)):
    exp, state = load_trained(cfg, workdir)
    tag, teacher = f"{int(state['step']):07d}_{cfg.eval.params}", False
    params = loop.generator_params(state, cfg.eval.params)
  else:
    if not cfg.teacher.get("checkpoint"):
      raise FileNotFoundError(f"nothing to sample: no checkpoint under {ckpt_dir} and "
                              "config.teacher.checkpoint is empty")
    exp, _ = build(cfg, workdir, prepare=False)
    tag, teacher = f"teacher_nfe{cfg.eval.nfe}", True
    params = exp.frozen.get("teacher") if isinstance(exp.frozen, dict) else None
  stem = os.path.splitext(os.path.basename(prompts))[0]
  return t2i_sampling.write_prompt_samples(
      exp, params, prompts, prompt_cache or cfg.teacher.get("prompt_cache", ""),
      os.path.join(workdir, f"samples_{tag}_{stem}"), key, teacher=teacher,
      batch_size=int(cfg.eval.get("batch_size", 0) or 64),
      grid_size=int(cfg.eval.get("grid_size", 16)), title=f"{tag}: {stem}")


generator_params = loop.generator_params
reference_statistics = loop.reference_statistics
