"""Validation of a config before anything is built or compiled.

Each check names the config field, the bad value and what is allowed, so a typo fails in a second
instead of after minutes of compilation. This module keeps the engine-wide checks (optimisers,
train loop, mesh, σ range, EMA selection); every method, teacher kind and data source checks its
own fields in its own module (`check_config(cfg)`), and `check` calls them.
"""
from __future__ import annotations

import difflib
import functools
import math
import numbers

import jax

from fdistill_jax import config_defaults, experiments, teachers, validation
from fdistill_jax.diffusion import few_step
from fdistill_jax.methods import registry


ConfigError = validation.ConfigError
_need = validation.need


def check(cfg, num_devices: int | None = None) -> None:
  """Resolves cfg's optional fields in place (config_defaults.resolve), then raises ConfigError on
  the first invalid field."""
  num_devices = num_devices or jax.device_count()
  _need(cfg.get("teacher") is not None and cfg.teacher.get("kind") in teachers.KINDS,
        "teacher.kind", cfg.get("teacher", {}).get("kind"), f"allowed: {teachers.KINDS}")
  config_defaults.resolve(cfg)
  check_required(cfg)
  check_types(cfg)
  m = cfg.method
  _need(m.name in registry.names(), "method.name", m.name, f"allowed: {registry.names()}")
  for net in cfg.optim:
    o = cfg.optim[net]
    _need(o.lr > 0, f"optim.{net}.lr", o.lr, "must be > 0")
    _need(0 <= o.b1 < 1 and 0 <= o.b2 < 1, f"optim.{net}.b1/b2", (o.b1, o.b2), "must be in [0, 1)")
    _need(o.weight_decay >= 0, f"optim.{net}.weight_decay", o.weight_decay, "must be >= 0")
    _need(o.schedule in ("constant", "cosine"), f"optim.{net}.schedule",
          o.schedule, "'constant' or 'cosine'")
    _need(0 <= o.end_lr_ratio <= 1, f"optim.{net}.end_lr_ratio",
          o.end_lr_ratio, "must be in [0, 1]")
    _need(all(len(r) == 2 and isinstance(r[0], str) and r[1] > 0 for r in o.lr_scales),
          f"optim.{net}.lr_scales", o.lr_scales,
          "pairs (regex on the param path, factor > 0)")
  t = cfg.train
  _need(t.steps >= 1, "train.steps", t.steps, "must be >= 1")
  _need(t.batch_size >= 1, "train.batch_size", t.batch_size, "must be >= 1")
  _need(t.batch_size % num_devices == 0, "train.batch_size", t.batch_size,
        f"must be divisible by the {num_devices} devices")
  ga = t.grad_accum
  _need(ga >= 1 and (t.batch_size // num_devices) % ga == 0, "train.grad_accum", ga,
        f"an int >= 1 that divides the per-device batch {t.batch_size // num_devices}")
  _need(all(0 < d < 1 for d in t.ema_decays), "train.ema_decays", t.ema_decays,
        "each decay must be in (0, 1)")
  _need(t.ema_rampup >= 0, "train.ema_rampup", t.ema_rampup,
        "a ramp-up ratio >= 0 (0 = constant β; EDM and SiD use 0.05)")
  _need(t.log_every >= 1, "train.log_every", t.log_every, "must be >= 1")
  _need(cfg.mesh.fsdp >= 1 and num_devices % cfg.mesh.fsdp == 0, "mesh.fsdp", cfg.mesh.fsdp,
        f"must divide the {num_devices} devices")
  d = cfg.diffusion
  _need(0 < d.sigma_min < d.sigma_max, "diffusion.sigma_min/sigma_max",
        (d.sigma_min, d.sigma_max), "need 0 < sigma_min < sigma_max")
  _need(d.sigma_init > 0, "diffusion.sigma_init", d.sigma_init, "must be > 0")
  _need(d.sigma_data > 0, "diffusion.sigma_data", d.sigma_data, "must be > 0")
  _check_engine_limits(cfg)
  validation.check_fields(cfg, RULES)
  _need(cfg.diffusion.sigma_min < cfg.diffusion.sigma_max, "diffusion.sigma_min/sigma_max",
        (cfg.diffusion.sigma_min, cfg.diffusion.sigma_max), "need 0 < sigma_min < sigma_max")
  method = registry.get(m.name)
  if hasattr(method, "check_config"):
    method.check_config(cfg)
  registry.check_method_fields(cfg)  # Also the method fields the chosen method does not read.
  few_step.check_config(cfg, allow_steps=getattr(method, "FEW_STEP_STUDENTS", True))
  experiments.check_config(cfg)


V = validation
# σ beyond this is no noise level any teacher here is defined at (EDM 80, the DDPM-ε adapter
# 157); 1e39 overflows float32 to inf.
SIGMA_LIMIT = 1e5
TACTICS = ("replicate", "fsdp", "tp_out", "tp_in")
RULES = {  # The engine's fields beyond the checks in `check` (types: check_types).
    "seed": V.within(0, 2 ** 32 - 1, "an int"),
    "optim.*.eps": V.above(0),
    "optim.*.clip": V.at_least(0, "a global-norm clip (0 = off)"),
    "optim.*.clip_value": V.at_least(0, "an elementwise gradient clip (0 = off)"),
    "optim.*.nan_to_num": V.flag(),
    "optim.*.lr": V.within(0, 1, "a learning rate", lo_open=True),
    "train.batch_size": V.within(1, 1 << 20, "an int"),
    "train.grad_accum": V.at_least(1),
    "train.eval_every": V.at_least(0, "an int (0 = only the final evaluation)"),
    "train.ema_decays": V.each(V.within(0, 1, "a decay", lo_open=True, hi_open=True),
                               distinct=True),
    "mesh.data": V.Rule(lambda v: v == -1 or v >= 1, "-1 (all remaining devices) or an int >= 1"),
    "mesh.tensor": V.at_least(1),
    "mesh.default_tactic": V.one_of(*TACTICS),
    "mesh.rules": V.each(V.Rule(lambda r: len(r) == 2 and isinstance(r[0], str)
                                and r[1] in TACTICS, f"a pair (regex on the param path, one of "
                                f"{TACTICS})")),
    "mesh.fsdp_min_size": V.at_least(0),
    **{f"diffusion.{k}": V.within(0, SIGMA_LIMIT, "a noise level", lo_open=True, hi_open=True)
       for k in ("sigma_min", "sigma_max", "sigma_data", "sigma_init")},
    "eval.num_samples": V.within(1, 10 ** 7, "an int (samples per evaluation)"),
    "eval.fid_batch": V.at_least(1),
}


def _is_int(v) -> bool:
  return isinstance(v, int) and not isinstance(v, bool)


def _finite_number(v) -> bool:
  return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _check_engine_limits(cfg) -> None:
  """Values that type-check but cannot work: retention that would delete every checkpoint, a
  non-finite halt that can never trigger, infinite noise levels, an unknown evaluation track."""
  t = cfg.train
  _need(_is_int(t.keep_checkpoints) and t.keep_checkpoints >= 1, "train.keep_checkpoints",
        t.keep_checkpoints, "an int >= 1 (orbax keeps this many newest steps and deletes the rest; "
        "0 would delete every checkpoint, including earlier runs' in the workdir)")
  _need(_is_int(t.ckpt_every) and t.ckpt_every >= 0, "train.ckpt_every", t.ckpt_every,
        "an int >= 0 (0: only the final step)")
  _need(_is_int(t.max_nonfinite_streak) and t.max_nonfinite_streak >= 1,
        "train.max_nonfinite_streak", t.max_nonfinite_streak,
        "an int >= 1 (non-finite steps in a row before the run halts)")
  for k in ("restart_from_scratch", "adopt_unverified_checkpoints"):
    _need(isinstance(t[k], bool), f"train.{k}", t[k], "True or False")
  for k in ("sigma_min", "sigma_max", "sigma_data", "sigma_init"):  # Required (ENGINE_REQUIRED).
    v = cfg.diffusion[k]
    _need(_finite_number(v), f"diffusion.{k}", v, "a finite number")
  ev, decays = cfg.eval.params, tuple(t.ema_decays)
  try:
    ok = ev == "raw" or float(ev) in [float(x) for x in decays]
  except (TypeError, ValueError):
    ok = False
  _need(ok, "eval.params", ev, f"'raw' or one of train.ema_decays {decays} (e.g. '{decays[0]}')"
        if decays else "'raw' (train.ema_decays is empty)")



# ----------------------------------------------------------------------------- field types
# Every field has the type of its default: the union, per teacher kind, of the configs defaults.py
# builds and of every method's method_config, plus the optional fields no default config sets
# (_OPTIONAL: config_defaults.ENGINE's, with type examples where the default shows too little). An
# int is accepted where a float is expected; floats must be finite unless a default is inf.
# Blocks whose keys are constructor arguments of a network are typed but left open: their owners
# (experiments/image.py, experiments/t2i.py, experiments/t2i_text.py) check their keys.
_OPEN_BLOCKS = ("teacher.precond_kwargs", "teacher.pixart_config", "teacher.text_encoder",
                "teacher.schedule")
_OPTIONAL = {**{p: v for p, v in config_defaults.ENGINE.items() if "*" not in p},
             "teacher.schedule": None,  # None-able: the teacher's own schedule (teachers/pixart).
             # A type example (element pairs); config_defaults.ENGINE's default is ().
             "optim.generator.lr_scales": (("", 1.0),), "optim.fake_score.lr_scales": (("", 1.0),),
             "optim.discriminator.lr_scales": (("", 1.0),),
             # Typed for the toy's student block too, so its check names the kinds that read it.
             "student.init_checkpoint": ""}


def _kind(v) -> str:
  if v is None:
    return "none"
  if isinstance(v, bool):
    return "bool"
  if isinstance(v, numbers.Integral):
    return "int"
  if isinstance(v, numbers.Real):
    return "float"
  if isinstance(v, str):
    return "str"
  if isinstance(v, (tuple, list)):
    return "seq"
  if hasattr(v, "keys"):
    return "dict"
  return type(v).__name__


class _Spec:
  """What the defaults say about one field: its kinds, its elements' kinds, whether inf occurs."""

  def __init__(self):
    self.kinds, self.elems, self.inf = set(), set(), False

  def add(self, v) -> None:
    k = _kind(v)
    self.kinds.add(k)
    if k == "float" and math.isinf(v):
      self.inf = True
    if k == "seq":
      self.elems.update(_kind(x) for x in v)


def _flatten(cfg, prefix: str, out: dict) -> None:
  for k, v in cfg.items():
    path = prefix + k
    out.setdefault(path, _Spec()).add(v)
    if hasattr(v, "keys"):
      _flatten(v, path + ".", out)


@functools.lru_cache(maxsize=None)
def _reference(kind: str) -> dict:
  """{path: _Spec} of every field a config with teacher.kind `kind` may have."""
  # pylint: disable=import-outside-toplevel
  import ml_collections
  from fdistill_jax import defaults
  from fdistill_jax.methods import dmd, fdistill, kd, progressive, sid, sim, uni_instruct
  builders = teachers.get(kind).default_builders()
  out: dict = {}
  for build in builders:
    _flatten(build(), "", out)
  methods = (fdistill.method_config(), sid.method_config(), sim.method_config(),
             kd.method_config(), dmd.method_config(fdistill.method_config()),
             progressive.method_config(), uni_instruct.method_config(), defaults.image().method,
             defaults.digits_t2i_teacher().method)
  for block in methods:
    _flatten(ml_collections.ConfigDict({"method": block}), "", out)
  for path, v in _OPTIONAL.items():
    if path.rsplit(".", 1)[0] in out or "." not in path:
      out.setdefault(path, _Spec()).add(v)
  return out


_WORDS = {"bool": "True or False", "int": "an int", "float": "a finite number", "str": "a string",
          "seq": "a tuple", "dict": "a block of fields"}


def _fits(v, kinds: set, inf: bool) -> bool:
  k = _kind(v)
  if "none" in kinds:
    return True
  if k == "int" and "float" in kinds:
    k = "float"
  if k not in kinds:
    return False
  if k == "float":
    return math.isfinite(v) or (inf and v == math.inf)
  return True


def _describe(spec: _Spec) -> str:
  kinds = spec.kinds - {"none"}
  if "float" in kinds:
    kinds.discard("int")
  words = " or ".join(_WORDS.get(k, k) for k in sorted(kinds))
  if spec.inf:
    words += " (or inf)"
  if "seq" in kinds and spec.elems - {"none"}:
    elems = spec.elems - {"none"} - ({"int"} if "float" in spec.elems else set())
    words += " of " + " or ".join(_WORDS.get(e, e).split(" ", 1)[-1] + "s" for e in sorted(elems))
  return words


def check_types(cfg) -> None:
  """Raises ConfigError naming a field whose type differs from its default's (a string where an
  int is expected, a bool for a float, NaN or inf where a finite number is expected, a tuple of
  strings for a tuple of numbers) or a field no default config has (a misspelt key)."""
  kind = cfg.teacher.kind
  ref = _reference(kind)

  def walk(block, prefix: str) -> None:
    for k, v in block.items():
      path = prefix + k
      spec = ref.get(path)
      if spec is None:
        if any(prefix.startswith(b + ".") for b in _OPEN_BLOCKS):
          continue
        parent = prefix[:-1]
        known = sorted(p[len(prefix):] for p in ref if p.startswith(prefix)
                       and "." not in p[len(prefix):])
        close = difflib.get_close_matches(k, known, n=3)
        hint = f"; did you mean {' or '.join(map(repr, close))}?" if close else ""
        listing = f" (fields of config.{parent}: {known})" if parent and len(known) <= 30 else ""
        _need(False, path, v.to_dict() if hasattr(v, "to_dict") else v, f"not a field of a teacher.kind={kind!r} config{hint}{listing}")
      _need(_fits(v, spec.kinds, spec.inf), path, v, f"must be {_describe(spec)}")
      if _kind(v) == "seq" and spec.elems - {"none"}:
        _need(all(_fits(x, spec.elems, False) for x in v), path, v, f"must be {_describe(spec)}")
      if _kind(v) == "dict":
        walk(v, path + ".")

  walk(cfg, "")


# ----------------------------------------------------------------------------- required fields
# A config missing a field that is read without a default fails here, naming the dotted path and
# what is expected, instead of an AttributeError ('key not found') minutes later. Required:
# * the engine's fields below, and optim.<net> (with _OPTIM_REQUIRED) for each network the
#   method trains (the discriminator only while disc.enabled);
# * the chosen method's (registry.required_fields: each method module's REQUIRED);
# * of the other blocks, every field that every default config of the teacher kind has
#   (_reference's builders), except the optional ones `check` fills in first
#   (config_defaults.table), those whose name is read with a default somewhere (_DEFAULTED:
#   `.get("name", ...)` or `"name" in ...`, where absence means something;
#   tests/test_config_probe.py re-derives it from the source) and the keys of the open blocks
#   (their owners check them).
ENGINE_REQUIRED = (
    "seed", "train.steps", "train.batch_size", "train.ema_decays", "train.log_every",
    "train.eval_every", "train.keep_checkpoints", "train.ckpt_every",
    "train.max_nonfinite_streak", "train.async_checkpoints", "mesh.fsdp", "mesh.data",
    "diffusion.sigma_min", "diffusion.sigma_max", "diffusion.sigma_data", "diffusion.sigma_init",
    "eval.params", "eval.num_samples")
_OPTIM_REQUIRED = ("lr", "b1", "b2", "eps", "weight_decay", "clip")
_DEFAULTED = frozenset((
    "adopt_unverified_checkpoints", "alpha", "attention_head_dim", "augment_dim", "augment_p",
    "cache_dir", "caption_channels", "checkpoint", "clip_value", "cond_drop", "critic_steps",
    "default_tactic", "disc_features", "divergence", "dm_normalize", "dropout", "dsm_weighting",
    "ema_rampup", "fake_score_loss_scale", "fake_score_reduction", "fake_sigma_law", "few_step",
    "fid_reference", "fid_weights", "final_eval", "fsdp_min_size", "generator", "grad_accum",
    "guidance_input", "guidance_scale", "guidance_sigma_max", "in_channels", "init_checkpoint",
    "kappa_fake", "kappa_real", "kappa_train_fake", "kind", "label_dim", "loss_weighting",
    "lr_scales",
    "max_length", "metric", "model_type", "nan_to_num", "optim", "num_attention_heads",
    "num_layers",
    "out_channels", "pixart_config", "precond_kwargs", "prompt_cache", "prompts", "r1_weight",
    "ratio_bin_space", "remat", "restart_from_scratch", "rules", "schedule", "score_raw",
    "sigma_data", "sigma_max", "sigma_min", "source", "steps", "student_steps", "teacher",
    "tensor", "tensorboard", "text_encoder", "train_prompts", "vae"))


@functools.lru_cache(maxsize=None)
def _common(kind: str) -> tuple[str, ...]:
  """Fields outside method and optim that every default config of teacher kind `kind` has."""
  builders = teachers.get(kind).default_builders()
  optional = set(config_defaults.table(kind))  # optim is left out below anyway.
  common = None
  for build in builders:
    flat: dict = {}
    _flatten(build(), "", flat)
    common = set(flat) if common is None else common & set(flat)
  return tuple(sorted(
      p for p in common if p.split(".", 1)[0] not in ("method", "optim")
      and p not in optional and p.rsplit(".", 1)[-1] not in _DEFAULTED
      and not any(p.startswith(b + ".") for b in _OPEN_BLOCKS)))


def _has(cfg, path: str) -> bool:
  node = cfg
  for k in path.split("."):
    if not hasattr(node, "keys") or k not in node:
      return False
    node = node[k]
  return True


def _expected(path: str, kind: str) -> str:
  """What `path` should hold: its range rule where an owner states one, else its type."""
  # pylint: disable=import-outside-toplevel
  tables = [RULES] + teachers.get(kind).rule_tables()
  tables += [registry.field_rules(n) for n in registry.names()]
  generic = "optim.*." + path.rsplit(".", 1)[-1] if path.startswith("optim.") else None
  for table in tables:
    for key in (path, generic):
      if key in table:
        return table[key].allowed
  spec = _reference(kind).get(path)
  return _describe(spec) if spec is not None else "a value (see defaults.py)"


def required_fields(cfg) -> tuple[str, ...]:
  """The dotted paths `cfg` must have (see the comment above ENGINE_REQUIRED)."""
  kind = cfg.teacher.kind
  paths = list(ENGINE_REQUIRED) + list(_common(kind))
  name = cfg.get("method", {}).get("name")
  if name in registry.names():
    method = registry.get(name)
    nets = list(method.GENERATOR_NETS) + [
        n for n in method.CRITIC_NETS
        if n != "discriminator" or cfg.get("disc", {}).get("enabled", False)]
    paths += [f"optim.{n}.{k}" for n in nets for k in _OPTIM_REQUIRED]
    paths += registry.required_fields(name)
  return tuple(dict.fromkeys(paths))


def check_required(cfg) -> None:
  """Raises ConfigError naming the first required field (dotted path) `cfg` lacks and what it
  should hold."""
  kind = cfg.teacher.kind
  _need(_has(cfg, "method.name") and cfg.method.name in registry.names(), "method.name",
        cfg.get("method", {}).get("name"), f"allowed: {registry.names()}")
  for path in required_fields(cfg):
    if not _has(cfg, path):
      parent = path.rsplit(".", 1)[0] if "." in path else ""
      where = f"; config.{parent} has {sorted(_get(cfg, parent))}" if parent and _has(
          cfg, parent) else ""
      raise ConfigError(
          f"config.{path} is missing: expected {_expected(path, kind)} (required by "
          f"{_owner(path, cfg)}; defaults.py sets it in every {kind!r} config){where}")


def _get(cfg, path: str):
  node = cfg
  for k in path.split("."):
    node = node[k]
  return list(node.keys()) if hasattr(node, "keys") else []


def _owner(path: str, cfg) -> str:
  if path.startswith("method."):
    return f"method {cfg.method.name}"
  if path in ENGINE_REQUIRED or path.startswith("optim."):
    return "the training engine"
  return f"teacher.kind {cfg.teacher.kind!r}"
