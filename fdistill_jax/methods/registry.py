"""Method registry: config.method.name -> the module holding that method's losses.

A method module defines GENERATOR_NETS, CRITIC_NETS, init_extras(cfg),
generator_loss(params, frozen, batch, key, extras, nets, cfg) and critic_loss(...), each
returning (loss, (metrics, new_extras)); optionally method_config(**overrides) (its defaults),
check_config(cfg) (its own fields), prepare(cfg, exp, workdir) (an experiment hook) and
FEW_STEP_STUDENTS = False where config.few_step cannot apply (default True).
Adding a method is one file in methods/ and one line here.
"""
from __future__ import annotations

from fdistill_jax.methods import (dmd, edm_training, fdistill, kd, progressive, sid, sim,
                                  uni_instruct)

_METHODS = {
    "fdistill": fdistill,
    "edm_training": edm_training,
    "sid": sid,
    "sim": sim,
    "dmd": dmd,
    "kd": kd,
    "progressive": progressive,
    "uni_instruct": uni_instruct,
}


def names() -> tuple[str, ...]:
  return tuple(_METHODS)


def _modules(name: str) -> tuple:
  """The modules whose fields method `name` reads: its own and those it USES (dmd: fdistill, kd;
  sim: sid)."""
  mod = _METHODS[name]
  return (mod,) + tuple(getattr(mod, "USES", ()))


def field_rules(name: str) -> dict:
  """{'method.<field>': Rule} of every field method `name` reads."""
  out = {}
  for mod in reversed(_modules(name)):  # Its own rule wins over a shared one.
    out.update(getattr(mod, "FIELDS", {}))
  return out


def required_fields(name: str) -> tuple[str, ...]:
  """The method fields `name` reads without a default (its module's REQUIRED, which lists those
  of the modules it USES too), as 'method.<field>'."""
  return tuple(f"method.{k}" for k in sorted(set(getattr(_METHODS[name], "REQUIRED", ()))))


def check_method_fields(cfg) -> None:
  """Every field of cfg.method, read by the chosen method or not: the chosen method's rule for
  its own fields, and for a field it does not read (an f-distill block left in an edm_training
  config, a SiD field in a SIM config) the rule of a method that reads it (of any, where several
  do with different values). Raises ConfigError naming the field, the allowed values and whose
  field it is."""
  # pylint: disable=import-outside-toplevel
  from fdistill_jax import validation
  name = cfg.method.name
  own = field_rules(name)
  validation.check_fields(cfg, own)
  others: dict[str, list] = {}
  for other in _METHODS:
    for path, rule in field_rules(other).items():
      if path not in own:
        others.setdefault(path, []).append((other, rule))
  for path, owners in others.items():
    key = path.split(".", 1)[1]
    if key not in cfg.method:
      continue
    v = cfg.method[key]
    ok = False
    for _, rule in owners:
      try:
        ok = ok or bool(rule.ok(v))
      except (TypeError, ValueError):
        pass
    allowed = "; ".join(dict.fromkeys(r.allowed for _, r in owners))
    readers = ", ".join(dict.fromkeys(o for o, _ in owners))
    validation.need(ok, path, v, f"{allowed} (a field of method {readers}; method {name} does "
                    "not read it, but it is checked all the same: fix or remove it)")


def get(name: str):
  if name not in _METHODS:
    raise ValueError(f"config.method.name={name!r} is unknown; allowed: {', '.join(_METHODS)}")
  return _METHODS[name]
