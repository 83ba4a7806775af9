"""The error every config check raises, and its one-line helper.

Modules that own a config block (each method, data source and teacher kind) validate their own
fields with `need`; config_checks.check runs the engine-wide checks and calls theirs.
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple


class ConfigError(ValueError):
  pass


def need(cond: bool, field: str, value, allowed: str) -> None:
  """Raises ConfigError naming config.<field>, its value and what is allowed, unless cond."""
  if not cond:
    raise ConfigError(f"config.{field}={value!r} is invalid: {allowed}")


# ----------------------------------------------------------------------------- declarative rules
# An owner lists its fields as {"block.field": Rule} and calls check_fields(cfg, RULES). Types
# and finiteness are checked before any rule (config_checks.check_types, against the owners'
# default configs), so a rule only states the allowed range; a '*' in a path matches every key
# of that block (e.g. "optim.*.lr"), and a field absent from the config is skipped.
class Rule(NamedTuple):
  ok: Callable[[Any], bool]
  allowed: str


def _phrase(what: str, bound: str) -> str:
  """'an int (pixels)', 'in [1, 8192]' -> 'an int in [1, 8192] (pixels)'."""
  if what.endswith(")") and " (" in what:
    base, note = what.split(" (", 1)
    return f"{base} {bound} ({note}"
  return f"{what} {bound}"


def at_least(lo, what: str = "an int") -> Rule:
  return Rule(lambda v: v >= lo, _phrase(what, f">= {lo}"))


def above(lo, what: str = "a finite number") -> Rule:
  return Rule(lambda v: v > lo, _phrase(what, f"> {lo}"))


def within(lo, hi, what: str = "a finite number", *, lo_open: bool = False,
           hi_open: bool = False) -> Rule:
  def ok(v):
    return (lo < v if lo_open else lo <= v) and (v < hi if hi_open else v <= hi)
  return Rule(ok, _phrase(what, f"in {'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}"))


def probability(*, hi_open: bool = False) -> Rule:
  return within(0, 1, "a probability", hi_open=hi_open)


def one_of(*values) -> Rule:
  return Rule(lambda v: v in values, f"allowed: {values}")


def each(rule: Rule, *, nonempty: bool = False, distinct: bool = False) -> Rule:
  def ok(v):
    return ((len(v) > 0 or not nonempty) and (not distinct or len(set(v)) == len(v))
            and all(rule.ok(x) for x in v))
  extra = ", at least one" if nonempty else ""
  extra += ", no repeats" if distinct else ""
  return Rule(ok, f"a tuple, each {rule.allowed}{extra}")


def flag() -> Rule:
  return Rule(lambda v: isinstance(v, bool), "True or False")


def text(what: str = "a string") -> Rule:
  return Rule(lambda v: isinstance(v, str), what)


def optional(rule: Rule) -> Rule:
  """None, or what `rule` allows."""
  return Rule(lambda v: v is None or rule.ok(v), f"None or {rule.allowed}")


def _paths(cfg, path: str, prefix: str = ""):
  """(full path, value) of every field of cfg matching path ('*' = any key of that block)."""
  head, _, rest = path.partition(".")
  keys = list(cfg.keys()) if head == "*" else [head]
  for k in keys:
    if k not in cfg:
      continue
    v = cfg[k]
    if not rest:
      yield prefix + k, v
    elif hasattr(v, "keys"):
      yield from _paths(v, rest, f"{prefix}{k}.")


def check_fields(cfg, rules: dict) -> None:
  """Raises ConfigError naming the first field of cfg that breaks its rule."""
  for path, rule in rules.items():
    for field, v in _paths(cfg, path):
      try:
        ok = bool(rule.ok(v))
      except (TypeError, ValueError):
        ok = False
      need(ok, field, v, rule.allowed)
