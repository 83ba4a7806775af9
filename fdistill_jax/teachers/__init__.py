"""Teacher families, found by config.teacher.kind: the one place that reads the kind.

A family owns what is particular to one kind of teacher; the rest of the code asks it:
  problem   the experiments module that builds its runs (`check_config(cfg)`,
            `build(cfg, workdir, method)`): 'toy' (2-D mixtures), 'image' (class-conditional
            EDM networks), 't2i' (text-to-image transformers);
  teacher   its module in teachers/ (loading, the parameterisation adapter, the reference
            sampler). A text-to-image teacher module provides `wrap(teacher_cfg, module,
            params, adapter, null_cond)` (the D(x; σ, cond) the problem holds),
            `adapter(teacher_cfg)`, `check_module(module)`, `SOLVERS` (the first the default),
            `sample(teacher, z, cond, num_steps=, guidance_scale=, solver=)`, `PREDICTION`
            ('epsilon' | 'flow': the exported scheduler's), `NAME` and `RULES` (what the t2i
            problem, its evaluation and export ask);
  export    the writer of a student's native files (`writer(cfg, params, out) -> (arch, files)`);
  defaults  the builders in defaults.py of its default configs (config_checks' reference of the
            fields a config of this kind may hold);
  rules     the field-rule tables (validation.Rule) beyond the engine's and the methods'.
Everything is named by import path and resolved on use, so a toy run imports no image stack.

Adding a family: a teacher module (and a model file if the network is new), one FAMILIES entry,
its default config builder, configs. Nothing else dispatches on the kind
(tests/test_layers.py::test_only_the_registry_reads_the_teacher_kind).
"""
from __future__ import annotations

import dataclasses
import importlib
from typing import Any, Callable


@dataclasses.dataclass(frozen=True)
class Family:
  """One kind of teacher (module docstring); paths are 'package.module' or 'package.module:attr'."""
  kind: str
  problem: str
  export: str
  defaults: Callable[[Any], tuple[Callable[[], Any], ...]]  # defaults.py -> its builders
  rules: tuple[str, ...]
  teacher: str | None = None
  summary: str = ""

  @property
  def text_to_image(self) -> bool:
    return self.problem == T2I_PROBLEM

  def problem_module(self):
    return resolve(self.problem)

  def teacher_module(self):
    if self.teacher is None:
      raise ValueError(f"teacher.kind {self.kind!r} has no teacher module")
    return resolve(self.teacher)

  def writer(self) -> Callable:
    return resolve(self.export)

  def rule_tables(self) -> list[dict]:
    return [resolve(r) for r in self.rules]

  def default_builders(self) -> tuple[Callable[[], Any], ...]:
    return self.defaults(importlib.import_module("fdistill_jax.defaults"))


_IMAGE_RULES = "fdistill_jax.experiments:IMAGE_RULES"
T2I_PROBLEM = "fdistill_jax.experiments.t2i"

FAMILIES: dict[str, Family] = {f.kind: f for f in (
    Family("gmm", problem="fdistill_jax.experiments.toy",
           export="fdistill_jax.export:_write_mlp", defaults=lambda d: (d.toy,),
           rules=("fdistill_jax.experiments.toy:RULES",),
           teacher="fdistill_jax.teachers.analytic",
           summary="2-D Gaussian mixtures with an exact score, and an MLP denoiser fitted to it"),
    Family("edm", problem="fdistill_jax.experiments.image",
           export="fdistill_jax.export:_write_edm",
           defaults=lambda d: (d.image, lambda: d.fastgen_edm("cifar10"),
                               lambda: d.fastgen_edm("imagenet64"), lambda: d.digits_teacher(0.1),
                               d.digits_distill, lambda: d.sid_edm("cifar10")),
           rules=(_IMAGE_RULES, "fdistill_jax.experiments.image:RULES"),
           teacher="fdistill_jax.teachers.edm",
           summary="NVIDIA EDM networks (DDPM++, NCSN++, ADM), class-conditional images"),
    Family("pixart", problem=T2I_PROBLEM,
           export="fdistill_jax.export:_write_transformer",
           defaults=lambda d: (d.t2i, d.digits_t2i_teacher, d.digits_t2i_text_teacher,
                               d.digits_t2i_distill, d.pixart512),
           rules=(_IMAGE_RULES, "fdistill_jax.experiments.t2i:RULES",
                  "fdistill_jax.experiments.t2i_text:RULES", "fdistill_jax.teachers.pixart:RULES"),
           teacher="fdistill_jax.teachers.pixart",
           summary="PixArt-α DiTs: ε-prediction with learned σ on a DDPM schedule, T5 text"),
    Family("flow_dit", problem=T2I_PROBLEM,
           export="fdistill_jax.export:_write_transformer",
           defaults=lambda d: (d.t2i_flow, d.digits_t2i_flow_teacher, d.digits_t2i_flow_distill),
           rules=(_IMAGE_RULES, "fdistill_jax.experiments.t2i:RULES",
                  "fdistill_jax.experiments.t2i_text:RULES",
                  "fdistill_jax.teachers.flow_dit:RULES"),
           teacher="fdistill_jax.teachers.flow_dit",
           summary="rectified-flow DiTs (velocity, the SD3/FLUX convention) on the PixArt body"),
)}

KINDS: tuple[str, ...] = tuple(FAMILIES)


def resolve(path: str):
  """The module 'a.b' or the attribute 'a.b:attr'."""
  module, _, attr = path.partition(":")
  mod = importlib.import_module(module)
  return getattr(mod, attr) if attr else mod


def get(kind: str) -> Family:
  """The family of teacher.kind `kind`; a ValueError naming the known kinds."""
  if kind not in FAMILIES:
    raise ValueError(f"config.teacher.kind={kind!r} is not a teacher family; allowed: {KINDS}")
  return FAMILIES[kind]


def of(cfg) -> Family:
  """The family of config.teacher.kind."""
  return get(cfg.teacher.kind)
