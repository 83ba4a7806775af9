"""EDM teacher training (Karras et al. 2022) in the same engine, for users who bring data.

The trained denoiser is the 'generator' net (so it gets the EMA tracks and checkpoints of the
engine); there is no critic. Loss: ln σ ~ N(P_mean, P_std²), λ(σ) = (σ² + σ_d²)/(σ σ_d)²,
L = mean λ(σ)·‖D_θ(x + σ n, σ, cond) − x‖², with dropout active. Config: method.p_mean,
method.p_std. Evaluate it with eval.sampler = 'heun' (multi-step), not one-step generation.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from fdistill_jax.diffusion import edm
from fdistill_jax.methods import common

GENERATOR_NETS = ("generator",)
CRITIC_NETS = ()
NEEDS_TEACHER = False


def init_extras(cfg) -> dict:
  del cfg
  return {}


def generator_loss(params, frozen, batch, key, extras, nets, cfg):
  del frozen
  x = batch["x"].astype(jnp.float32)
  ks, kn, kd = jax.random.split(key, 3)
  sigma = edm.sample_lognormal_sigma(ks, (x.shape[0],), cfg.method.p_mean, cfg.method.p_std)
  noisy = x + common.bcast(sigma, x) * jax.random.normal(kn, x.shape)
  d = nets.student(params["generator"], noisy, sigma, batch["cond"], key=kd)
  loss = common.dsm_loss(d, x, edm.edm_loss_weight(sigma, cfg.diffusion.sigma_data))
  return loss, ({"edm_loss": loss}, extras)


def critic_loss(*args, **kwargs):
  raise NotImplementedError("edm_training has no critic step")
