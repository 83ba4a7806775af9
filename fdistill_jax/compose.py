"""Composition: a config becomes (experiment, method) and is handed to the engine.

The one place that knows all three layers: `main`, tests and benchmarks call these functions;
the engine (engine/loop.py) runs what it is handed and imports neither methods nor experiments.

  exp, method = build(cfg, workdir)        # experiments.build + the method's prepare hook
  train(cfg, workdir) / Run(cfg, workdir) / load_trained / evaluate_checkpoint / sample_checkpoint
"""
from __future__ import annotations

from fdistill_jax import experiments
from fdistill_jax.engine import loop
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


def train(cfg, workdir: str) -> dict:
  return loop.train(cfg, workdir, _problem(cfg, workdir))


def load_trained(cfg, workdir: str, step: int | None = None):
  """(experiment, state) of the latest checkpoint in workdir (the public 'load a student' API)."""
  return loop.load_trained(cfg, workdir, _problem(cfg, workdir), step)


def evaluate_checkpoint(cfg, workdir: str) -> dict:
  return loop.evaluate_checkpoint(cfg, workdir, _problem(cfg, workdir))


def sample_checkpoint(cfg, workdir: str) -> dict:
  return loop.sample_checkpoint(cfg, workdir, _problem(cfg, workdir),
                                _problem(cfg, workdir, prepare=False))


generator_params = loop.generator_params
reference_statistics = loop.reference_statistics
