"""The optional config fields and their defaults, resolved once after parsing (issue 26).

`resolve(cfg)` fills in, in place, every optional field `cfg` lacks; the rest of the package then
reads fields as attributes (`cfg.train.grad_accum`) instead of repeating a default at each read
(`cfg.train.get("grad_accum", 1)`). It runs where configs enter: main.py after parsing,
`config_checks.check`, and the Python API that builds runs without main (`compose`,
`experiments.build`). A value the config sets is never changed, and resolving twice changes
nothing. The engine (fdistill_jax/engine) defaults none of them: it is handed resolved configs
only (its unit tests build theirs with testing.engine_config), so a field missing there fails
naming it instead of taking a second copy of its default.

The defaults live in one place, `table(kind)`:
* ENGINE: fields no default config sets, optional in every config that has their block;
* OPTIONAL: fields of defaults.py's configs that a config may leave out. Such a field is filled in
  a config of teacher kind K when one of K's default configs has it (`teachers.of(cfg)`'s
  builders; e.g. eval.guidance_scale only for text-to-image kinds) and the config has the block it
  sits in (teacher.text_encoder only in configs with their own text encoder); its default is the
  value K's base default config (the family's first builder: defaults.toy / image / t2i) sets, so
  defaults.py stays the one source of the values, else the value given here.
`optim.*.x` stands for the field x of every network's block in config.optim.

Fields not here are either required (config_checks.required_fields) or read with `.get` where
their absence means something (a comment at the read says what).
"""
from __future__ import annotations

import functools

from fdistill_jax import teachers

_BASE = object()  # OPTIONAL: the value the kind's base default config sets.

ENGINE = {
    "mesh.tensor": 1,
    "eval.fid_batch": 250,
    "optim.*.lr_scales": (),  # () = one learning rate for all parameters (no multi_transform).
}

OPTIONAL = {
    # Engine: train loop, checkpoints, mesh, optimisers, evaluation.
    "train.grad_accum": _BASE, "train.ema_rampup": _BASE, "train.tensorboard": _BASE,
    "train.final_eval": _BASE, "train.restart_from_scratch": _BASE,
    "train.adopt_unverified_checkpoints": _BASE,
    "mesh.rules": _BASE, "mesh.default_tactic": _BASE, "mesh.fsdp_min_size": _BASE,
    "optim.*.schedule": _BASE, "optim.*.end_lr_ratio": _BASE, "optim.*.nan_to_num": _BASE,
    "optim.*.clip_value": _BASE,
    "eval.score_raw": _BASE,
    # Image kinds: teacher, data, evaluation.
    "student.init_checkpoint": _BASE,  # Not the toy's: its student block keys its pretraining.
    "teacher.dtype": _BASE, "teacher.remat": _BASE, "teacher.init_seed": _BASE,
    "dataset.use_labels": _BASE, "dataset.xflip": _BASE,
    "eval.metric": _BASE, "eval.teacher_nfes": _BASE,
    # Text-to-image kinds.
    "teacher.compute_dtype": _BASE, "teacher.ema": _BASE, "teacher.prompt_cache": _BASE,
    "teacher.text_encoder.checkpoint": "",  # '' = a randomly initialised text encoder.
    "dataset.captions": _BASE,
    "eval.guidance_scale": _BASE, "eval.teacher_solver": _BASE, "eval.num_prompts": _BASE,
    "eval.grid_size": _BASE, "eval.batch_size": _BASE, "eval.per_prompt_samples": _BASE,
    "eval.per_prompt_train": _BASE, "eval.reference_cache": _BASE,
}


def _flat(cfg, prefix: str = "", out: dict | None = None) -> dict:
  """{dotted path: value} of every field of cfg; optim.<net>.x is written optim.*.x (the first
  network's value)."""
  out = {} if out is None else out
  for k, v in cfg.items():
    path = prefix + k
    if prefix.startswith("optim.") and prefix.count(".") == 2:
      path = "optim.*." + k
    out.setdefault(path, v)
    if hasattr(v, "keys"):
      _flat(v, path + ".", out)
  return out


@functools.lru_cache(maxsize=None)
def _family_fields(kind: str) -> tuple[dict, frozenset]:
  """(the base default config's fields, every default config's field paths) of teacher kind
  `kind`, from its family's builders in defaults.py."""
  builders = teachers.get(kind).default_builders()
  base = _flat(builders[0]())
  paths = set(base)
  for build in builders[1:]:
    paths |= set(_flat(build()))
  return base, frozenset(paths)


@functools.lru_cache(maxsize=None)
def _table(kind: str) -> tuple[tuple[str, object], ...]:
  base, paths = _family_fields(kind)
  out = dict(ENGINE)
  for path, default in OPTIONAL.items():
    if path in paths:
      out[path] = base.get(path, default)
      if out[path] is _BASE:
        raise ValueError(f"config_defaults.OPTIONAL[{path!r}]: the base default config of "
                         f"teacher.kind {kind!r} does not set it; give its default here")
  return tuple(out.items())


def table(kind: str) -> dict:
  """{dotted path: default} of the optional fields of a config of teacher kind `kind`."""
  return dict(_table(kind))


def _blocks(cfg, parts: list[str]):
  """The blocks of cfg at the dotted parent path `parts` ('*': each child block), existing ones
  only."""
  nodes = [cfg]
  for p in parts:
    nxt = []
    for n in nodes:
      if p == "*":
        nxt += [v for v in n.values() if hasattr(v, "keys")]
      elif hasattr(n, "keys") and p in n and hasattr(n[p], "keys"):
        nxt.append(n[p])
    nodes = nxt
  return nodes


def missing(cfg, kind: str | None = None) -> list[tuple[str, object]]:
  """(path, default) of each optional field cfg lacks (optim.* paths name the network); kind as
  in resolve."""
  out = []
  for path, default in table(kind or cfg.teacher.kind).items():
    *parents, leaf = path.split(".")
    if "*" in parents:
      i = parents.index("*")
      head = _blocks(cfg, parents[:i])
      for block in head:
        for name, child in block.items():
          for node in _blocks(child, parents[i + 1:]) if hasattr(child, "keys") else ():
            if leaf not in node:
              out.append((".".join(parents[:i] + [name] + parents[i + 1:] + [leaf]), default))
    else:
      for node in _blocks(cfg, parents):
        if leaf not in node:
          out.append((path, default))
  return out


def resolve(cfg, kind: str | None = None):
  """Fills in, in place, each optional field cfg lacks (table(teacher.kind)) and returns cfg.
  A locked ConfigDict is unlocked for it and locked again. A config without a known teacher.kind
  is returned as it is (config_checks names the field).

  kind: resolve as a config of this teacher kind whatever cfg's teacher.kind (the table of a
  partial config without a teacher block: the blocks an engine unit test hands the engine, which
  reads fields and defaults none; fdistill_jax.testing.engine_config). Only the blocks cfg has
  are filled."""
  if kind is None:
    kind = cfg.get("teacher", {}).get("kind") if hasattr(cfg, "get") else None
  elif kind not in teachers.KINDS:
    raise ValueError(f"config_defaults.resolve: unknown teacher kind {kind!r}; known: "
                     f"{teachers.KINDS}")
  if kind not in teachers.KINDS:
    return cfg
  todo = missing(cfg, kind)
  if not todo:
    return cfg
  locked = bool(getattr(cfg, "is_locked", False))
  if locked:
    cfg.unlock()
  try:
    for path, default in todo:
      *parents, leaf = path.split(".")
      node = cfg
      for p in parents:
        node = node[p]
      node[leaf] = default
  finally:
    if locked:
      cfg.lock()
  return cfg
