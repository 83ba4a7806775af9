"""The noise-level laws the distillation methods draw σ from, and each law's CDF.

Laws (config.method.sigma_law for the generator / DM loss; SiD and SIM also
config.method.fake_sigma_law for the fake score, where 'generator' means the generator's law):
  'karras_index'      a uniform index over the ascending 1000-level Karras grid of
                      [diffusion.sigma_min, diffusion.sigma_max], restricted to
                      [method.time_lo, method.time_hi] of the levels (FastGen's EDM draw, DMD2's
                      2 %–98 %);
  'truncated_karras'  SiD's u ~ U[0, method.t_max / 1000], σ on the Karras curve at 1 − u;
  'uniform_t'         t uniform over the teacher's own timesteps between t(σ_min) and t(σ_max)
                      (the DDPM teachers' training law: DMD2-SD, SiD-LSG, PixArt-DMD and
                      FastGen-SD draw t uniformly); needs the teacher's time map (Nets.time);
  'lognormal'         ln σ ~ N(method.fake_p_mean, method.fake_p_std²) (EDM's training law).
`cdf(σ)` maps a draw to [0, 1] with uniform marginal for 'karras_index' (over the full grid),
'truncated_karras' and 'uniform_t'; f-distill's ratio normalisation bins σ in it
(method.ratio_bin_space = 'law') so that every bin holds the same share of the batch.
σ is float32 of the requested shape.
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from fdistill_jax.diffusion import edm

LAWS = ("karras_index", "truncated_karras", "uniform_t", "lognormal")


def draw(key: jax.Array, shape: tuple[int, ...], law: str, *, sigma_min: float,
         sigma_max: float, time_lo: float = 0.002, time_hi: float = 0.998, t_max: float = 800.0,
         p_mean: float = -1.2, p_std: float = 1.2, time: Any = None) -> jax.Array:
  """σ ~ law (module docstring); time: the teacher's time map (sigma_to_t / t_to_sigma)."""
  if law == "karras_index":
    return edm.sample_karras_index_sigma(key, shape, lo_frac=time_lo, hi_frac=time_hi,
                                         sigma_min=sigma_min, sigma_max=sigma_max)
  if law == "truncated_karras":
    return edm.sample_truncated_karras_sigma(key, shape, t_max=t_max, sigma_min=sigma_min,
                                             sigma_max=sigma_max)
  if law == "uniform_t":
    if time is None:
      raise ValueError("sigma_law='uniform_t' needs a teacher with a discrete time grid (a DDPM "
                       "teacher); EDM teachers use 'karras_index' or 'truncated_karras'")
    t_lo, t_hi = time.sigma_to_t(sigma_min), time.sigma_to_t(sigma_max)
    return time.t_to_sigma(jax.random.uniform(key, shape, minval=t_lo, maxval=t_hi))
  if law == "lognormal":
    return edm.sample_lognormal_sigma(key, shape, p_mean, p_std)
  raise ValueError(f"sigma law {law!r}; allowed: {LAWS}")


def cdf(sigma: jax.Array, law: str, *, sigma_min: float, sigma_max: float,
        t_max: float = 800.0, time: Any = None) -> jax.Array:
  """u ∈ [0, 1] of σ under the law's own coordinate (uniform for the draws above; Karras u for
  'karras_index' over its full grid, t for 'uniform_t'); float32 of sigma's shape."""
  s = jnp.asarray(sigma, jnp.float32)
  if law in ("karras_index", "truncated_karras"):
    rho = edm.RHO
    a, b = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    u = (s ** (1 / rho) - a) / (b - a)
    if law == "truncated_karras":  # u ~ U[0, t_max/1000] is this u: rescale to [0, 1].
      u = u / (t_max / 1000.0)
    return jnp.clip(u, 0.0, 1.0)
  if law == "uniform_t":
    t_lo, t_hi = time.sigma_to_t(sigma_min), time.sigma_to_t(sigma_max)
    return jnp.clip((time.sigma_to_t(s) - t_lo) / (t_hi - t_lo), 0.0, 1.0)
  if law == "lognormal":
    raise ValueError("ratio bins in 'law' space need a bounded law, not 'lognormal'")
  raise ValueError(f"sigma law {law!r}; allowed: {LAWS}")
