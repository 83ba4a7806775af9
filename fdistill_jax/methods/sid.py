"""SiD: Score identity Distillation (Zhou et al. 2024), with the SiD-LSG guidance scales.

Generator step (fake score frozen; gradients flow through the INPUTS of teacher and fake score):
  x_g = G_θ(σ_init z);  σ ~ truncated Karras draw (u ~ U[0, t_max/1000]);  x_t = x_g + σ n
  f_φ = D_teacher(x_t), f_ψ = D_ψ(x_t)   (outputs NOT stop-gradiented; only parameters frozen)
  ℓ = Σ_pixels (f_φ − f_ψ)·[(f_φ − x_g) − α (f_φ − f_ψ)] / sg(max(mean_pixels|x_g − f_φ|, 1e-5))
  L_G = generator_loss_scale · Σ_kept ℓ / B   (samples whose x_g, f_φ or f_ψ is non-finite are
  dropped)
Fake-score step (generator frozen), the plain EDM loss:
  ln σ ~ N(fake_p_mean, fake_p_std²);  λ(σ) = (σ² + σ_d²)/(σ σ_d)², non-finite samples dropped;
  L_ψ = fake_score_loss_scale · Σ_kept R_pixels[λ(σ)(D_ψ(x_g + σ n) − x_g)²] / B,
  R = mean over pixels (fake_score_reduction='mean', the default) or sum ('sum').
  With method.augment_p = p > 0 (SiD's and EDM's CIFAR-10 default, --augment 0.12), x_g is first
  replaced by EDM's geometric augmentation of it (target and noisy input alike) and D_ψ gets the
  9-d augment labels (diffusion/augment.py), as mingyuanzhou/SiD sid_loss.py does in this loss
  only; the generator loss calls both denoisers without labels (= SiD's zero labels).
Loss scale. Under Adam a constant factor c on a loss acts as ε/c, so the scale is part of the
recipe. The official SiD code (mingyuanzhou/SiD training/sid_training_loop.py: `loss.sum()
.mul(loss_scaling_G / batch_gpu_total)` with --lsg 100, `loss.sum().mul(loss_scaling /
batch_gpu_total)` with --ls 1) back-propagates 100/B·Σ for the generator and 1/B·Σ over samples
AND pixels for the fake score: `OFFICIAL_SCALING`, used by the released recipes
(defaults.sid_edm). The defaults (1, 1, 'mean') are those of the digits and toy configs.
SiD-LSG's released code uses loss_scaling_G = loss_scaling = 1 with pixel sums (its fake loss is
an ε-MSE on SD latents, not this EDM loss).
The schedule is 1 fake step per generator step (critic_steps = 1).

SiD-LSG (long and short guidance) for conditional teachers (any condition pytree; the
unconditional branch is the spec's null condition, conditioning.guided):
  κ1 (kappa_train_fake): the fake score's output while training it is uncond + κ1 (cond − uncond);
  κ2 = κ3 (kappa_fake): the same guidance on f_ψ inside the generator loss;
  κ4 (kappa_real): the same guidance on the teacher's f_φ inside the generator loss;
  with method.guidance_sigma_max, all three apply only at σ ≤ it (1 above: guidance in a
  limited interval of noise levels, as f-distill's and SIM's teacher guidance).
When any κ ≠ 1, each sample's condition is dropped (set to ∅) with probability cond_drop while
training the fake score, so that its unconditional branch is learnt. All κ = 1 is plain SiD.

σ laws (diffusion/sigma_laws.py): the generator's method.sigma_law ('truncated_karras', SiD's
draw above, or 'uniform_t' over a DDPM teacher's timesteps as SiD-LSG draws t); the fake
score's method.fake_sigma_law ('lognormal', EDM's law above, or 'generator': the generator's
law, so that the fake score is trained at every σ the generator loss evaluates it — SiD-LSG
trains both on one t ∈ [20, 980) draw). The fake score's weighting method.dsm_weighting: 'edm'
(λ(σ) above) or 'eps' (1/σ²: the ε-MSE of SiD-LSG's ε-prediction fake score).

Config keys (config.method): alpha, sigma_law, t_max, fake_sigma_law, fake_p_mean, fake_p_std,
dsm_weighting, generator_loss_scale, fake_score_loss_scale, fake_score_reduction, augment_p
(0 = off), kappa_train_fake, kappa_fake, kappa_real, cond_drop, critic_steps (= 1). σ_init is
config.diffusion.sigma_init.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections

from fdistill_jax import conditioning
from fdistill_jax import validation as V
from fdistill_jax.validation import need
from fdistill_jax.diffusion import augment, few_step, sigma_laws
from fdistill_jax.methods import common
from fdistill_jax.nets import Nets

GENERATOR_NETS = ("generator",)
CRITIC_NETS = ("fake_score",)

sg = common.sg
REDUCTIONS = ("mean", "sum")
SIGMA_LAWS = ("truncated_karras", "uniform_t")
FAKE_SIGMA_LAWS = ("lognormal", "generator")
# mingyuanzhou/SiD run_sid.sh (--lsg 100 --ls 1) and sid_training_loop.py (pixel sums / B).
OFFICIAL_SCALING = dict(generator_loss_scale=100.0, fake_score_loss_scale=1.0,
                        fake_score_reduction="sum")


def init_extras(cfg: ml_collections.ConfigDict) -> dict:
  del cfg
  return {}


def method_config(**overrides) -> ml_collections.ConfigDict:
  """config.method for SiD (SiD defaults; κ = 1 is plain SiD, κ ≠ 1 is SiD-LSG)."""
  m = dict(name="sid", alpha=1.2, sigma_law="truncated_karras", t_max=800.0,
           fake_sigma_law="lognormal", fake_p_mean=-1.2, fake_p_std=1.2, dsm_weighting="edm",
           generator_loss_scale=1.0, fake_score_loss_scale=1.0, fake_score_reduction="mean",
           kappa_train_fake=1.0, kappa_fake=1.0, kappa_real=1.0, guidance_sigma_max=float("inf"),
           cond_drop=0.1, critic_steps=1)
  m.update(overrides)
  return ml_collections.ConfigDict(m)


RULES = {  # Ranges beyond check_config's (types and finiteness: config_checks.check_types).
    "method.generator_loss_scale": V.above(0, "a finite loss scale"),
    "method.fake_score_loss_scale": V.above(0, "a finite loss scale"),
    "method.fake_score_reduction": V.one_of(*REDUCTIONS),
    "method.fake_p_mean": V.within(-20, 20, "a mean of ln σ"),
    "method.fake_p_std": V.within(0, 10, "a std of ln σ", lo_open=True),
}


FIELDS = {  # Every field (fdistill.FIELDS says why).
    "method.critic_steps": common.CRITIC_STEPS_RULE,
    **RULES,
    "method.alpha": V.at_least(0, "a finite number (SiD uses 1.2, or 1.0)"),
    "method.t_max": V.within(0, 1000, "a finite number", lo_open=True),
    "method.sigma_law": V.one_of(*SIGMA_LAWS),
    "method.fake_sigma_law": V.one_of(*FAKE_SIGMA_LAWS),
    "method.dsm_weighting": V.one_of("edm", "eps", "velocity"),
    **{f"method.{k}": V.at_least(0, "a guidance scale (1 = no guidance)")
       for k in ("kappa_train_fake", "kappa_fake", "kappa_real")},
    "method.guidance_sigma_max": V.above(0, "a noise level (inf = guidance at every σ)"),
    "method.cond_drop": V.within(0, 1, "a probability", hi_open=True),
    "method.augment_p": V.probability(),
}
# Read without a default (SIM, whose generator loss is its own, needs SHARED_REQUIRED only).
SHARED_REQUIRED = ("critic_steps", "dsm_weighting", "fake_p_mean", "fake_p_std",
                   "fake_sigma_law", "sigma_law", "t_max")
REQUIRED = SHARED_REQUIRED + ("generator_loss_scale", "kappa_fake", "kappa_real")


def check_config(cfg) -> None:
  """Validates SiD's keys of cfg.method (SIM calls it for the shared ones); raises ConfigError."""
  m = cfg.method
  V.check_fields(cfg, FIELDS)
  if "alpha" in m:
    need(m.alpha >= 0, "method.alpha", m.alpha, "must be >= 0 (SiD uses 1.2, or 1.0)")
  need(0 < m.t_max <= 1000, "method.t_max", m.t_max, "must be in (0, 1000]")
  need(m.fake_p_std > 0, "method.fake_p_std", m.fake_p_std, "must be > 0")
  need(m.sigma_law in SIGMA_LAWS, "method.sigma_law", m.sigma_law, f"allowed: {SIGMA_LAWS}")
  need(m.fake_sigma_law in FAKE_SIGMA_LAWS, "method.fake_sigma_law", m.fake_sigma_law,
       f"allowed: {FAKE_SIGMA_LAWS}")
  need(m.dsm_weighting in ("edm", "eps", "velocity"), "method.dsm_weighting", m.dsm_weighting,
       "allowed: ('edm', 'eps', 'velocity')")
  for k in ("kappa_train_fake", "kappa_fake", "kappa_real"):
    if k in m:
      need(m[k] >= 0, f"method.{k}", m[k], "a guidance scale >= 0 (1 = no guidance)")
  if "guidance_sigma_max" in m:
    need(m.guidance_sigma_max > 0, "method.guidance_sigma_max", m.guidance_sigma_max,
         "a noise level > 0 above which guidance is off (inf = guidance at every σ)")
  if "cond_drop" in m:
    need(0 <= m.cond_drop < 1, "method.cond_drop", m.cond_drop, "must be in [0, 1)")
  augment.check_p(cfg)


# ----------------------------------------------------------------------------- shared pieces
def any_guidance(m) -> bool:
  return any(float(m.get(k, 1.0)) != 1.0 for k in ("kappa_train_fake", "kappa_fake", "kappa_real"))


def ties_kappas(m, nets: Nets) -> bool:
  """SiD-LSG with a student that takes w as an input: every κ is each sample's own w, so its
  fake score learns the ∅ branch (label dropout) too. SIM guides only the teacher."""
  return "kappa_real" in m and isinstance(nets.cond, conditioning.WithGuidance)


def finite_rows(*xs: jax.Array) -> jax.Array:
  """bool [B]: True where every array is finite in that sample."""
  ok = jnp.ones((xs[0].shape[0],), bool)
  for x in xs:
    ok = ok & jnp.all(jnp.isfinite(x.reshape(x.shape[0], -1)), axis=1)
  return ok


def zero_rows(x: jax.Array, keep: jax.Array) -> jax.Array:
  """x with the rows where keep [B] is False replaced by zeros."""
  return jnp.where(common.bcast(keep, x), x, 0.0)


def masked_batch_mean(per_sample: jax.Array, keep: jax.Array) -> jax.Array:
  """Σ_kept ℓ / B (SiD divides by the full batch after dropping); where-safe for NaN rows."""
  return jnp.sum(jnp.where(keep, per_sample, 0.0)) / per_sample.shape[0]


def pixel_reduce(x: jax.Array, reduction: str) -> jax.Array:
  """[B, ...] -> [B]: mean or sum over the non-batch axes."""
  if reduction == "mean":
    return common.per_sample_mean(x)
  if reduction == "sum":
    return jnp.sum(x.reshape(x.shape[0], -1), axis=1)
  raise ValueError(f"config.method.fake_score_reduction={reduction!r}; allowed: {REDUCTIONS}")


def sid_per_sample(x_g, teacher_x0, fake_x0, alpha: float) -> jax.Array:
  """SiD generator loss per sample [B] (float32); no stop-gradient on the denoiser outputs.

  x_g, teacher_x0, fake_x0: [B, ...]. Normaliser sg(max(mean|x_g − f_φ|, 1e-5)) per sample.
  """
  x_g, fp, fq = (a.astype(jnp.float32) for a in (x_g, teacher_x0, fake_x0))
  norm = jnp.maximum(common.per_sample_mean(jnp.abs(sg(x_g) - sg(fp))), 1e-5)
  d = fp - fq
  term = d * ((fp - x_g) - alpha * d)
  return jnp.sum(term.reshape(term.shape[0], -1), axis=1) / norm


def generator_sigma(key, n: int, cfg, nets: Nets) -> jax.Array:
  """σ [n] of the generator loss (method.sigma_law over [diffusion.sigma_min, sigma_max])."""
  m, d = cfg.method, cfg.diffusion
  return sigma_laws.draw(key, (n,), m.sigma_law, sigma_min=d.sigma_min, sigma_max=d.sigma_max,
                         t_max=m.t_max, time=nets.time)


def generator_draws(batch, key, cfg, nets: Nets):
  """(z, σ, n) of a generator step: z, n ~ N(0, I) [B, ...]; σ [B] from method.sigma_law."""
  kz, kt, kn = jax.random.split(key, 3)
  shape = batch["x"].shape
  return (jax.random.normal(kz, shape, jnp.float32), generator_sigma(kt, shape[0], cfg, nets),
          jax.random.normal(kn, shape, jnp.float32))


def chain_inputs(batch, key) -> dict:
  """What a few-step student's training sample needs beyond z (Nets.train_generate); a K = 1
  student ignores it, so its draws are those of a one-step run."""
  return {"chain_key": few_step.chain_key(key), "data": batch["x"]}


def generator_sample(gen_params, z, sigma, n, cond, nets: Nets, chain: dict | None = None):
  """(x_g, x_t, keep): x_g = G_θ(σ_init z) carries ∂/∂θ, x_t = x_g + σ n; keep [B] finite rows.
  chain: `chain_inputs` for a few-step student (x_g at its chain positions)."""
  x_g = nets.train_generate(gen_params, z, cond, **(chain or {}))
  # A non-finite generator sample must not reach the denoisers (NaN·0 in the backward pass).
  ok = finite_rows(sg(x_g))
  x_g = jnp.where(common.bcast(ok, x_g), x_g, 0.0)
  return x_g, x_g + common.bcast(sigma, x_g) * n, ok


def denoisers(params, frozen, nets: Nets):
  """(teacher_fn, fake_fn) with parameters frozen; both keep input gradients."""
  fake_params = sg(params["fake_score"])
  teacher = lambda x, s, l: nets.teacher(frozen, x, s, l)
  fake = lambda x, s, l: nets.student(fake_params, x, s, l)
  return teacher, fake


# ----------------------------------------------------------------------------- losses
def generator_loss_at(params, frozen, cond, z, sigma, n, nets: Nets, cfg,
                      chain: dict | None = None):
  """SiD(-LSG) generator loss at given draws; returns (loss, metrics)."""
  m = cfg.method
  x_g, x_t, ok = generator_sample(params["generator"], z, sigma, n, cond, nets, chain)
  teacher, fake = denoisers(params, frozen, nets)
  # A student that takes w as an input: every κ is each sample's own w (conditioning.scale_of).
  kappa = lambda k: conditioning.scale_of(nets.cond, cond, k)
  f_real = conditioning.guided(teacher, x_t, sigma, cond, kappa(m.kappa_real), nets.cond,
                               m.guidance_sigma_max)
  f_fake = conditioning.guided(fake, x_t, sigma, cond, kappa(m.kappa_fake), nets.cond,
                               m.guidance_sigma_max)
  keep = ok & finite_rows(sg(f_real), sg(f_fake))
  # Zero the dropped rows (select, not multiply) so no NaN reaches the backward pass.
  f_real, f_fake = zero_rows(f_real, keep), zero_rows(f_fake, keep)
  per = sid_per_sample(x_g, f_real, f_fake, m.alpha)
  loss = m.generator_loss_scale * masked_batch_mean(per, keep)
  metrics = {"sid": loss, "kept_frac": jnp.mean(keep.astype(jnp.float32)),
             "sigma_mean": jnp.mean(sigma)}
  return loss, metrics


def generator_loss(params, frozen, batch, key, extras, nets: Nets, cfg):
  """(L_G, (metrics, extras)); differentiable w.r.t. params['generator'] through x_g and x_t."""
  z, sigma, n = generator_draws(batch, key, cfg, nets)
  loss, metrics = generator_loss_at(params, frozen, batch["cond"], z, sigma, n, nets, cfg,
                                    chain_inputs(batch, key))
  return loss, (metrics, extras)


def fake_score_draws(batch, key, cfg, nets: Nets):
  """(z, σ, n, drop) of a fake-score step: σ [B] from method.fake_sigma_law; drop [B] bool
  condition dropout, all False unless the problem is conditional and some κ ≠ 1 (SiD-LSG)."""
  m = cfg.method
  kz, ks, kn, kdrop = jax.random.split(key, 4)
  shape = batch["x"].shape
  guides = any_guidance(m) or ties_kappas(m, nets)
  drop = nets.cond.drop_mask(kdrop, m.get("cond_drop", 0.0) if guides else 0.0, shape[0])
  if m.fake_sigma_law == "generator":
    sigma = generator_sigma(ks, shape[0], cfg, nets)
  else:
    sigma = sigma_laws.draw(ks, (shape[0],), "lognormal", sigma_min=cfg.diffusion.sigma_min,
                            sigma_max=cfg.diffusion.sigma_max, p_mean=m.fake_p_mean,
                            p_std=m.fake_p_std)
  return (jax.random.normal(kz, shape, jnp.float32), sigma,
          jax.random.normal(kn, shape, jnp.float32), drop)


def fake_score_loss_at(params, cond, z, sigma, n, drop, nets: Nets, cfg, key=None,
                       augment_key=None, chain: dict | None = None):
  """EDM loss of the fake score on sg(x_g) with κ1 guidance; conditions of `drop` rows set to ∅.

  x_g is augmented first when method.augment_p > 0 and augment_key is given (critic_loss gives
  one). Returns (loss, metrics); differentiable w.r.t. params['fake_score'] only.
  """
  m = cfg.method
  x_g = sg(nets.train_generate(sg(params["generator"]), z, cond, **(chain or {})))
  ok = finite_rows(x_g)
  x_g = jnp.where(common.bcast(ok, x_g), x_g, 0.0)
  cond = nets.cond.replace(cond, drop)
  p = m.get("augment_p", 0.0) if augment_key is not None else 0.0
  x_g, aug = augment.for_denoiser(augment_key, x_g, p)
  x_t = x_g + common.bcast(sigma, x_g) * n
  fake = lambda x, s, c: nets.student(params["fake_score"], x, s, c, key=key, **aug)
  k1 = m.get("kappa_train_fake", 1.0)
  f_fake = conditioning.guided(
      fake, x_t, sigma, cond, conditioning.scale_of(nets.cond, cond, k1) if ties_kappas(m, nets)
      else k1, nets.cond, m.guidance_sigma_max)
  keep = ok & finite_rows(sg(f_fake))
  f_fake = zero_rows(f_fake, keep)
  w = common.dsm_weight(sigma, m.dsm_weighting, cfg.diffusion.sigma_data)
  per = w * pixel_reduce(jnp.square(f_fake.astype(jnp.float32) - x_g),
                         m.get("fake_score_reduction", "mean"))
  loss = m.get("fake_score_loss_scale", 1.0) * masked_batch_mean(per, keep)
  return loss, {"dsm": loss, "kept_frac": jnp.mean(keep.astype(jnp.float32)),
                "label_drop_frac": jnp.mean(drop.astype(jnp.float32))}


def critic_loss(params, frozen, batch, key, extras, nets: Nets, cfg):
  """(L_ψ, (metrics, extras)); w.r.t. params['fake_score']."""
  del frozen
  kd, kf = jax.random.split(key)
  z, sigma, n, drop = fake_score_draws(batch, kd, cfg, nets)
  # fold_in, not a 3rd split: with augment_p = 0 the draws are those of before.
  loss, metrics = fake_score_loss_at(params, batch["cond"], z, sigma, n, drop, nets, cfg, key=kf,
                                     augment_key=jax.random.fold_in(key, 1),
                                     chain=chain_inputs(batch, key))
  return loss, (metrics, extras)
