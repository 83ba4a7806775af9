"""Experiment builders: from a config to the teacher, networks, data and evaluation of one run.

`build(cfg, workdir)` asks cfg's teacher family (fdistill_jax.teachers) for its problem module;
each problem's builder returns an `Experiment`, the only thing the training loop needs to know
about the problem.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp

from fdistill_jax import config_defaults, teachers
from fdistill_jax import validation as V
from fdistill_jax.diffusion import few_step
from fdistill_jax.evaluation import registry as metric_registry
from fdistill_jax.nets import Nets


@dataclasses.dataclass
class Experiment:
  """Everything problem-specific a run needs.

  nets: the networks as pure functions; frozen: frozen parameter pytree (teacher, feature net);
  init_params(key) -> {net: params} for the trainable nets;
  batch(step) -> dict(x [B, ...] real data in the teacher's space, cond: the condition pytree
  [B, ...] of nets.cond) (deterministic in step, or
  from a resumable iterator whose state is `data_state()` / `restore_data(state)`);
  batch_spec() -> the global batch's shapes and dtypes, without drawing a batch;
  sample(gen_params, key) -> samples; score(samples, key) -> dict of metrics;
  write_samples(samples, path, title) writes a PNG; evaluate composes sample and score;
  reference(key) -> metrics of the teacher's multi-step sampler and anything else fixed.
  """
  nets: Nets
  frozen: Any
  init_params: Callable
  batch: Callable
  batch_spec: Callable  # () -> ShapeDtypeStruct pytree of the GLOBAL batch
  sample: Callable
  score: Callable
  write_samples: Callable
  reference: Callable
  data_state: Callable = lambda: {}
  restore_data: Callable = lambda state: None
  global_batch: bool = True  # batch() returns the full global batch (same on every process)
  sample_teacher: Callable | None = None  # key -> samples of the teacher's eval.nfe sampler
  extra_metrics: Callable | None = None   # gen_params -> dict (e.g. streamed FID), at eval time
  write_comparison: Callable | None = None  # (samples, key, path): student beside teacher
  # (params, z, cond, teacher=False) -> decoded samples for given conditions (text sample mode)
  sample_cond: Callable | None = None

  def evaluate(self, gen_params, key) -> dict:
    return self.score(self.sample(gen_params, key), key)


# Dataset, discriminator-head and evaluation fields shared by the image kinds ('edm', 'pixart'),
# beyond each kind's own checks (types and finiteness: config_checks.check_types).
MAX_NFE = 10_000
IMAGE_RULES = {
    "teacher.init_seed": V.within(0, 2 ** 32 - 1, "an int"),
    "dataset.resolution": V.within(1, 8192, "an int (pixels)"),
    "dataset.reader": V.one_of("auto", "data_source", "tf_data"),
    "disc.channels": V.within(1, 65_536, "an int"),
    "disc.feature_keys": V.each(V.Rule(bool, "a non-empty name"), distinct=True),
    "eval.nfe": V.within(1, MAX_NFE, "an int"),
    "eval.teacher_nfes": V.each(V.within(1, MAX_NFE, "an int")),
    "eval.batch_size": V.at_least(0, "an int (0 = the default)"),
}


def refuse_init_checkpoint(cfg) -> None:
  """student.init_checkpoint is built for EDM teachers only (experiments/image.generator_init);
  the other kinds refuse a non-empty one rather than ignore it."""
  # config.student: required (config_checks); the toy's has no init_checkpoint (its MLP's block,
  # not resolved: it keys the toy's pretraining cache).
  path = cfg.student.get("init_checkpoint", "")
  V.need(not path, "student.init_checkpoint", path,
         f"'' (a generator checkpoint is read for teacher.kind 'edm' only, not "
         f"{cfg.teacher.kind!r})")


def eval_metric(cfg, problem: str | None = None) -> str:
  """config.eval.metric as written (resolved by config_defaults: defaults.EVAL_METRIC when the
  config omits it), or a ConfigError naming the field, its value and the names the metric registry
  (evaluation/registry.py) allows for `problem` (default: cfg's teacher family's). The image and
  text-to-image checks and evaluators all read it here, and an evaluator built without
  config_checks (the Python API) refuses a typo too instead of silently skipping its metric (FID,
  digits)."""
  return metric_registry.chosen(cfg, problem)


def networks(cfg, *, student: Callable, teacher: Callable, head: Any, data_shape: tuple,
             cond: Any, generator_init: Callable, head_example: Callable,
             fake_score_init: Callable | None = None, time: Any = None
             ) -> tuple[Nets, Callable]:
  """The networks of every problem: (Nets, init_params), built one way.

  student(params, x, σ, cond, *, key, features) and teacher(frozen, x, σ, cond, *, features):
  the problem's D functions; head: the discriminator module (None without config.disc);
  generator_init(key) -> the generator's initial params; fake_score_init(params) -> the fake
  score's (default: a copy of the generator's, both start as the teacher); head_example(params)
  -> the head's example inputs (the student's features) for its init. init_params(key) ->
  {"generator", "fake_score"[, "discriminator"]}; the generator start also seeds every EMA.
  """
  disc = None if head is None else (lambda p, f, s: head.apply({"params": p}, f, s))
  nets = Nets(student=student, teacher=teacher, disc=disc, sigma_init=cfg.diffusion.sigma_init,
              chain=few_step.from_config(cfg), data_shape=tuple(data_shape), cond=cond,
              time=time)

  def init_params(key):
    gen = generator_init(key)
    fake = gen if fake_score_init is None else fake_score_init(gen)
    params = {"generator": gen, "fake_score": jax.tree.map(jnp.copy, fake)}
    if head is not None:
      params["discriminator"] = head.init(key, *head_example(gen))["params"]
    return params

  return nets, init_params


def check_config(cfg) -> None:
  """The teacher family's own checks (its teacher, data and evaluation fields)."""
  teachers.of(cfg).problem_module().check_config(cfg)


def build(cfg, workdir: str, method=None) -> Experiment:
  """The Experiment of cfg's problem, found through its teacher family (teachers.FAMILIES:
  'gmm' → toy.build, 'edm' → image.build, 'pixart' → t2i.build). cfg's optional fields are
  resolved in place first (config_defaults.resolve)."""
  config_defaults.resolve(cfg)
  return teachers.of(cfg).problem_module().build(cfg, workdir, method)
