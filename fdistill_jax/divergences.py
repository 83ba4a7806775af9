"""The f-divergence registry of f-distill: f(r) and the weighting h(r) ∝ f''(r)·r².

D_f(p‖q) = ∫ q f(p/q) with f convex, f(1) = 0, and r = p_t/q_t (teacher over student). The
f-distill generator gradient is the VSD/DMD gradient weighted per sample by h(r) = f''(r)·r²
(Xu, Nie & Vahdat 2025, Thm. 1).

`h` is the weighting NVIDIA FastGen uses (`all_f_div_weighting_function`), so that our numbers
agree with the official implementation. It equals f''(r)·r² up to a positive constant, which the
batch normalisation h / mean(h) removes; `h_scale` is that constant (f''(r)·r² = h_scale · h(r)):
  sh (squared Hellinger): f = 1 − √r gives ¼√r; FastGen uses √r          → h_scale = 1/4
  neyman (Neyman χ²):     f = (1 − r)²/r gives 2/r; FastGen uses 1/r     → h_scale = 2
all others: h_scale = 1. rkl has h ≡ 1 as an array of r's shape (FastGen returns a 0-d tensor
there and crashes in its normalisation; see tests/test_divergences.py).

Adding a divergence is one `_register(...)` entry (constant_weight=True when h ≡ 1).
`get(name).f(r)` / `.h(r)` accept numpy or jax arrays (numpy in, numpy out).
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import jax.numpy as jnp
import numpy as np


def _xp(r):
  return np if isinstance(r, (np.ndarray, np.generic, float, int)) else jnp


@dataclasses.dataclass(frozen=True)
class Divergence:
  """One f-divergence. f and h are elementwise functions of the density ratio r = p/q > 0."""
  name: str
  long_name: str
  _f: Callable
  _h: Callable
  h_scale: float = 1.0
  mode_seeking: str = ""
  constant_weight: bool = False  # h ≡ 1 (rkl): f-distill needs no density ratio for the weight.

  def f(self, r):
    """f(r), elementwise (float)."""
    return self._f(_xp(r), r)

  def h(self, r):
    """Weighting h(r) (FastGen's constant convention), elementwise, same shape as r."""
    return self._h(_xp(r), r)


_REGISTRY: dict[str, Divergence] = {}


def _register(d: Divergence) -> None:
  _REGISTRY[d.name] = d


_register(Divergence("rkl", "reverse KL", lambda xp, r: -xp.log(r),
                     lambda xp, r: xp.ones_like(r), 1.0, "yes", constant_weight=True))
_register(Divergence("kl", "forward KL", lambda xp, r: r * xp.log(r),
                     lambda xp, r: r, 1.0, "no"))
_register(Divergence("js", "Jensen-Shannon",
                     lambda xp, r: r * xp.log(r) - (r + 1) * xp.log((r + 1) / 2),
                     lambda xp, r: 1 - 1 / (1 + r), 1.0, "medium"))
_register(Divergence("sf", "softened reverse KL",
                     lambda xp, r: (r + 1) * xp.log(0.5 + 1 / (2 * r)),
                     lambda xp, r: 1 / (1 + r), 1.0, "yes"))
_register(Divergence("sh", "squared Hellinger", lambda xp, r: 1 - xp.sqrt(r),
                     lambda xp, r: r ** 0.5, 0.25, "medium"))
_register(Divergence("jf", "Jeffreys", lambda xp, r: (r - 1) * xp.log(r),
                     lambda xp, r: 1 + r, 1.0, "no"))
_register(Divergence("neyman", "Neyman chi-squared", lambda xp, r: (1 - r) ** 2 / r,
                     lambda xp, r: 1 / xp.maximum(r, 1e-8), 2.0, "no"))

NAMES: tuple[str, ...] = tuple(_REGISTRY)


def get(name: str) -> Divergence:
  """The divergence registered under `name` (one of NAMES)."""
  try:
    return _REGISTRY[name]
  except KeyError:
    raise ValueError(f"unknown divergence {name!r}; allowed: {', '.join(NAMES)}") from None
