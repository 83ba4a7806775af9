"""EDM teacher training (Karras et al. 2022) in the same engine, for users who bring data.

The trained denoiser is the 'generator' net (so it gets the EMA tracks and checkpoints of the
engine); there is no critic. Loss: ln σ ~ N(P_mean, P_std²), λ(σ) = (σ² + σ_d²)/(σ σ_d)²,
L = mean λ(σ)·‖D_θ(x + σ n, σ, cond) − x‖², with dropout active. method.loss_weighting
(default 'edm'; its own field, not the fake score's dsm_weighting that the method block may
carry for distillation) picks λ among methods/common.DSM_WEIGHTINGS: 'velocity' (1/s²) makes it
the flow-matching loss ‖v̂ − v‖² of a rectified-flow teacher, and with P_mean 0, P_std 1 its
σ = s/(1−s) is SD3's logit-normal time draw. Config: method.p_mean,
method.p_std, method.augment_p (default 0): with p > 0, x is first replaced by EDM's geometric
augmentation of the batch and D_θ gets its 9-d augment labels (diffusion/augment.py; EDM's
CIFAR-10 recipe uses 0.12 and needs augment_dim = 9); method.cond_drop (default 0): each row's
condition is replaced by the spec's ∅ with this probability, teaching the unconditional branch
classifier-free guidance needs (any condition pytree: text or class labels). Evaluate it with a
multi-step eval.sampler ('heun'; 'dpm_solver_pp_2m' for PixArt), not one-step generation.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from fdistill_jax.diffusion import augment, edm
from fdistill_jax.methods import common
from fdistill_jax import validation as V
from fdistill_jax.validation import need

# Trains a denoiser, not a sampler: config.few_step does not apply.
FEW_STEP_STUDENTS = False
GENERATOR_NETS = ("generator",)
CRITIC_NETS = ()
NEEDS_TEACHER = False


def init_extras(cfg) -> dict:
  del cfg
  return {}


FIELDS = {  # Every field it reads (fdistill.FIELDS says why).
    "method.p_mean": V.within(-20, 20, "a mean of ln σ"),
    "method.p_std": V.within(0, 10, "a std of ln σ", lo_open=True),
    "method.cond_drop": V.within(0, 1, "a probability", hi_open=True),
    "method.augment_p": V.probability(),
    "method.loss_weighting": V.one_of(*common.DSM_WEIGHTINGS),
}
REQUIRED = ("p_mean", "p_std")


def check_config(cfg) -> None:
  V.check_fields(cfg, FIELDS)
  augment.check_p(cfg)
  rate = cfg.method.get("cond_drop", 0.0)
  need(0 <= rate < 1, "method.cond_drop", rate, "a probability in [0, 1)")


def generator_loss(params, frozen, batch, key, extras, nets, cfg):
  del frozen
  ks, kn, kd = jax.random.split(key, 3)
  # fold_in, not a 4th split: with augment_p = 0 the draws are those of before.
  x, aug = augment.for_denoiser(jax.random.fold_in(key, 1), batch["x"].astype(jnp.float32),
                                cfg.method.get("augment_p", 0.0))
  sigma = edm.sample_lognormal_sigma(ks, (x.shape[0],), cfg.method.p_mean, cfg.method.p_std)
  noisy = x + common.bcast(sigma, x) * jax.random.normal(kn, x.shape)
  cond = batch["cond"]
  if cfg.method.get("cond_drop", 0.0):  # fold_in: the other draws stay those of before.
    cond, _ = nets.cond.drop(jax.random.fold_in(key, 2), cond, cfg.method.cond_drop)
  d = nets.student(params["generator"], noisy, sigma, cond, key=kd, **aug)
  weight = common.dsm_weight(sigma, cfg.method.get("loss_weighting", "edm"),
                             cfg.diffusion.sigma_data)
  loss = common.dsm_loss(d, x, weight)
  return loss, ({"edm_loss": loss}, extras)


def critic_loss(*args, **kwargs):
  raise NotImplementedError("edm_training has no critic step")
