"""The networks contract: what an experiment hands the engine and the methods.

A method never builds networks. It receives a `Nets` whose functions close over the (static)
Flax modules and take parameters explicitly, so losses stay pure functions of pytrees:

  student(params, x, sigma, cond, *, key=None, features=False) -> x0 | (x0, feats)
      the student architecture (generator and fake score share it: both start from the teacher);
      EDM image students also take augment_labels [B, 9] (None = none; diffusion/augment.py);
  teacher(frozen, x, sigma, cond, *, features=False) -> x0 | (x0, feats)
      the frozen teacher denoiser in EDM's convention; features come from the frozen feature
      network (the teacher itself for EDM teachers, the pretrained denoiser for analytic ones);
  disc(params, feats, sigma) -> logits [B, heads];
  sigma_init: the generator's input noise level: x_g = student(θ, σ_init·z, σ_init, cond);
  cond: the problem's conditioning.ConditionSpec (null condition, drops, guidance);
  time: the teacher's own time map (sigma_to_t / t_to_sigma over its training grid, e.g. a DDPM
      schedule) for σ laws uniform in its timesteps (diffusion/sigma_laws.py), None for EDM and
      analytic teachers.
Shapes: x [B, ...data_shape]; sigma [B] (or 0-d); cond a pytree of [B, ...] arrays (one-hot
labels [B, C], text {embeddings [B, L, D], mask [B, L]}, or [B, 0] for none).
This module sits below the engine and the methods; both import it, it imports neither.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp

from fdistill_jax import conditioning


@dataclasses.dataclass(frozen=True)
class Nets:
  student: Callable[..., Any]
  teacher: Callable[..., Any]
  disc: Callable[..., Any] | None
  sigma_init: float
  data_shape: tuple[int, ...]
  cond: conditioning.ConditionSpec = conditioning.Unconditional()
  time: Any = None

  def generate(self, gen_params, z: jax.Array, cond, key=None) -> jax.Array:
    """One-step generation x_g = G_θ(σ_init·z) at σ_init. z: [B, ...data_shape] standard normal."""
    sigma = jnp.full((z.shape[0],), self.sigma_init, jnp.float32)
    return self.student(gen_params, self.sigma_init * z, sigma, cond, key=key)
