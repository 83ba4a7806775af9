"""DMD (v1, Yin et al. 2024): reverse-KL distribution matching plus a regression to teacher pairs.

Generator step: the f-distill reverse-KL DM loss without GAN (methods/fdistill.py with
divergence='rkl' and no discriminator: g = (D_fake − D_teacher)/mean|x_g − D_teacher|), plus
  λ_reg · mean_b d(G_θ(z_pair), y_pair)
where (z_pair, y_pair) are the teacher's deterministic ODE pairs from the KD pair cache
(methods/kd.py, built through `prepare`), d one of l2 / l1 / pseudo_huber (LPIPS is not provided).
Critic step: the fake score's DSM loss (fdistill.critic_loss without discriminator); DMD
alternates 1:1 (critic_steps = 1).
Config keys (config.method): the f-distill keys (divergence must be 'rkl'), reg_weight, and the kd
pair/distance keys (pairs_*, reg_distance, reg_huber_c). config.disc.enabled must be False.
"""
from __future__ import annotations

import jax
import ml_collections

from fdistill_jax.methods import fdistill, kd
from fdistill_jax.nets import Nets
from fdistill_jax import validation as V
from fdistill_jax.validation import need

GENERATOR_NETS = ("generator",)
CRITIC_NETS = ("fake_score",)

prepare = kd.prepare


def init_extras(cfg: ml_collections.ConfigDict) -> dict:
  return fdistill.init_extras(cfg)


def method_config(base: ml_collections.ConfigDict, **overrides) -> ml_collections.ConfigDict:
  """config.method for DMD from an f-distill method block `base` (rkl, DMD2 time range 2–98%)."""
  m = base.to_dict()
  m.update(name="dmd", divergence="rkl", critic_steps=1, time_lo=0.02, time_hi=0.98,
           gan_weight_gen=0.0, reg_weight=0.25, **kd.pair_keys())
  m.update(overrides)
  return ml_collections.ConfigDict(m)


FIELDS = {"method.reg_weight": V.at_least(0, "a finite weight")}  # Beyond f-distill's and KD's.
REQUIRED = fdistill.REQUIRED + kd.REQUIRED + ("reg_weight",)
USES = (fdistill, kd)  # Whose fields (and required fields) DMD reads as well as its own.


def check_config(cfg) -> None:
  """f-distill's keys, DMD's own (rkl, no GAN) and the pair-cache keys."""
  fdistill.check_config(cfg)
  kd.check_config(cfg)
  V.check_fields(cfg, FIELDS)
  need(cfg.method.divergence == "rkl", "method.divergence", cfg.method.divergence,
       "method dmd needs 'rkl'")
  need(not cfg.disc.enabled, "disc.enabled", cfg.disc.enabled, "method dmd has no GAN: False")


def generator_loss(params, frozen, batch, key, extras, nets: Nets, cfg):
  """(DM + λ_reg·regression, (metrics, extras)); w.r.t. params['generator']."""
  dm, (metrics, extras) = fdistill.generator_loss(params, frozen, batch, key, extras, nets, cfg)
  reg = kd.regression_loss(params["generator"], batch, nets, cfg, jax.random.fold_in(key, 1))
  metrics = {**metrics, "regression": reg}
  return dm + cfg.method.reg_weight * reg, (metrics, extras)


def critic_loss(params, frozen, batch, key, extras, nets: Nets, cfg):
  """Fake-score DSM loss; w.r.t. params['fake_score']."""
  return fdistill.critic_loss(params, frozen, batch, key, extras, nets, cfg)
