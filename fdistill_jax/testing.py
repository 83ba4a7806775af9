"""Locating the shared reference fixtures (EDM and FastGen outputs) for tests and benchmarks.

One place decides where ../shared/fixtures lives: the env var FDISTILL_FIXTURES wins, otherwise
the `shared/fixtures` folder beside the repository checkout. A user's clone has none, and tests
that need it skip with the reason.
"""
from __future__ import annotations

import os
import pathlib

ENV_VAR = "FDISTILL_FIXTURES"
_REPO = pathlib.Path(__file__).resolve().parents[1]


def fixtures_dir() -> pathlib.Path | None:
  """The fixtures folder, or None if it is absent."""
  env = os.environ.get(ENV_VAR)
  candidates = [pathlib.Path(env)] if env else [_REPO.parent / "shared" / "fixtures",
                                                 _REPO / "shared" / "fixtures"]
  for c in candidates:
    if c.is_dir():
      return c
  return None


def missing_reason() -> str:
  return (f"reference fixtures not found: set {ENV_VAR} or place the project's shared/fixtures "
          f"beside the checkout ({_REPO.parent / 'shared' / 'fixtures'})")
