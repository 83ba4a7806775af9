"""The error every config check raises, and its one-line helper.

Modules that own a config block (each method, data source and teacher kind) validate their own
fields with `need`; config_checks.check runs the engine-wide checks and calls theirs.
"""
from __future__ import annotations


class ConfigError(ValueError):
  pass


def need(cond: bool, field: str, value, allowed: str) -> None:
  """Raises ConfigError naming config.<field>, its value and what is allowed, unless cond."""
  if not cond:
    raise ConfigError(f"config.{field}={value!r} is invalid: {allowed}")
