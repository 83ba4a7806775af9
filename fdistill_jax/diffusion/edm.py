"""EDM σ conventions: Karras grids, preconditioning coefficients, time draws.

Everything here follows the VE convention x_σ = x0 + σ ε used by EDM (Karras et al. 2022).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

SIGMA_MIN = 0.002
SIGMA_MAX = 80.0
RHO = 7.0
SIGMA_DATA = 0.5


def karras_sigmas(num_steps: int, sigma_min: float = SIGMA_MIN, sigma_max: float = SIGMA_MAX,
                  rho: float = RHO, append_zero: bool = True, dtype=np.float64) -> np.ndarray:
  """Karras ρ-schedule, descending from sigma_max to sigma_min (then 0 if append_zero).

  Returns a numpy array of shape [num_steps (+1)] in `dtype` (float64 as in EDM's sampler).
  """
  if num_steps < 1:
    raise ValueError(f"num_steps must be >= 1, got {num_steps}")
  i = np.arange(num_steps, dtype=np.float64)
  denom = max(num_steps - 1, 1)
  s = (sigma_max ** (1 / rho) + i / denom * (sigma_min ** (1 / rho) - sigma_max ** (1 / rho))) ** rho
  if append_zero:
    s = np.concatenate([s, np.zeros(1)])
  return s.astype(dtype)


def karras_levels_ascending(num_levels: int = 1000, sigma_min: float = SIGMA_MIN,
                            sigma_max: float = SIGMA_MAX, rho: float = RHO) -> np.ndarray:
  """The 1000-level ascending Karras grid that FastGen/DMD2 index into, float64 [num_levels]."""
  return karras_sigmas(num_levels, sigma_min, sigma_max, rho, append_zero=False)[::-1].copy()


def sample_karras_index_sigma(key: jax.Array, shape: tuple[int, ...], num_levels: int = 1000,
                              lo_frac: float = 0.002, hi_frac: float = 0.998,
                              sigma_min: float = SIGMA_MIN, sigma_max: float = SIGMA_MAX,
                              rho: float = RHO) -> jax.Array:
  """σ from a uniform index over an ascending Karras grid restricted to [lo_frac, hi_frac]·levels.

  FastGen's "polynomial" sample_t for EDM (0.2%–99.8%) and DMD2's DM time (2%–98%).
  Returns float32 of `shape`.
  """
  grid = jnp.asarray(karras_levels_ascending(num_levels, sigma_min, sigma_max, rho), jnp.float32)
  lo = int(np.floor(lo_frac * num_levels))
  hi = int(np.ceil(hi_frac * num_levels))
  idx = jax.random.randint(key, shape, lo, max(hi, lo + 1))
  return grid[idx]


def sample_lognormal_sigma(key: jax.Array, shape: tuple[int, ...], p_mean: float = -1.2,
                           p_std: float = 1.2) -> jax.Array:
  """EDM training draw ln σ ~ N(p_mean, p_std²). float32 of `shape`."""
  return jnp.exp(p_mean + p_std * jax.random.normal(key, shape))


def sample_truncated_karras_sigma(key: jax.Array, shape: tuple[int, ...], t_max: float = 800.0,
                                  sigma_min: float = SIGMA_MIN, sigma_max: float = SIGMA_MAX,
                                  rho: float = RHO) -> jax.Array:
  """SiD's generator-side draw: u ~ U[0, t_max/1000], σ on the Karras curve at 1 − u.

  σ = (σ_max^{1/ρ} + (1 − u)(σ_min^{1/ρ} − σ_max^{1/ρ}))^ρ ∈ [σ_min, σ(0.2)≈24.4] for t_max=800.
  """
  u = jax.random.uniform(key, shape, maxval=t_max / 1000.0)
  a, b = sigma_max ** (1 / rho), sigma_min ** (1 / rho)
  return (a + (1.0 - u) * (b - a)) ** rho


def edm_precond_coeffs(sigma, sigma_data: float = SIGMA_DATA):
  """(c_skip, c_out, c_in, c_noise) of EDM preconditioning D = c_skip x + c_out F(c_in x, c_noise)."""
  sigma = jnp.asarray(sigma)
  s2, d2 = sigma ** 2, sigma_data ** 2
  c_skip = d2 / (s2 + d2)
  c_out = sigma * sigma_data / jnp.sqrt(s2 + d2)
  c_in = 1.0 / jnp.sqrt(d2 + s2)
  c_noise = jnp.log(sigma) / 4.0
  return c_skip, c_out, c_in, c_noise


def edm_loss_weight(sigma, sigma_data: float = SIGMA_DATA):
  """λ(σ) = (σ² + σ_d²)/(σ σ_d)² of the EDM loss."""
  return (sigma ** 2 + sigma_data ** 2) / (sigma * sigma_data) ** 2


def expand_like(v: jax.Array, x: jax.Array) -> jax.Array:
  """Reshape a per-sample vector [B] (or scalar) to broadcast against x [B, ...]."""
  v = jnp.asarray(v)
  if v.ndim == 0:
    return v
  return v.reshape(v.shape + (1,) * (x.ndim - v.ndim))
