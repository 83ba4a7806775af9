"""Deterministic/stochastic Heun and Euler samplers over the EDM σ grid, for any denoiser.

A denoiser is `denoise(x, sigma) -> x0_hat`, where x has a leading batch axis and sigma is a 0-d
array (EDM's sampler passes one σ for the whole batch). Labels and parameters are closed over.
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from fdistill_jax.diffusion import edm

Denoiser = Callable[[jax.Array, jax.Array], jax.Array]


def _heun_body(denoise: Denoiser, x: jax.Array, t_cur, t_next, second_order: bool):
  d_cur = (x - denoise(x, t_cur)) / t_cur
  x_next = x + (t_next - t_cur) * d_cur
  if not second_order:
    return x_next

  def corrector(_):
    d_prime = (x_next - denoise(x_next, t_next)) / t_next
    return x + (t_next - t_cur) * (0.5 * d_cur + 0.5 * d_prime)

  return jax.lax.cond(t_next > 0, corrector, lambda _: x_next, None)


def edm_sampler(denoise: Denoiser, latents: jax.Array, num_steps: int = 18,
                sigma_min: float = edm.SIGMA_MIN, sigma_max: float = edm.SIGMA_MAX,
                rho: float = edm.RHO, *, second_order: bool = True, s_churn: float = 0.0,
                s_min: float = 0.0, s_max: float = float("inf"), s_noise: float = 1.0,
                key: jax.Array | None = None, state_dtype=None) -> jax.Array:
  """EDM Algorithm 2: Heun (second_order) or Euler, with optional stochastic churn.

  latents: standard normal, shape [B, ...]; x_0 = σ_0 · latents.
  NFE = 2·num_steps − 1 for Heun, num_steps for Euler.
  state_dtype: dtype of the ODE state (EDM keeps it in float64; needs jax x64). Defaults to the
  latents' dtype. Returns the final state in state_dtype.
  """
  state_dtype = state_dtype or latents.dtype
  t_steps = jnp.asarray(edm.karras_sigmas(num_steps, sigma_min, sigma_max, rho), state_dtype)
  stochastic = s_churn > 0
  if stochastic and key is None:
    raise ValueError("edm_sampler: s_churn > 0 needs a PRNG key")
  gamma_max = min(s_churn / num_steps, np.sqrt(2.0) - 1.0) if stochastic else 0.0

  def body(i, carry):
    x, k = carry
    t_cur, t_next = t_steps[i], t_steps[i + 1]
    if stochastic:
      gamma = jnp.where((t_cur >= s_min) & (t_cur <= s_max), gamma_max, 0.0)
      t_hat = t_cur + gamma * t_cur
      k, sub = jax.random.split(k)
      noise = jax.random.normal(sub, x.shape, x.dtype) * s_noise
      x = x + jnp.sqrt(jnp.maximum(t_hat ** 2 - t_cur ** 2, 0.0)) * noise
      t_cur = t_hat
    x = _heun_body(denoise, x, t_cur, t_next, second_order)
    return x, k

  x0 = latents.astype(state_dtype) * t_steps[0]
  k0 = key if key is not None else jax.random.PRNGKey(0)
  x, _ = jax.lax.fori_loop(0, num_steps, body, (x0, k0))
  return x


def heun_nfe(num_steps: int) -> int:
  return 2 * num_steps - 1


def steps_for_nfe(nfe: int) -> int:
  """Number of Heun steps giving `nfe` evaluations (nfe must be odd), e.g. 35 -> 18."""
  if nfe % 2 == 0:
    raise ValueError(f"Heun NFE is odd (2N-1); got {nfe}")
  return (nfe + 1) // 2
