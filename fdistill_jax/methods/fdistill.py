"""f-distill (Xu, Nie & Vahdat 2025), as NVIDIA FastGen computes it; rkl is DMD2.

Generator step (fake score and discriminator frozen):
  x_g = G_θ(σ_init z) (a few-step student: G_θ at a chain position, diffusion/few_step.py);  σ ~ Karras index draw;  x_σ = x_g + σ ε
  D_fake = sg D_ψ(x_σ);  (D_teacher, feats) = teacher(x_σ)   [gradient flows through the input]
  ℓ = Disc(feats);  h̃ = h(r)/mean h(r), r = exp ℓ (time-bin normalised, stop-gradiented)
  L_G = ½·mean((x_g − sg(x_g − g))²) + λ_G·mean softplus(−ℓ),  g = h̃ (D_fake − D_teacher)/mean|x_g − D_teacher|
Critic step (generator frozen):
  L = mean‖D_ψ(x_σ) − x_g‖² (optionally λ(σ)-weighted) + λ_D·[softplus(ℓ_fake) + softplus(−ℓ_real)]
      + γ·approx-R1, with the real branch on its own σ′, ε′.
Features for the discriminator come from the frozen teacher (FastGen; only the head trains) or
from the fake score (DMD2; then the GAN loss also trains the fake score). The schedule is
FastGen's: step k is a generator step iff k mod (critic_steps + 1) == 0.
Teacher guidance (text-to-image recipes, FastGen's placement): with guidance_scale w ≠ 1 the
teacher's x0 in the generator step is D(∅) + w·(D(c) − D(∅)) (its features stay those of D(c));
the fake score is never guided. w = 1 costs one teacher evaluation. With guidance_sigma_max the
guidance applies only at σ ≤ it (Kynkäänniemi et al. 2024's limited interval): above it the
target is the conditional teacher, whose spread guidance at large σ would collapse.
σ law: method.sigma_law (diffusion/sigma_laws.py; FastGen's 'karras_index' over
[time_lo, time_hi] of the levels by default, 'uniform_t' for DDPM teachers), the same draw for
the generator, the fake score and the discriminator's real branch. The ratio's time bins are
linear in σ (FastGen, ratio_bin_space='sigma') or uniform in the law's own coordinate ('law':
each bin holds the same share of the draws).
Config keys (config.method, defaults in `method_config`): divergence, ratio_normalization,
ratio_ema, ratio_bins, ratio_bin_space, ratio_lower, ratio_upper, logit_clip, gan_weight_gen,
gan_weight_disc, r1_weight, disc_features ('teacher'|'fake_score'), dsm_weighting
('none'|'edm'|'eps', common.dsm_weight), sigma_law, time_lo, time_hi, dm_normalize,
guidance_scale, guidance_sigma_max.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections

from fdistill_jax import conditioning, divergences
from fdistill_jax.diffusion import few_step, sigma_laws
from fdistill_jax.methods import common
from fdistill_jax.nets import Nets
from fdistill_jax import validation as V
from fdistill_jax.validation import need

GENERATOR_NETS = ("generator",)
CRITIC_NETS = ("fake_score", "discriminator")


DISC_FEATURES = ("teacher", "fake_score")
DSM_WEIGHTINGS = common.DSM_WEIGHTINGS
SIGMA_LAWS = ("karras_index", "uniform_t")
BIN_SPACES = ("sigma", "law")


def method_config(**overrides) -> ml_collections.ConfigDict:
  """config.method for f-distill (FastGen's defaults; divergence 'rkl' is DMD2)."""
  m = dict(name="fdistill", divergence="js", critic_steps=1, ratio_normalization=True,
           ratio_ema=0.0, ratio_bins=10, ratio_lower=0.1, ratio_upper=20.0, logit_clip=10.0,
           gan_weight_gen=1e-2, gan_weight_disc=1.0, r1_weight=0.0, disc_features="teacher",
           dsm_weighting="edm", sigma_law="karras_index", ratio_bin_space="sigma",
           time_lo=0.002, time_hi=0.998, dm_normalize=True, guidance_scale=1.0,
           guidance_sigma_max=float("inf"))
  m.update(overrides)
  return ml_collections.ConfigDict(m)


# Ranges of f-distill's numeric keys (types and finiteness: config_checks.check_types). More
# than 10,000 time bins would hang building the per-bin ratio statistics.
RULES = {
    "method.ratio_bins": V.within(1, 10_000, "an int"),
    "method.logit_clip": V.above(0, "a finite bound on |discriminator logit|"),
    "method.gan_weight_gen": V.at_least(0, "a finite weight"),
    "method.gan_weight_disc": V.at_least(0, "a finite weight"),
    "method.r1_weight": V.at_least(0, "a finite weight (0 = off)"),
    "method.p_mean": V.within(-20, 20, "a mean of ln σ"),
    "method.p_std": V.within(0, 10, "a std of ln σ", lo_open=True),
}


# Every field of f-distill's method block, one rule each: applied to the fields of the chosen
# method by its check_config and, to fields present but unread (e.g. the f-distill block an
# edm_training config carries), by registry.check_method_fields. Cross-field rules: check_config.
FIELDS = {
    "method.critic_steps": common.CRITIC_STEPS_RULE,
    **RULES,
    "method.divergence": V.one_of(*divergences.NAMES),
    "method.ratio_normalization": V.flag(),
    "method.ratio_ema": V.within(0, 1, hi_open=True),
    "method.ratio_lower": V.above(0),
    "method.ratio_upper": V.above(0),
    "method.disc_features": V.one_of(*DISC_FEATURES),
    "method.dsm_weighting": V.one_of(*DSM_WEIGHTINGS),
    "method.sigma_law": V.one_of(*SIGMA_LAWS),
    "method.ratio_bin_space": V.one_of(*BIN_SPACES),
    "method.time_lo": V.within(0, 1, "a fraction of the Karras levels", hi_open=True),
    "method.time_hi": V.within(0, 1, "a fraction of the Karras levels", lo_open=True),
    "method.dm_normalize": V.flag(),
    "method.guidance_scale": V.at_least(0, "a guidance scale (1 = no guidance)"),
    "method.guidance_sigma_max": V.above(0, "a noise level (inf = guidance at every σ)"),
}
# Read without a default: a config of this method without them fails before anything runs.
REQUIRED = ("critic_steps", "disc_features", "divergence", "dm_normalize", "dsm_weighting",
            "gan_weight_disc", "gan_weight_gen", "guidance_scale", "guidance_sigma_max",
            "logit_clip", "r1_weight", "ratio_bin_space", "ratio_bins", "ratio_ema", "ratio_lower",
            "ratio_normalization", "ratio_upper", "sigma_law", "time_hi", "time_lo")


def check_config(cfg) -> None:
  """Validates the f-distill keys of cfg.method; raises ConfigError naming the field."""
  m = cfg.method
  V.check_fields(cfg, FIELDS)
  need(m.divergence in divergences.NAMES, "method.divergence", m.divergence,
       f"allowed: {divergences.NAMES}")
  need(m.disc_features in DISC_FEATURES, "method.disc_features", m.disc_features,
       f"allowed: {DISC_FEATURES}")
  need(m.dsm_weighting in DSM_WEIGHTINGS, "method.dsm_weighting", m.dsm_weighting,
       f"allowed: {DSM_WEIGHTINGS}")
  need(0.0 <= m.ratio_ema < 1.0, "method.ratio_ema", m.ratio_ema, "must be in [0, 1)")
  need(0 < m.ratio_lower < m.ratio_upper, "method.ratio_lower/ratio_upper",
       (m.ratio_lower, m.ratio_upper), "need 0 < ratio_lower < ratio_upper")
  need(m.ratio_bins >= 1, "method.ratio_bins", m.ratio_bins, "must be >= 1")
  need(m.sigma_law in SIGMA_LAWS, "method.sigma_law", m.sigma_law, f"allowed: {SIGMA_LAWS}")
  need(m.ratio_bin_space in BIN_SPACES, "method.ratio_bin_space", m.ratio_bin_space,
       f"allowed: {BIN_SPACES}")
  need(0.0 <= m.time_lo < m.time_hi <= 1.0, "method.time_lo/time_hi", (m.time_lo, m.time_hi),
       "fractions of the Karras levels with 0 <= time_lo < time_hi <= 1")
  need(m.guidance_scale >= 0, "method.guidance_scale", m.guidance_scale,
       "a guidance scale >= 0 (1 = no guidance)")
  need(m.guidance_sigma_max > 0, "method.guidance_sigma_max", m.guidance_sigma_max,
       "a noise level > 0 above which guidance is off (inf = guidance at every σ)")


def init_extras(cfg: ml_collections.ConfigDict) -> dict:
  """Method state that is not a parameter: the running per-time-bin ratio means (start at 1)."""
  return {"bins": jnp.ones((cfg.method.ratio_bins,), jnp.float32)}


def _sigma(key, b, cfg, nets: Nets):
  m, d = cfg.method, cfg.diffusion
  return sigma_laws.draw(key, (b,), m.sigma_law, sigma_min=d.sigma_min, sigma_max=d.sigma_max,
                         time_lo=m.time_lo, time_hi=m.time_hi, time=nets.time)


def _noised(key, x, cfg, nets: Nets):
  ks, kn = jax.random.split(key)
  sigma = _sigma(ks, x.shape[0], cfg, nets)
  return x + common.bcast(sigma, x) * jax.random.normal(kn, x.shape, x.dtype), sigma


def _bin_coordinate(sigma, cfg, nets: Nets):
  """(coordinate [B], lo, hi) the ratio's time bins split evenly (method.ratio_bin_space)."""
  m, d = cfg.method, cfg.diffusion
  if m.ratio_bin_space == "sigma":
    return sigma, d.sigma_min, d.sigma_max
  return sigma_laws.cdf(sigma, m.sigma_law, sigma_min=d.sigma_min, sigma_max=d.sigma_max,
                        time=nets.time), 0.0, 1.0


def _disc_feats(nets: Nets, params, frozen, x_t, sigma, cond, source: str, key=None):
  """(teacher/fake x0, features) at x_t from the configured feature source."""
  if source == "teacher":
    return nets.teacher(frozen, x_t, sigma, cond, features=True)
  return nets.student(params["fake_score"], x_t, sigma, cond, key=key, features=True)


def _teacher_and_disc_feats(nets: Nets, params, frozen, x_t, sigma, cond, source: str):
  """Generator step: (teacher x0, discriminator features) at x_t, the features read off the
  teacher ('teacher': one call gives both) or off the fake score ('fake_score')."""
  if source == "teacher":
    return _disc_feats(nets, params, frozen, x_t, sigma, cond, source)
  return (nets.teacher(frozen, x_t, sigma, cond),
          _disc_feats(nets, params, frozen, x_t, sigma, cond, source)[1])


def _critic_disc_feats(nets: Nets, params, frozen, x_t, sigma, cond, source: str):
  """Critic step: discriminator features at x_t: the frozen teacher's (no gradient) or the fake
  score's (the GAN loss trains it too)."""
  feats = _disc_feats(nets, params, frozen, x_t, sigma, cond, source)[1]
  return common.sg(feats) if source == "teacher" else feats


def generator_loss(params, frozen, batch, key, extras, nets: Nets, cfg):
  """(L_G, (metrics, new_extras)); differentiable w.r.t. params['generator']."""
  m = cfg.method
  cond = batch["cond"]
  kz, kt, kd = jax.random.split(key, 3)
  z = jax.random.normal(kz, batch["x"].shape, jnp.float32)
  x_g = nets.train_generate(params["generator"], z, cond, key=kd,
                            chain_key=few_step.chain_key(key), data=batch["x"])
  x_t, sigma = _noised(kt, x_g, cfg, nets)
  fake_x0 = common.sg(nets.student(common.sg(params["fake_score"]), x_t, sigma, cond))
  frozen_params = jax.tree.map(common.sg, params)  # Critic nets are frozen in this step.
  teacher_x0, feats = _teacher_and_disc_feats(nets, frozen_params, frozen, x_t, sigma, cond,
                                              m.disc_features)
  teacher_x0 = conditioning.guide(
      teacher_x0, lambda: nets.teacher(frozen, x_t, sigma, nets.cond.null_like(cond)),
      conditioning.scale_of(nets.cond, cond, m.guidance_scale), nets.cond, sigma,
      m.guidance_sigma_max)
  constant_h = divergences.get(m.divergence).constant_weight
  metrics = {}
  h, new_extras = None, extras
  loss = jnp.float32(0.0)
  if nets.disc is not None and (m.gan_weight_gen > 0 or not constant_h):
    logits = nets.disc(frozen_params["discriminator"], feats, sigma)
    if not constant_h or m.ratio_normalization:
      coord, lo, hi = _bin_coordinate(sigma, cfg, nets)
      h, bins, hstats = common.fdistill_weight(
          logits, coord, extras["bins"], divergence=m.divergence,
          ratio_normalization=m.ratio_normalization, ratio_ema=m.ratio_ema, t_min=lo, t_max=hi,
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
  cond = batch["cond"]
  kz, kt, kr, kd, kp = jax.random.split(key, 5)
  z = jax.random.normal(kz, batch["x"].shape, jnp.float32)
  x_g = common.sg(nets.train_generate(common.sg(params["generator"]), z, cond,
                                      chain_key=few_step.chain_key(key), data=batch["x"]))
  x_t, sigma = _noised(kt, x_g, cfg, nets)
  metrics = {}
  if nets.disc is not None and m.disc_features == "fake_score":
    fake_x0, feats_fake = _disc_feats(nets, params, frozen, x_t, sigma, cond, "fake_score", kd)
  else:
    fake_x0 = nets.student(params["fake_score"], x_t, sigma, cond, key=kd)
    feats_fake = None
  dsm = common.dsm_loss(fake_x0, x_g, common.dsm_weight(sigma, m.dsm_weighting,
                                                      cfg.diffusion.sigma_data))
  metrics["dsm"] = dsm
  loss = dsm
  if nets.disc is not None:
    x_real = batch["x"]  # Real data in the teacher's space (latents for latent experiments).
    xr_t, sigma_r = _noised(kr, x_real, cfg, nets)

    real_feats = lambda x: _critic_disc_feats(nets, params, frozen, x, sigma_r, cond,
                                              m.disc_features)
    if feats_fake is None:  # Teacher features (the fake-score ones came with fake_x0 above).
      feats_fake = _critic_disc_feats(nets, params, frozen, x_t, sigma, cond, "teacher")
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
