"""Uni-Instruct (Wang, Bai, Zhang, Zhang, Luo & Sun, NeurIPS 2025, arXiv 2505.20755).

One generator loss for a family of f-divergences D_f(p‖q_θ) between the teacher's data law p
and the one-step student's law q_θ, each expanded over the diffusion (r_t = p_t/q_t):
  D_f(p_0‖q_0) = ∫ ½g(t)² E_{q_t}[ r_t² f''(r_t) ‖∇log p_t − ∇log q_t‖² ] dt,
whose θ-gradient the paper writes as a SIM/SiD part weighted by r² f''(r) plus a Diff-Instruct
(DI, the VSD/DMD gradient) part. The density ratio comes from a GAN logit read off the fake
score's encoder (SiDA's parameter-free head: the channel mean of the lowest-resolution encoder
activation). docs/uni_instruct.md has the full write-up, the official code's recipes and where
this module departs from that code.

Generator step (fake score frozen; gradients flow through the INPUTS of both denoisers), at the
SiD draws (truncated Karras σ, x_t = x_g + σ n):
  f_φ = D_teacher(x_t);  (f_ψ, ℓ) = D_ψ(x_t) with its encoder logits ℓ [B, P] (P positions)
  w_b = sg(max(mean_pixels|x_g − f_φ|, 1e-5))                       (SiD's normaliser)
  s_b = Σ_pix (f_φ − f_ψ)·((f_φ − x_g) − α(f_φ − f_ψ)) / w_b        (SiD, α = 1 in the code)
  g_b = D_pix · mean_{B,P} softplus(−clip(ℓ, ±10)) / w_b            (the code's GAN term; D_pix =
                                                                     pixels per sample)
  L_G = lsg/B Σ_b [c_sim(r_b)·s_b + c_di(r_b)·d_b] + lsg_gan/B Σ_b g_b
with d_b the DI term of the divergence and the coefficients:
  divergence     c_sim            DI term c_di·d_b                               GAN term
  'fkl'          r                —                                              yes
  'fkl_clean'    r                —                                              no
  'rkl'          1 (= SiDA)       —                                              yes
  'jeffrey'      a·r + (1 − a)    —  (a = method.jeffrey_fkl_weight, 0.4)        yes
  'js'           r/(r+1)          Σ x_g·sg(2r²/(r+1)³ Δ ‖Δ‖)                      no
  'chi2'         2r²              −4r²·Σ x_g·sg(Δ ‖Δ‖)                           yes
  'fdistill_rkl' 0                Σ x_g·sg(−Δ)                                   yes
  'fdistill_fkl' 0                h·Σ x_g·sg(±Δ)                                 yes
  'fdistill_js'  0                h·Σ x_g·sg(±Δ)                                 yes
  (Δ = f_φ − f_ψ; ‖Δ‖ the Frobenius norm over the whole batch, as the code takes it.)
  f-distill terms: with ratio 'logit' h is the divergence registry's h(r) (kl: r, js: r/(1+r))
  and the sign moves x_g toward the teacher (sg(−Δ)); with ratio 'official' h and the sign are
  the code's (+Δ with its weights, see ratio_weights).
The ratio r (stop-gradiented), method.ratio:
  'logit'    (the paper's D/(1−D)): r_b = clamp(exp(clip(mean_P ℓ_b, ±logit_clip)), ratio_lower,
             ratio_upper), then method.ratio_normalization 'mean' (r/mean r), 'sum' (r/(Σr + ε),
             the code's "variance_reduction") or 'none';
  'official' (the released code, fsim_training_loop.py): r is computed from the GAN LOSS g_b,
             not from a logit: −g/(1−g) for fkl/fkl_clean/jeffrey, g/(1−g) for js/chi2 and the
             f-distill divergences, or with normalisation 'sum' for the f-distill ones
             clamp(exp(g), 1e-3, 1e3)/(Σ + 1e-6). For images g_b ≫ 1 (D_pix ~ 3·10³), so the
             code's forward-KL ratio is 1 + O(1/g): its released FKL runs are SiDA (α = 1) with
             weights within ~1e-4 of one. Needed only to reproduce the code's numbers.
Schedule (the code, measured in generator steps here): no generator update before
generator_start_step (code: 100 kimg) and plain SiD (α, no GAN term) before
divergence_start_step (code: 200 kimg); extras['gen_step'] counts generator steps.

Fake-score + discriminator step (generator frozen; one loss, both train the fake score):
  ln σ ~ N(fake_p_mean, fake_p_std²), λ(σ) = (σ² + σ_d²)/(σσ_d)², one noise n for both branches
  (f_ψ, ℓ_fake) = D_ψ(x_g + σ n);  ℓ_real = encoder logits of D_ψ(x_real + σ n)
  L = ls/B Σ_b λ_b R_pix (f_ψ − x_g)²                       (R: fake_score_reduction, code: sum)
    + lsd/B Σ_b λ_b · ½[mean_{B,P} softplus(−ℓ_real) + mean_{B,P} softplus(ℓ_fake)]
With method.augment_p > 0 both branches are EDM-augmented first (independently, as the code's
augment_pipe; CIFAR-10's --augment 0.12). The code also clips the fake score's gradients
elementwise to |g| ≤ 1 (clip_grad_value_) and replaces non-finite gradient entries; here these
are the optimizer options optim.<net>.clip_value and optim.<net>.nan_to_num, on in
defaults.uni_edm's recipes (docs/uni_instruct.md).

Shared pieces: the draws, the SiD per-sample loss, non-finite-row dropping and the fake-score
EDM loss are methods/sid.py's; the f-distill weights h(r) are divergences.py's; teacher guidance
(guidance_scale, guidance_sigma_max) is conditioning.guided, as in SIM.
Config keys (config.method, defaults in method_config): divergence, ratio,
ratio_normalization, logit_clip, ratio_lower, ratio_upper, jeffrey_fkl_weight, alpha,
generator_loss_scale (lsg), gan_loss_scale_gen (lsg_gan), fake_score_loss_scale (ls),
gan_loss_scale_disc (lsd), fake_score_reduction, generator_start_step, divergence_start_step,
guidance_scale, guidance_sigma_max, augment_p (0 = off) and SiD's σ laws (sigma_law, t_max,
fake_sigma_law, fake_p_mean, fake_p_std, dsm_weighting), critic_steps.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections

from fdistill_jax import conditioning, divergences
from fdistill_jax import validation as V
from fdistill_jax.diffusion import augment
from fdistill_jax.methods import common, sid
from fdistill_jax.nets import Nets
from fdistill_jax.validation import need

GENERATOR_NETS = ("generator",)
CRITIC_NETS = ("fake_score",)

sg = common.sg

DIVERGENCES = ("fkl", "fkl_clean", "rkl", "jeffrey", "js", "chi2", "fdistill_rkl",
               "fdistill_fkl", "fdistill_js")
# The official trainer's --divergence spellings (a-little-hoof/Uni_Instruct fsim_train.py).
OFFICIAL_NAMES = {"Forward-KL": "fkl", "Forward-Clean": "fkl_clean", "Reverse-KL": "rkl",
                  "Jeffrey-KL": "jeffrey", "Jensen-Shannon": "js", "Chi-Square": "chi2",
                  "f-distill-Reverse-KL": "fdistill_rkl", "f-distill-Forward-KL": "fdistill_fkl",
                  "f-distill-Jensen-Shannon": "fdistill_js"}
RATIOS = ("logit", "official")
NORMALIZATIONS = ("none", "mean", "sum")
FDISTILL = {"fdistill_rkl": "rkl", "fdistill_fkl": "kl", "fdistill_js": "js"}
_NO_GAN = ("fkl_clean", "js")
# The code's ratio sign: −g/(1−g) for these, g/(1−g) for the rest.
_NEG_RATIO = ("fkl", "fkl_clean", "jeffrey")


def init_extras(cfg: ml_collections.ConfigDict) -> dict:
  del cfg
  return {"gen_step": jnp.zeros((), jnp.int32)}


def method_config(**overrides) -> ml_collections.ConfigDict:
  """config.method for Uni-Instruct (paper ratio, SiD's σ laws). The loss scales keep the
  released code's balance between terms (GAN : SiD = 0.01 : 100 in the generator loss, pixel
  sums for the fake score next to the batch-mean discriminator loss) with the generator's
  main term at unit scale; OFFICIAL_SCALING is the code's units (100× the generator loss)."""
  m = dict(name="uni_instruct", divergence="fkl", ratio="logit", ratio_normalization="mean",
           logit_clip=10.0, ratio_lower=1e-3, ratio_upper=1e3, jeffrey_fkl_weight=0.4,
           alpha=1.0, generator_loss_scale=1.0, gan_loss_scale_gen=1e-4,
           fake_score_loss_scale=1.0, gan_loss_scale_disc=1.0, fake_score_reduction="sum",
           generator_start_step=0, divergence_start_step=0, guidance_scale=1.0,
           guidance_sigma_max=float("inf"), augment_p=0.0, sigma_law="truncated_karras",
           t_max=800.0,
           fake_sigma_law="lognormal", fake_p_mean=-1.2, fake_p_std=1.2, dsm_weighting="edm",
           critic_steps=1)
  m.update(overrides)
  return ml_collections.ConfigDict(m)


# The released code's loss scales (run_uni_instruct.sh: --lsg 100 --lsg_gan 0.01 --ls 1 --lsd 1,
# pixel sums over B as SiD) and its schedule in images (converted to steps by defaults.uni_edm).
OFFICIAL_SCALING = dict(generator_loss_scale=100.0, gan_loss_scale_gen=0.01,
                        fake_score_loss_scale=1.0, gan_loss_scale_disc=1.0,
                        fake_score_reduction="sum")
OFFICIAL_GENERATOR_START_IMAGES = 100_000
OFFICIAL_DIVERGENCE_START_IMAGES = 200_000

FIELDS = {
    "method.critic_steps": common.CRITIC_STEPS_RULE,
    "method.divergence": V.one_of(*DIVERGENCES),
    "method.ratio": V.one_of(*RATIOS),
    "method.ratio_normalization": V.one_of(*NORMALIZATIONS),
    "method.logit_clip": V.above(0, "a finite bound on |discriminator logit|"),
    "method.ratio_lower": V.above(0),
    "method.ratio_upper": V.above(0),
    "method.jeffrey_fkl_weight": V.within(0, 1, "the forward-KL share of the Jeffrey mixture"),
    "method.alpha": V.at_least(0, "a finite number (the code uses 1.0)"),
    "method.generator_loss_scale": V.above(0, "a finite loss scale"),
    "method.gan_loss_scale_gen": V.at_least(0, "a finite loss scale"),
    "method.fake_score_loss_scale": V.above(0, "a finite loss scale"),
    "method.gan_loss_scale_disc": V.at_least(0, "a finite loss scale"),
    "method.fake_score_reduction": V.one_of(*sid.REDUCTIONS),
    "method.generator_start_step": V.at_least(0, "an int (generator steps)"),
    "method.divergence_start_step": V.at_least(0, "an int (generator steps)"),
    "method.guidance_scale": V.at_least(0, "a guidance scale (1 = no guidance)"),
    "method.guidance_sigma_max": V.above(0, "a noise level (inf = guidance at every σ)"),
    "method.augment_p": V.probability(),
    "method.t_max": V.within(0, 1000, "a finite number", lo_open=True),
    "method.sigma_law": V.one_of(*sid.SIGMA_LAWS),
    "method.fake_sigma_law": V.one_of(*sid.FAKE_SIGMA_LAWS),
    "method.fake_p_mean": V.within(-20, 20, "a mean of ln σ"),
    "method.fake_p_std": V.within(0, 10, "a std of ln σ", lo_open=True),
    "method.dsm_weighting": V.one_of("edm", "eps", "velocity"),
}
REQUIRED = sid.SHARED_REQUIRED + (
    "alpha", "divergence", "divergence_start_step", "fake_score_loss_scale",
    "fake_score_reduction", "gan_loss_scale_disc", "gan_loss_scale_gen", "generator_loss_scale",
    "generator_start_step", "guidance_scale", "guidance_sigma_max", "jeffrey_fkl_weight",
    "logit_clip", "ratio", "ratio_lower", "ratio_normalization", "ratio_upper")


def check_config(cfg) -> None:
  """Validates Uni-Instruct's keys of cfg.method; raises ConfigError naming the field."""
  m = cfg.method
  V.check_fields(cfg, FIELDS)
  need(m.divergence in DIVERGENCES, "method.divergence", m.divergence,
       f"allowed: {DIVERGENCES} (the official --divergence names map as {OFFICIAL_NAMES})")
  need(m.ratio in RATIOS, "method.ratio", m.ratio, f"allowed: {RATIOS}")
  need(m.ratio_normalization in NORMALIZATIONS, "method.ratio_normalization",
       m.ratio_normalization, f"allowed: {NORMALIZATIONS}")
  need(0 < m.ratio_lower < m.ratio_upper, "method.ratio_lower/ratio_upper",
       (m.ratio_lower, m.ratio_upper), "need 0 < ratio_lower < ratio_upper")
  need(0 <= m.jeffrey_fkl_weight <= 1, "method.jeffrey_fkl_weight", m.jeffrey_fkl_weight,
       "must be in [0, 1]")
  for k in ("generator_start_step", "divergence_start_step"):
    need(isinstance(m[k], int) and m[k] >= 0, f"method.{k}", m[k], "an int >= 0")
  need(0 < m.t_max <= 1000, "method.t_max", m.t_max, "must be in (0, 1000]")
  need(m.fake_p_std > 0, "method.fake_p_std", m.fake_p_std, "must be > 0")
  augment.check_p(cfg)
  need(not cfg.disc.enabled, "disc.enabled", cfg.disc.enabled,
       "must be False: Uni-Instruct reads its logits off the fake score's encoder (no head)")


# ----------------------------------------------------------------------------- pure pieces
def encoder_logits(feats) -> jax.Array:
  """SiDA's parameter-free discriminator: logits [B, P] = the channel mean of the fake score's
  lowest-resolution encoder activation (P = its spatial positions), or for vector features
  [B, F] (toy MLPs) their mean, [B, 1]."""
  if isinstance(feats, dict) and "encoder" in feats:
    x = feats["encoder"][min(feats["encoder"])]
    return jnp.mean(x.astype(jnp.float32), axis=-1).reshape(x.shape[0], -1)
  enc = ({int(k[3:]): v for k, v in feats.items() if k.startswith("enc") and k[3:].isdigit()}
         if isinstance(feats, dict) else {})
  if enc:
    x = enc[min(enc)]  # experiments/image.py's flat names {'enc<res>': map, 'bottleneck': map}.
    return jnp.mean(x.astype(jnp.float32), axis=-1).reshape(x.shape[0], -1)
  if hasattr(feats, "ndim") and feats.ndim == 2:
    return jnp.mean(feats.astype(jnp.float32), axis=-1, keepdims=True)
  raise ValueError("uni_instruct needs the fake score's encoder features: an EDM UNet's "
                   "{'encoder': {res: map}} (or {'enc<res>': map}) or a toy MLP's [B, F] "
                   "features")


def weight_factor(x_g, teacher_x0) -> jax.Array:
  """SiD's per-sample normaliser sg(max(mean|x_g − f_φ|, 1e-5)) [B]."""
  return jnp.maximum(common.per_sample_mean(jnp.abs(sg(x_g).astype(jnp.float32)
                                                    - sg(teacher_x0).astype(jnp.float32))), 1e-5)


def gan_generator_per_sample(fake_logits, x_g, wf, logit_clip: float = 10.0) -> jax.Array:
  """g [B] = D_pix · mean_{B,P} softplus(−clip ℓ) / w (the code's loss_gan, reduced per sample)."""
  bce = jnp.mean(jax.nn.softplus(-jnp.clip(fake_logits.astype(jnp.float32), -logit_clip,
                                           logit_clip)))
  return x_g[0].size * bce / wf


def logit_ratio(fake_logits, *, logit_clip: float, lower: float, upper: float) -> jax.Array:
  """r [B] = clamp(exp(clip(mean_P ℓ, ±logit_clip)), lower, upper): the discriminator's
  D/(1−D) per sample."""
  lg = jnp.clip(jnp.mean(fake_logits.astype(jnp.float32), axis=1), -logit_clip, logit_clip)
  return jnp.clip(jnp.exp(lg), lower, upper)


def normalise(r, how: str, eps: float = 1e-8) -> jax.Array:
  if how == "none":
    return r
  if how == "mean":
    return r / jnp.mean(r)
  if how == "sum":
    return r / (jnp.sum(r) + eps)
  raise ValueError(f"config.method.ratio_normalization={how!r}; allowed: {NORMALIZATIONS}")


def official_ratio(g, divergence: str, normalization: str) -> jax.Array:
  """The released code's 'density ratio' [B] from the per-sample GAN loss g (stop-gradiented)."""
  g = sg(g)
  if divergence in FDISTILL and normalization == "sum":
    r = jnp.clip(jnp.exp(g), 1e-3, 1e3)
    return r / (jnp.sum(r) + 1e-6)
  r = (-g if divergence in _NEG_RATIO else g) / (1.0 - g)
  return normalise(r, normalization, 1e-8) if divergence not in FDISTILL else r


def ratio_weights(r, divergence: str, *, official: bool, normalization: str = "none",
                  jeffrey_fkl_weight: float = 0.4) -> tuple[jax.Array, jax.Array]:
  """(c_sim [B], c_di [B]) of the generator loss for ratio r [B] (module docstring's table).

  c_di multiplies the divergence's DI term, whose sign and norm factor `di_term` supplies."""
  one = jnp.ones_like(r)
  zero = jnp.zeros_like(r)
  if divergence in ("fkl", "fkl_clean"):
    return r, zero
  if divergence == "rkl":
    return one, zero
  if divergence == "jeffrey":
    return jeffrey_fkl_weight * r + (1.0 - jeffrey_fkl_weight), zero
  if divergence == "js":
    return r / (r + 1.0), 2.0 * r ** 2 / (r + 1.0) ** 3
  if divergence == "chi2":
    return 2.0 * r ** 2, -4.0 * r ** 2
  if divergence == "fdistill_rkl":
    return zero, one
  if official:
    if divergence == "fdistill_fkl":
      return zero, r
    # fdistill_js, the code: h = −r/(r+1) (no normalisation) or (r/(r+1))/Σ (normalisation 'sum').
    if normalization == "sum":
      h = r / (r + 1.0)
      return zero, h / (jnp.sum(h) + 1e-6)
    return zero, -r / (r + 1.0)
  return zero, divergences.get(FDISTILL[divergence]).h(r)


def di_term(x_g, teacher_x0, fake_x0, divergence: str, official: bool) -> jax.Array:
  """d [B] = Σ_pix x_g · sg(v): the DI part (gradient reaches θ through x_g only).

  v = Δ‖Δ‖ (js, chi2; ‖Δ‖ over the whole batch), −Δ (fdistill_rkl, and every f-distill
  divergence with ratio 'logit'), +Δ (fdistill_fkl/js with ratio 'official', the code's sign)."""
  d = sg(teacher_x0).astype(jnp.float32) - sg(fake_x0).astype(jnp.float32)
  if divergence in ("js", "chi2"):
    v = d * jnp.sqrt(jnp.sum(jnp.square(d)))
  elif divergence == "fdistill_rkl" or (divergence in FDISTILL and not official):
    v = -d
  elif divergence in FDISTILL:
    v = d
  else:
    return jnp.zeros((x_g.shape[0],), jnp.float32)
  t = x_g.astype(jnp.float32) * v
  return jnp.sum(t.reshape(t.shape[0], -1), axis=1)


def divergence_loss(x_g, teacher_x0, fake_x0, fake_logits, keep, cfg) -> tuple[jax.Array, dict]:
  """The divergence phase of L_G from the denoiser outputs (all [B, ...], keeping gradients)."""
  m = cfg.method
  wf = weight_factor(x_g, teacher_x0)
  s = sid.sid_per_sample(x_g, teacher_x0, fake_x0, m.alpha)
  g = gan_generator_per_sample(fake_logits, x_g, wf)
  official = m.ratio == "official"
  if official:
    r = official_ratio(g, m.divergence, m.ratio_normalization)
  else:
    r = normalise(logit_ratio(sg(fake_logits), logit_clip=m.logit_clip, lower=m.ratio_lower,
                              upper=m.ratio_upper), m.ratio_normalization)
  r = sg(r)
  c_sim, c_di = ratio_weights(r, m.divergence, official=official,
                              normalization=m.ratio_normalization,
                              jeffrey_fkl_weight=m.jeffrey_fkl_weight)
  d = di_term(x_g, teacher_x0, fake_x0, m.divergence, official)
  per = c_sim * s + c_di * d
  main = m.generator_loss_scale * sid.masked_batch_mean(per, keep)
  gan = m.gan_loss_scale_gen * sid.masked_batch_mean(g, keep)
  loss = main + (0.0 if m.divergence in _NO_GAN else gan)
  return loss, {"div": main, "gan_gen": gan, "ratio_mean": jnp.mean(r),
                "ratio_std": jnp.std(r), "c_sim_mean": jnp.mean(c_sim)}


def sid_warmup_loss(x_g, teacher_x0, fake_x0, keep, cfg) -> jax.Array:
  """Before divergence_start_step: lsg/B Σ SiD(α) (the code's loss before 200 kimg, no GAN)."""
  m = cfg.method
  return m.generator_loss_scale * sid.masked_batch_mean(
      sid.sid_per_sample(x_g, teacher_x0, fake_x0, m.alpha), keep)


# ----------------------------------------------------------------------------- losses
def generator_loss_at(params, frozen, cond, z, sigma, n, nets: Nets, cfg, step=None,
                      chain: dict | None = None):
  """L_G at given draws (z, σ, n as sid.generator_draws); returns (loss, metrics). step: the
  generator step (None = past both start steps)."""
  x_g = nets.train_generate(params["generator"], z, cond, **(chain or {}))
  return generator_loss_of_sample(x_g, params, frozen, cond, sigma, n, nets, cfg, step)


def generator_loss_of_sample(x_g, params, frozen, cond, sigma, n, nets: Nets, cfg, step=None):
  """L_G given the generator's sample x_g [B, ...] (carrying ∂/∂θ); (loss, metrics)."""
  m = cfg.method
  # A non-finite generator sample must not reach the denoisers (NaN·0 in the backward pass).
  ok = sid.finite_rows(sg(x_g))
  x_g = jnp.where(common.bcast(ok, x_g), x_g, 0.0)
  x_t = x_g + common.bcast(sigma, x_g) * n
  teacher, _ = sid.denoisers(params, frozen, nets)
  f_real = conditioning.guided(teacher, x_t, sigma, cond,
                               conditioning.scale_of(nets.cond, cond, m.guidance_scale),
                               nets.cond, m.guidance_sigma_max)
  f_fake, feats = nets.student(sg(params["fake_score"]), x_t, sigma, cond, features=True)
  logits = encoder_logits(feats)
  keep = ok & sid.finite_rows(sg(f_real), sg(f_fake), sg(logits))
  f_real, f_fake = sid.zero_rows(f_real, keep), sid.zero_rows(f_fake, keep)
  logits = sid.zero_rows(logits, keep)
  loss, metrics = divergence_loss(x_g, f_real, f_fake, logits, keep, cfg)
  if step is not None:
    warm = sid_warmup_loss(x_g, f_real, f_fake, keep, cfg)
    loss = jnp.where(step >= m.divergence_start_step, loss, warm)
    loss = jnp.where(step >= m.generator_start_step, loss, 0.0 * loss)
  metrics.update(kept_frac=jnp.mean(keep.astype(jnp.float32)), sigma_mean=jnp.mean(sigma))
  return loss, metrics


def generator_loss(params, frozen, batch, key, extras, nets: Nets, cfg):
  """(L_G, (metrics, extras)); differentiable w.r.t. params['generator'] through x_g and x_t."""
  z, sigma, n = sid.generator_draws(batch, key, cfg, nets)
  step = extras["gen_step"]
  loss, metrics = generator_loss_at(params, frozen, batch["cond"], z, sigma, n, nets, cfg, step,
                                    sid.chain_inputs(batch, key))
  return loss, (metrics, {**extras, "gen_step": step + 1})


def critic_loss_at(params, x_g, x_real, cond, sigma, n, nets: Nets, cfg, key=None,
                   augment_key=None):
  """Fake-score EDM loss + encoder GAN loss at given draws; x_g is stop-gradiented here. With
  method.augment_p > 0 and an augment_key, generator and real images are augmented
  independently (EDM's pipeline, each with its own labels), as the code's augment_pipe does.
  Returns (loss, metrics); differentiable w.r.t. params['fake_score']."""
  m = cfg.method
  x_g = sg(x_g)
  ok = sid.finite_rows(x_g)
  x_g = jnp.where(common.bcast(ok, x_g), x_g, 0.0)
  p = m.augment_p if augment_key is not None else 0.0
  ka, kb = jax.random.split(augment_key) if p else (None, None)
  x_g, aug_f = augment.for_denoiser(ka, x_g, p)
  x_real, aug_r = augment.for_denoiser(kb, x_real, p)
  fake = lambda x, aug: nets.student(params["fake_score"], x, sigma, cond, key=key,
                                     features=True, **aug)
  f_fake, feats = fake(x_g + common.bcast(sigma, x_g) * n, aug_f)
  logits_fake = encoder_logits(feats)
  logits_real = encoder_logits(fake(x_real + common.bcast(sigma, x_real) * n, aug_r)[1])
  keep = ok & sid.finite_rows(sg(f_fake), sg(logits_fake), sg(logits_real))
  f_fake = sid.zero_rows(f_fake, keep)
  lam = common.dsm_weight(sigma, m.dsm_weighting, cfg.diffusion.sigma_data)
  per = lam * sid.pixel_reduce(jnp.square(f_fake.astype(jnp.float32) - x_g),
                               m.fake_score_reduction)
  dsm = m.fake_score_loss_scale * sid.masked_batch_mean(per, keep)
  lf, lr = sid.zero_rows(logits_fake, keep), sid.zero_rows(logits_real, keep)
  bce = 0.5 * (jnp.mean(jax.nn.softplus(-lr)) + jnp.mean(jax.nn.softplus(lf)))
  gan = m.gan_loss_scale_disc * sid.masked_batch_mean(lam * bce, keep)
  return dsm + gan, {"dsm": dsm, "gan_disc": gan, "logit_real": jnp.mean(logits_real),
                     "logit_fake": jnp.mean(logits_fake),
                     "kept_frac": jnp.mean(keep.astype(jnp.float32))}


def critic_loss(params, frozen, batch, key, extras, nets: Nets, cfg):
  """(L_ψ + L_D, (metrics, extras)); w.r.t. params['fake_score']."""
  del frozen
  kd, kf = jax.random.split(key)
  z, sigma, n, _ = sid.fake_score_draws(batch, kd, cfg, nets)
  x_g = nets.train_generate(sg(params["generator"]), z, batch["cond"],
                            **sid.chain_inputs(batch, key))
  loss, metrics = critic_loss_at(params, x_g, batch["x"], batch["cond"], sigma, n, nets, cfg,
                                 key=kf, augment_key=jax.random.fold_in(key, 1))
  return loss, (metrics, extras)
