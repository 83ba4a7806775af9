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
  chain: a few-step student's steps and training rule (diffusion/few_step.py), None = one step;
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
from fdistill_jax.diffusion import few_step


@dataclasses.dataclass(frozen=True)
class Nets:
  student: Callable[..., Any]
  teacher: Callable[..., Any]
  disc: Callable[..., Any] | None
  sigma_init: float
  data_shape: tuple[int, ...]
  cond: conditioning.ConditionSpec = conditioning.Unconditional()
  time: Any = None
  chain: few_step.Chain | None = None

  @property
  def steps(self) -> int:
    """The student's number of sampling steps K (network evaluations per sample)."""
    return 1 if self.chain is None else self.chain.steps

  def generate(self, gen_params, z: jax.Array, cond, key=None, noise_key=None) -> jax.Array:
    """A sample of the student from noise z [B, ...data_shape] ~ N(0, I): the one-step
    G_θ(σ_init·z, σ_init), or the K-step chain (few_step.sample). key: the network's dropout
    key (None to evaluate); noise_key: a K-step chain's re-noising noise (ignored for K = 1)."""
    if self.steps > 1:
      return few_step.sample(self.student, gen_params, z, cond, self.chain, key=key,
                             noise_key=noise_key)
    sigma = jnp.full((z.shape[0],), self.sigma_init, jnp.float32)
    return self.student(gen_params, self.sigma_init * z, sigma, cond, key=key)

  def train_generate(self, gen_params, z: jax.Array, cond, *, key=None, chain_key=None,
                     data=None) -> jax.Array:
    """x_g [B, ...] the methods train on: the one-step sample (exactly `generate`), or for K > 1
    G_θ at each sample's chain position with the input few_step.training_input gives (key: the
    network's dropout key; chain_key: the chain's draws; data: the batch's data in the teacher's
    space, used by source 'noised_data')."""
    if self.steps == 1:
      return self.generate(gen_params, z, cond, key=key)
    if chain_key is None:
      raise ValueError("a few-step student's training sample needs chain_key")
    x_in, sigma_in, _ = few_step.training_input(self.student, gen_params, z, cond, self.chain,
                                                chain_key, data)
    return self.student(gen_params, x_in, sigma_in, cond, key=key)
