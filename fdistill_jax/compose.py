"""Composition: a config becomes (experiment, method) and is handed to the engine.

The one place that knows all three layers: `main`, tests, benchmarks and the non-training modes
(modes.py: sample, ref) call these functions; the engine (fdistill_jax/engine/) runs what it is
handed and imports neither data, evaluation, methods nor experiments.

  exp, method = build(cfg, workdir)        # experiments.build + the method's prepare hook
  train(cfg, workdir) / Run(cfg, workdir) / load_trained / evaluate_checkpoint / generator_params
"""
from __future__ import annotations

from fdistill_jax import config_defaults, experiments
from fdistill_jax.engine import loop
from fdistill_jax.evaluation import plots
from fdistill_jax.methods import registry


def build(cfg, workdir: str, prepare: bool = True):
  """(experiment, method module) of cfg; prepare=False skips the method's hook (e.g. KD's pairs).
  cfg's optional fields are resolved in place first (config_defaults.resolve), as in every
  function here: they are the Python API's entry points."""
  config_defaults.resolve(cfg)
  method = registry.get(cfg.method.name)
  exp = experiments.build(cfg, workdir, method)
  if prepare and hasattr(method, "prepare"):  # e.g. KD builds its cached teacher pairs.
    exp = method.prepare(cfg, exp, workdir)
  return exp, method


def _problem(cfg, workdir: str, prepare: bool = True):
  config_defaults.resolve(cfg)  # Before the engine reads cfg (Run, train, load_trained, ...).
  return lambda: build(cfg, workdir, prepare)


def Run(cfg, workdir: str, devices=None, restore: bool = True,  # pylint: disable=invalid-name
        compiler_options: dict | None = None) -> loop.Run:
  return loop.Run(cfg, workdir, _problem(cfg, workdir), devices=devices, restore=restore,
                  compiler_options=compiler_options)


def train(cfg, workdir: str, devices=None) -> dict:
  """Trains cfg in workdir (loop.train), then draws workdir/metrics.png."""
  return loop.train(cfg, workdir, _problem(cfg, workdir), devices, plot=plots.metrics_png)


def load_trained(cfg, workdir: str, step: int | None = None):
  """(experiment, state) of the latest checkpoint in workdir (the public 'load a student' API)."""
  return loop.load_trained(cfg, workdir, _problem(cfg, workdir), step)


def evaluate_checkpoint(cfg, workdir: str) -> dict:
  return loop.evaluate_checkpoint(cfg, workdir, _problem(cfg, workdir), plot=plots.metrics_png)


generator_params = loop.generator_params
