"""What the engine hands a method: the networks as pure functions of their parameters.

A method never builds networks. It receives a `Nets` whose functions close over the (static)
Flax modules and take parameters explicitly, so losses stay pure functions of pytrees:

  student(params, x, sigma, labels, *, key=None, features=False) -> x0 | (x0, feats)
      the student architecture (generator and fake score share it: both start from the teacher);
  teacher(frozen, x, sigma, labels, *, features=False) -> x0 | (x0, feats)
      the frozen teacher denoiser; features come from the frozen feature network (the teacher
      itself for EDM teachers, the pretrained denoiser for analytic teachers);
  disc(params, feats, sigma) -> logits [B, heads];
  sigma_init: the generator's input noise level: x_g = student(θ, σ_init·z, σ_init, labels).
Shapes: x [B, ...data_shape]; sigma [B] (or 0-d); labels [B, label_dim] (label_dim may be 0).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class Nets:
  student: Callable[..., Any]
  teacher: Callable[..., Any]
  disc: Callable[..., Any] | None
  sigma_init: float
  data_shape: tuple[int, ...]
  label_dim: int = 0

  def generate(self, gen_params, z: jax.Array, labels: jax.Array, key=None) -> jax.Array:
    """One-step generation x_g = G_θ(σ_init·z) at σ_init. z: [B, ...data_shape] standard normal."""
    sigma = jnp.full((z.shape[0],), self.sigma_init, jnp.float32)
    return self.student(gen_params, self.sigma_init * z, sigma, labels, key=key)
