"""SIM: Score Implicit Matching (Luo et al. 2024), the exact fixed-π form (arXiv 2410.16794).

Divergence: D(θ) = ∫ w(σ) E_{x~π_σ}[d(s_p(x) − s_{q_θ,σ}(x))] dσ with π_σ = q_{sg θ,σ}. Its
θ-gradient equals the gradient of the tractable surrogate (x0 form, x_t = x_g + σ n):
  y = (D_p(x_t) − D_ψ(x_t))/σ²                       (score difference, score units)
  ℓ = w · d'(y)ᵀ (D_ψ(x_t) − x_g)/σ²                 (= d'(y)ᵀ(s_ψ − ∇ log q(x_t|x_g)))
with gradients through x_t into BOTH d'(y) and D_ψ (only the parameters of the teacher and the
fake score are frozen). Distances d (per-sample flattened norm):
  'l2':           d(y) = ‖y‖²,              d'(y) = 2y                → ℓ = 2/σ⁴·SiD(α=1)·w
  'pseudo_huber': d(y) = √(‖y‖² + c²) − c,  d'(y) = y/√(‖y‖² + c²)
                  with c in SCORE units (huber_space='score'), i.e. (D_p − D_ψ)/√(‖D_p − D_ψ‖² +
                  c²σ⁴) in x0 units; or with huber_space='x0' the same distance taken between
                  the x0 predictions, (D_p − D_ψ)/√(‖D_p − D_ψ‖² + c²), for a c given in x0 units
                  (the consistency-model rule c = 0.00054·√dim is stated for such distances).
Weighting w (config.method.weighting):
  'none':  w = 1, the raw integrand (the Gaussian score-gradient test uses this);
  'sid':   w = σ⁴ · sg(1/max(mean|x_g − D_p|, 1e-5)), SiD's normaliser times σ⁴, so that
           'l2' is exactly 2·SiD(α=1) and training scales like SiD.
Ablation form='sp' (the paper's score-projection variant): ℓ = w·sg(d'(y))ᵀ(D_p − x_g)/σ² (not the exact gradient
when the generator's Jacobian varies per sample; kept only as a regression guard).
The fake score is trained exactly as in SiD (methods/sid.py), one fake step per generator step.
Teacher guidance (text-to-image): D_p is the teacher guided at method.guidance_scale (only at
σ ≤ method.guidance_sigma_max when set); the fake score is not guided.
Config keys (config.method): distance ('l2'|'pseudo_huber'), huber_c, huber_space, weighting,
form ('exact'|'sp'), the σ laws and fake weighting of SiD (sigma_law, t_max, fake_sigma_law,
fake_p_mean, fake_p_std, dsm_weighting), loss_scale, critic_steps.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections

from fdistill_jax import conditioning
from fdistill_jax.nets import Nets
from fdistill_jax.methods import common, sid
from fdistill_jax import validation as V
from fdistill_jax.validation import need

GENERATOR_NETS = ("generator",)
CRITIC_NETS = ("fake_score",)
DISTANCES = ("l2", "pseudo_huber")
HUBER_SPACES = ("score", "x0")
WEIGHTINGS = ("none", "sid")
FORMS = ("exact", "sp")

sg = common.sg


def init_extras(cfg: ml_collections.ConfigDict) -> dict:
  del cfg
  return {}


def method_config(**overrides) -> ml_collections.ConfigDict:
  """config.method for SIM (pseudo-Huber, SiD-matched weighting, SiD's fake-score settings)."""
  m = dict(name="sim", distance="pseudo_huber", huber_c=1.0, huber_space="score",
           weighting="sid", form="exact",
           sigma_law="truncated_karras", t_max=800.0, fake_sigma_law="lognormal",
           fake_p_mean=-1.2, fake_p_std=1.2, dsm_weighting="edm", loss_scale=1.0,
           critic_steps=1, guidance_scale=1.0, guidance_sigma_max=float("inf"))
  m.update(overrides)
  return ml_collections.ConfigDict(m)


RULES = {
    "method.loss_scale": V.above(0, "a finite loss scale"),
    "method.guidance_scale": V.at_least(0, "a guidance scale (1 = no guidance)"),
}


FIELDS = {  # Beyond SiD's shared fake-score fields (fdistill.FIELDS says why).
    **RULES,
    "method.distance": V.one_of(*DISTANCES),
    "method.huber_c": V.at_least(0, "a finite number (score units; > 0 for pseudo_huber)"),
    "method.huber_space": V.one_of(*HUBER_SPACES),
    "method.weighting": V.one_of(*WEIGHTINGS),
    "method.form": V.one_of(*FORMS),
}
REQUIRED = sid.SHARED_REQUIRED + ("distance", "form", "guidance_scale", "guidance_sigma_max",
                                  "huber_c", "huber_space", "loss_scale", "weighting")
USES = (sid,)


def check_config(cfg) -> None:
  """Validates SIM's keys of cfg.method (and the fake-score keys it shares with SiD)."""
  m = cfg.method
  sid.check_config(cfg)
  V.check_fields(cfg, FIELDS)
  need(m.distance in DISTANCES, "method.distance", m.distance, f"allowed: {DISTANCES}")
  need(m.huber_c > 0 or m.distance == "l2", "method.huber_c", m.huber_c,
       "must be > 0 (score units) for pseudo_huber")
  need(m.huber_space in HUBER_SPACES, "method.huber_space", m.huber_space,
       f"allowed: {HUBER_SPACES}")
  need(m.weighting in WEIGHTINGS, "method.weighting", m.weighting, f"allowed: {WEIGHTINGS}")
  need(m.form in FORMS, "method.form", m.form, f"allowed: {FORMS}")


def _flat(x):
  return x.reshape(x.shape[0], -1).astype(jnp.float32)


def distance_grad(diff_x0: jax.Array, sigma: jax.Array, distance: str, c: float,
                  huber_space: str = "score") -> jax.Array:
  """d'(y) for y = diff_x0/σ² (score units). diff_x0 [B, D] float32, sigma [B]. Returns [B, D]."""
  s2 = sigma[:, None] ** 2
  if distance == "l2":
    return 2.0 * diff_x0 / s2
  if distance == "pseudo_huber":
    # y/√(‖y‖²+c²) with y = Δ/σ²  ==  Δ/√(‖Δ‖² + c²σ⁴): c in score units is c·σ² in x0 units.
    c_x0 = c * s2 if huber_space == "score" else c
    return diff_x0 / jnp.sqrt(jnp.sum(jnp.square(diff_x0), -1, keepdims=True) + c_x0 ** 2)
  raise ValueError(f"config.method.distance={distance!r}; allowed: {DISTANCES}")


def sim_per_sample(x_g, teacher_x0, fake_x0, sigma, *, distance: str, c: float,
                   weighting: str, form: str = "exact", huber_space: str = "score") -> jax.Array:
  """SIM generator loss per sample [B]; x_g/teacher_x0/fake_x0 [B, ...] all keep gradients."""
  xg, dp, dq = _flat(x_g), _flat(teacher_x0), _flat(fake_x0)
  sigma = sigma.astype(jnp.float32)
  u = distance_grad(dp - dq, sigma, distance, c, huber_space)
  if form == "exact":
    per = jnp.sum(u * (dq - xg), -1) / sigma ** 2
  elif form == "sp":
    per = jnp.sum(sg(u) * (dp - xg), -1) / sigma ** 2
  else:
    raise ValueError(f"config.method.form={form!r}; allowed: {FORMS}")
  if weighting == "none":
    return per
  if weighting == "sid":
    norm = jnp.maximum(jnp.mean(jnp.abs(sg(xg) - sg(dp)), -1), 1e-5)
    return per * sigma ** 4 / norm
  raise ValueError(f"config.method.weighting={weighting!r}; allowed: {WEIGHTINGS}")


def generator_loss_at(params, frozen, cond, z, sigma, n, nets: Nets, cfg,
                      chain: dict | None = None):
  """SIM generator loss at given draws (z, σ, n as sid.generator_draws); (loss, metrics)."""
  m = cfg.method
  x_g, x_t, ok = sid.generator_sample(params["generator"], z, sigma, n, cond, nets, chain)
  teacher, fake = sid.denoisers(params, frozen, nets)
  # Teacher guidance (text-to-image, e.g. SIM-DiT from PixArt-α); w = 1 is one unguided call.
  f_real = conditioning.guided(teacher, x_t, sigma, cond,
                               conditioning.scale_of(nets.cond, cond, m.guidance_scale),
                               nets.cond, m.guidance_sigma_max)
  f_fake = fake(x_t, sigma, cond)
  keep = ok & sid.finite_rows(sg(f_real), sg(f_fake))
  # Zero the dropped rows (select, not multiply) so no NaN reaches the backward pass.
  f_real, f_fake = sid.zero_rows(f_real, keep), sid.zero_rows(f_fake, keep)
  per = sim_per_sample(x_g, f_real, f_fake, sigma, distance=m.distance, c=m.huber_c,
                       weighting=m.weighting, form=m.form, huber_space=m.huber_space)
  loss = m.loss_scale * sid.masked_batch_mean(per, keep)
  return loss, {"sim": loss, "kept_frac": jnp.mean(keep.astype(jnp.float32))}


def generator_loss(params, frozen, batch, key, extras, nets: Nets, cfg):
  """(L_G, (metrics, extras)); differentiable w.r.t. params['generator']."""
  z, sigma, n = sid.generator_draws(batch, key, cfg, nets)
  loss, metrics = generator_loss_at(params, frozen, batch["cond"], z, sigma, n, nets, cfg,
                                    sid.chain_inputs(batch, key))
  return loss, (metrics, extras)


def critic_loss(params, frozen, batch, key, extras, nets: Nets, cfg):
  """SiD's fake-score EDM loss; w.r.t. params['fake_score']."""
  return sid.critic_loss(params, frozen, batch, key, extras, nets, cfg)
