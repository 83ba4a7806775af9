"""f-distill (Xu, Nie & Vahdat 2025), as NVIDIA FastGen computes it; rkl is DMD2.

Generator step (fake score and discriminator frozen):
  x_g = G_θ(σ_init z);  σ ~ Karras index draw;  x_σ = x_g + σ ε
  D_fake = sg D_ψ(x_σ);  (D_teacher, feats) = teacher(x_σ)   [gradient flows through the input]
  ℓ = Disc(feats);  h̃ = h(r)/mean h(r), r = exp ℓ (time-bin normalised, stop-gradiented)
  L_G = ½·mean((x_g − sg(x_g − g))²) + λ_G·mean softplus(−ℓ),  g = h̃ (D_fake − D_teacher)/mean|x_g − D_teacher|
Critic step (generator frozen):
  L = mean‖D_ψ(x_σ) − x_g‖² (optionally λ(σ)-weighted) + λ_D·[softplus(ℓ_fake) + softplus(−ℓ_real)]
      + γ·approx-R1, with the real branch on its own σ′, ε′.
Features for the discriminator come from the frozen teacher (FastGen; only the head trains) or
from the fake score (DMD2; then the GAN loss also trains the fake score). The schedule is
FastGen's: step k is a generator step iff k mod (critic_steps + 1) == 0.
Config keys (config.method): divergence, ratio_normalization, ratio_ema, ratio_bins, ratio_lower,
ratio_upper, logit_clip, gan_weight_gen, gan_weight_disc, r1_weight, disc_features
('teacher'|'fake_score'), dsm_weighting ('none'|'edm'), time_lo, time_hi, dm_normalize.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections

from fdistill_jax.diffusion import edm
from fdistill_jax.engine.nets import Nets
from fdistill_jax.methods import common

GENERATOR_NETS = ("generator",)
CRITIC_NETS = ("fake_score", "discriminator")


def init_extras(cfg: ml_collections.ConfigDict) -> dict:
  """Method state that is not a parameter: the running per-time-bin ratio means (start at 1)."""
  return {"bins": jnp.ones((cfg.method.ratio_bins,), jnp.float32)}


def _sigma(key, b, cfg):
  m = cfg.method
  return edm.sample_karras_index_sigma(key, (b,), lo_frac=m.time_lo, hi_frac=m.time_hi,
                                       sigma_min=cfg.diffusion.sigma_min,
                                       sigma_max=cfg.diffusion.sigma_max)


def _noised(key, x, cfg):
  ks, kn = jax.random.split(key)
  sigma = _sigma(ks, x.shape[0], cfg)
  return x + common.bcast(sigma, x) * jax.random.normal(kn, x.shape, x.dtype), sigma


def _disc_feats(nets: Nets, params, frozen, x_t, sigma, labels, source: str):
  """(teacher/fake x0, features) at x_t from the configured feature source."""
  if source == "teacher":
    return nets.teacher(frozen, x_t, sigma, labels, features=True)
  return nets.student(params["fake_score"], x_t, sigma, labels, features=True)


def generator_loss(params, frozen, batch, key, extras, nets: Nets, cfg):
  """(L_G, (metrics, new_extras)); differentiable w.r.t. params['generator']."""
  m = cfg.method
  labels = batch["labels"]
  kz, kt, kd = jax.random.split(key, 3)
  z = jax.random.normal(kz, batch["x"].shape, jnp.float32)
  x_g = nets.generate(params["generator"], z, labels, key=kd)
  x_t, sigma = _noised(kt, x_g, cfg)
  fake_x0 = common.sg(nets.student(common.sg(params["fake_score"]), x_t, sigma, labels))
  frozen_params = jax.tree.map(common.sg, params)  # Critic nets are frozen in this step.
  if m.disc_features == "teacher":
    teacher_x0, feats = nets.teacher(frozen, x_t, sigma, labels, features=True)
  else:
    teacher_x0 = nets.teacher(frozen, x_t, sigma, labels)
    _, feats = nets.student(frozen_params["fake_score"], x_t, sigma, labels, features=True)
  metrics = {}
  h, new_extras = None, extras
  loss = jnp.float32(0.0)
  if nets.disc is not None and (m.gan_weight_gen > 0 or m.divergence != "rkl"):
    logits = nets.disc(frozen_params["discriminator"], feats, sigma)
    if m.divergence != "rkl" or m.ratio_normalization:
      h, bins, hstats = common.fdistill_weight(
          logits, sigma, extras["bins"], divergence=m.divergence,
          ratio_normalization=m.ratio_normalization, ratio_ema=m.ratio_ema,
          t_min=cfg.diffusion.sigma_min, t_max=cfg.diffusion.sigma_max,
          logit_clip=m.logit_clip, r_min=m.ratio_lower, r_max=m.ratio_upper)
      new_extras = {**extras, "bins": bins}
      metrics.update(hstats)
    if m.gan_weight_gen > 0:
      gan = common.gan_generator_loss(logits)
      metrics["gan_gen"] = gan
      loss = loss + m.gan_weight_gen * gan
  dm = common.dm_generator_loss(x_g, teacher_x0, fake_x0, h, normalize=m.dm_normalize)
  metrics["dm"] = dm
  loss = loss + dm
  return loss, (metrics, new_extras)


def critic_loss(params, frozen, batch, key, extras, nets: Nets, cfg):
  """(L_ψ + λ_D L_D (+ γ R1), (metrics, extras)); w.r.t. params['fake_score'/'discriminator']."""
  m = cfg.method
  labels = batch["labels"]
  kz, kt, kr, kd, kp = jax.random.split(key, 5)
  z = jax.random.normal(kz, batch["x"].shape, jnp.float32)
  x_g = common.sg(nets.generate(common.sg(params["generator"]), z, labels))
  x_t, sigma = _noised(kt, x_g, cfg)
  metrics = {}
  if nets.disc is not None and m.disc_features == "fake_score":
    fake_x0, feats_fake = nets.student(params["fake_score"], x_t, sigma, labels, key=kd,
                                       features=True)
  else:
    fake_x0 = nets.student(params["fake_score"], x_t, sigma, labels, key=kd)
    feats_fake = None
  weight = edm.edm_loss_weight(sigma, cfg.diffusion.sigma_data) if m.dsm_weighting == "edm" else None
  dsm = common.dsm_loss(fake_x0, x_g, weight)
  metrics["dsm"] = dsm
  loss = dsm
  if nets.disc is not None:
    x_real = batch["x"]
    xr_t, sigma_r = _noised(kr, x_real, cfg)

    def real_feats(x):
      if m.disc_features == "teacher":
        return common.sg(nets.teacher(frozen, x, sigma_r, labels, features=True)[1])
      return nets.student(params["fake_score"], x, sigma_r, labels, features=True)[1]

    if feats_fake is None:
      feats_fake = common.sg(nets.teacher(frozen, x_t, sigma, labels, features=True)[1])
    logits_fake = nets.disc(params["discriminator"], feats_fake, sigma)
    logits_real = nets.disc(params["discriminator"], real_feats(xr_t), sigma_r)
    gan = common.gan_discriminator_loss(logits_real, logits_fake)
    metrics.update(gan_disc=gan, logit_real=jnp.mean(logits_real),
                   logit_fake=jnp.mean(logits_fake))
    loss = loss + m.gan_weight_disc * gan
    if m.r1_weight > 0:
      xr_p = xr_t + 0.1 * jax.random.normal(kp, xr_t.shape, xr_t.dtype)
      r1 = common.approx_r1(logits_real, nets.disc(params["discriminator"], real_feats(xr_p),
                                                   sigma_r))
      metrics["r1"] = r1
      loss = loss + m.r1_weight * r1
  return loss, (metrics, extras)
