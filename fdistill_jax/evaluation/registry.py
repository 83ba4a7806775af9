"""Metric families, chosen by config.eval.metric: the one place that reads the name.

A metric family is one way of scoring a run's samples, with its module in evaluation/:
  digits  the digits metric (digits_metric.py: FD, classes, precision/recall of a small CNN's
          features; with text to image also prompt accuracy and the per-prompt set);
  fid     FID of the one-step generator streamed over eval.num_samples seeds (fid.py; needs
          eval.fid_weights and eval.fid_reference, else it is skipped with a warning);
  toy     the toy metrics against the exact mixture (toy_metrics.py: sliced Wasserstein, modes);
  none    pixel statistics only.
Each problem (the experiments module a teacher family names: teachers.FAMILIES[kind].problem)
offers some of them, listed in PROBLEMS; config.eval.metric names one of those or 'auto', which
`auto(cfg, problem)` resolves. A family's `factory` ('module:attr', resolved on use so a toy run
imports no image metric) builds the object the problem's evaluator uses from the config and a
`Context`; 'none' builds nothing.

Adding a family: its module (with a factory `(cfg, ctx) -> metric object`), one FAMILIES entry,
its name in the PROBLEMS entries of the problems that offer it (and, where it is their default,
in `auto`), and the evaluator's use of the object.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

from fdistill_jax import config_defaults, teachers
from fdistill_jax import validation as V

AUTO = "auto"
TOY = "fdistill_jax.experiments.toy"
IMAGE = "fdistill_jax.experiments.image"
T2I = teachers.T2I_PROBLEM


@dataclasses.dataclass(frozen=True)
class MetricFamily:
  """One metric family (module docstring); factory: 'package.module:attr' or None (no object)."""
  name: str
  factory: str | None
  summary: str = ""

  @property
  def problems(self) -> tuple[str, ...]:
    """The problems that offer this family (PROBLEMS)."""
    return tuple(p for p, offered in PROBLEMS.items() if self.name in offered)

  def build(self, cfg, ctx: "Context"):
    """The metric object for cfg, or None for a family without one."""
    return None if self.factory is None else teachers.resolve(self.factory)(cfg, ctx)


@dataclasses.dataclass(frozen=True)
class Context:
  """What a problem's evaluator hands a factory; each factory reads the fields it needs."""
  workdir: str = ""                    # a run's cache folder (the digits classifier's default)
  nets: Any = None                     # the problem's Nets (a streaming metric samples them)
  decode: Callable = lambda x: x       # teacher space -> images (the codec's jit_decode)
  image_shape: tuple = ()              # the decoded images' (H, W, C)
  target: Any = None                   # the toy's exact GaussianMixture


FAMILIES: dict[str, MetricFamily] = {f.name: f for f in (
    MetricFamily("digits", "fdistill_jax.evaluation.digits_metric:for_run",
                 "the digits CNN's FD, classes, precision/recall (the CPU stand-in for FID)"),
    MetricFamily("fid", "fdistill_jax.evaluation.fid:streaming_metric",
                 "EDM-protocol FID of the one-step generator, streamed over seeds"),
    MetricFamily("toy", "fdistill_jax.evaluation.toy_metrics:for_run",
                 "sliced Wasserstein and mode statistics against the exact mixture"),
    MetricFamily("none", None, "pixel mean and standard deviation only"),
)}

# The families each problem offers, in the order its errors list them (after 'auto').
PROBLEMS: dict[str, tuple[str, ...]] = {
    TOY: ("toy",),
    IMAGE: ("digits", "fid", "none"),
    T2I: ("none", "digits"),
}


def names(problem: str) -> tuple[str, ...]:
  """The values config.eval.metric may take for `problem`: 'auto', then its families."""
  return (AUTO,) + PROBLEMS[problem]


def _problem(cfg, problem: str | None) -> str:
  return teachers.of(cfg).problem if problem is None else problem


def chosen(cfg, problem: str | None = None) -> str:
  """config.eval.metric as written (resolved by config_defaults: defaults.EVAL_METRIC when an
  image or text-to-image config omits it; the toy configs have none, which reads 'auto'), or a
  ConfigError naming the field, its value and the names `problem` (default: cfg's teacher
  family's) allows."""
  problem = _problem(cfg, problem)
  # Absent from toy configs (their checks refuse the field): 'auto', the toy's one family.
  m = config_defaults.resolve(cfg).eval.get("metric", AUTO)
  allowed = names(problem)
  V.need(m in allowed, "eval.metric", m, f"allowed: {allowed}")
  return m


def auto(cfg, problem: str) -> str:
  """What 'auto' means for `problem`: the toy metrics on the toy; the digits metric on the digits
  dataset (text to image: in pixel space only, not through a VAE); else 'none'."""
  if problem == TOY:
    return "toy"
  if cfg.dataset.name != "digits" or (problem == T2I and cfg.teacher.get("vae")):
    return "none"
  return "digits"


def resolve(cfg, problem: str | None = None) -> str:
  """The family cfg's evaluation uses: config.eval.metric checked (`chosen`), 'auto' resolved.
  The image problem's digits metric scores the digits dataset only: named for other data it is
  'none' (text to image keeps it: its data-free runs score prompts with it)."""
  problem = _problem(cfg, problem)
  m = chosen(cfg, problem)
  if m == AUTO:
    return auto(cfg, problem)
  if m == "digits" and problem == IMAGE and cfg.dataset.name != "digits":
    return "none"
  return m


def build(cfg, ctx: Context, problem: str | None = None) -> tuple[str, Any]:
  """(the resolved family's name, its metric object or None) for cfg's evaluation."""
  name = resolve(cfg, problem)
  return name, FAMILIES[name].build(cfg, ctx)
