"""Pieces shared by the distribution-matching methods (f-distill, DMD/DMD2/VSD, SiD, SIM).

All functions are pure and jit-friendly. Batch statistics (the time-bin ratio means, the mean of
h) are plain reductions over the batch axis: under `jax.jit` with a batch sharded over a mesh the
arrays are global, so XLA turns these means into exact cross-device (and cross-host) reductions.
No pmean is needed and the same code runs on one device or a pod.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from fdistill_jax import divergences
from fdistill_jax import validation as V
from fdistill_jax.diffusion import edm

sg = jax.lax.stop_gradient

# method.critic_steps, for every method that alternates critic and generator steps: one rule, in
# the FIELDS of each such method (fdistill and those built on it, sid, uni_instruct).
CRITIC_STEPS_RULE = V.Rule(lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1,
                           "an int >= 1 (critic steps per generator step)")


def per_sample_mean(x: jax.Array) -> jax.Array:
  """Mean over all non-batch axes: [B, ...] -> [B]."""
  return jnp.mean(x.reshape(x.shape[0], -1), axis=1)


def bcast(v: jax.Array, x: jax.Array) -> jax.Array:
  """Per-sample [B] -> [B, 1, ..., 1] to broadcast against x [B, ...]."""
  return v.reshape(v.shape + (1,) * (x.ndim - v.ndim))


# ----------------------------------------------------------------------------- density ratio
def density_ratio(logits: jax.Array, logit_clip: float = 10.0, r_min: float = 0.1,
                  r_max: float = 20.0) -> jax.Array:
  """r = exp(ℓ) from discriminator logits, as FastGen: mean over heads, clamp ℓ, exp, clamp r.

  logits: [B] or [B, heads] (any float dtype). Returns float32 [B], stop-gradiented.
  """
  logits = sg(logits).astype(jnp.float32)
  if logits.ndim == 2:
    logits = jnp.mean(logits, axis=1)
  return jnp.clip(jnp.exp(jnp.clip(logits, -logit_clip, logit_clip)), r_min, r_max)


def time_bin_index(sigma: jax.Array, num_bins: int, t_min: float, t_max: float) -> jax.Array:
  """Index of equal-width (linear in σ) bins over [t_min, t_max]; int32 [B], clamped to range."""
  width = (t_max - t_min) / num_bins
  idx = jnp.floor((sigma.astype(jnp.float32) - t_min) / width).astype(jnp.int32)
  return jnp.clip(idx, 0, num_bins - 1)


def normalize_ratio_by_time(ratio: jax.Array, sigma: jax.Array, bins: jax.Array, ema: float,
                            t_min: float, t_max: float) -> tuple[jax.Array, jax.Array]:
  """Stage 1 of f-distill's normalisation: divide r by a running per-time-bin mean of r.

  ratio: [B] float32; sigma: [B]; bins: [num_bins] float32 running means (start at 1).
  Each bin with samples in this (global) batch is updated as bins·ema + (1−ema)·mean_bin(r)
  (FastGen divides the bin sum by count + 1e-6); then r / (bins_new[idx] + 1e-6).
  Returns (normalised ratio [B], new bins [num_bins]).
  """
  num_bins = bins.shape[0]
  idx = time_bin_index(sigma, num_bins, t_min, t_max)
  onehot = jax.nn.one_hot(idx, num_bins, dtype=jnp.float32)  # [B, bins]
  count = jnp.sum(onehot, axis=0)
  total = jnp.sum(onehot * ratio[:, None], axis=0)
  batch_mean = total / (count + 1e-6)
  new_bins = jnp.where(count > 0, bins * ema + (1.0 - ema) * batch_mean, bins)
  return ratio / (new_bins[idx] + 1e-6), new_bins


def normalized_h(ratio: jax.Array, divergence: str) -> jax.Array:
  """Stage 2: h(r) divided by its mean over the global batch (+1e-6). float32 [B]."""
  h = divergences.get(divergence).h(ratio)
  h = jnp.broadcast_to(h, ratio.shape).astype(jnp.float32)
  return h / (jnp.mean(h) + 1e-6)


def fdistill_weight(logits: jax.Array, sigma: jax.Array, bins: jax.Array, *, divergence: str,
                    ratio_normalization: bool, ratio_ema: float, t_min: float, t_max: float,
                    logit_clip: float = 10.0, r_min: float = 0.1, r_max: float = 20.0
                    ) -> tuple[jax.Array, jax.Array, dict]:
  """h̃ of f-distill from discriminator logits: ratio → time-bin normalisation → h → /mean(h).

  Returns (h̃ [B] float32, new bins, stats dict). Matches FastGen `_get_f_div_weighting_h`.
  """
  ratio = density_ratio(logits, logit_clip, r_min, r_max)
  raw = ratio
  if ratio_normalization:
    ratio, bins = normalize_ratio_by_time(ratio, sg(sigma), bins, ratio_ema, t_min, t_max)
  h = normalized_h(ratio, divergence)
  stats = {"ratio_mean": jnp.mean(raw), "ratio_min": jnp.min(raw), "ratio_max": jnp.max(raw),
           "h_min": jnp.min(h), "h_mean": jnp.mean(h), "h_max": jnp.max(h)}
  return h, bins, stats


# ----------------------------------------------------------------------------- generator losses
def pseudo_target_loss(x: jax.Array, grad: jax.Array) -> jax.Array:
  """½·mean((x − sg(x − g))²): its gradient w.r.t. x is g / x.size. Scalar float32."""
  target = sg(x - grad)
  return 0.5 * jnp.mean(jnp.square(x.astype(jnp.float32) - target.astype(jnp.float32)))


def dm_generator_loss(x_g: jax.Array, teacher_x0: jax.Array, fake_x0: jax.Array,
                      h: jax.Array | None = None, normalize: bool = True) -> jax.Array:
  """The DMD/DMD2/f-distill/VSD distribution-matching loss on the generator output.

  g = h̃ · (D_fake − D_teacher) / mean_pixels|x_g − D_teacher| (DMD normalisation, per sample);
  loss = ½·mean((x_g − sg(x_g − g))²). teacher_x0 and fake_x0 are stop-gradiented: the loss
  reaches θ only through x_g. normalize=False gives plain VSD (no 1/mean|·| weight).
  x_g, teacher_x0, fake_x0: [B, ...]; h: [B] or None. Returns a scalar.
  """
  teacher_x0, fake_x0 = sg(teacher_x0).astype(jnp.float32), sg(fake_x0).astype(jnp.float32)
  w = jnp.ones((x_g.shape[0],), jnp.float32)
  if normalize:
    w = 1.0 / (per_sample_mean(jnp.abs(sg(x_g).astype(jnp.float32) - teacher_x0)) + 1e-6)
  if h is not None:
    w = w * sg(h).astype(jnp.float32)
  grad = (fake_x0 - teacher_x0) * bcast(w, fake_x0)
  return pseudo_target_loss(x_g, grad)


# ----------------------------------------------------------------------------- GAN losses
def gan_generator_loss(fake_logits: jax.Array) -> jax.Array:
  """Non-saturating generator loss mean softplus(−ℓ_fake) over all elements."""
  return jnp.mean(jax.nn.softplus(-fake_logits.astype(jnp.float32)))


def gan_discriminator_loss(real_logits: jax.Array, fake_logits: jax.Array) -> jax.Array:
  """Logistic discriminator loss mean softplus(ℓ_fake) + mean softplus(−ℓ_real)."""
  return (jnp.mean(jax.nn.softplus(fake_logits.astype(jnp.float32)))
          + jnp.mean(jax.nn.softplus(-real_logits.astype(jnp.float32))))


def approx_r1(real_logits: jax.Array, perturbed_real_logits: jax.Array) -> jax.Array:
  """Approximate R1 (APT): mean (ℓ(x_real) − ℓ(x_real + 0.1ε))². Multiply by γ outside."""
  d = real_logits.astype(jnp.float32) - perturbed_real_logits.astype(jnp.float32)
  return jnp.mean(jnp.square(d))


# ----------------------------------------------------------------------------- fake-score DSM
DSM_WEIGHTINGS = ("none", "edm", "eps", "velocity")


def dsm_weight(sigma: jax.Array, weighting: str, sigma_data: float) -> jax.Array | None:
  """λ(σ) [B] of the fake score's x0-space DSM loss, or None (unweighted).

  'none': FastGen's unweighted x0 MSE; 'edm': EDM's λ = (σ² + σ_d²)/(σ σ_d)², unit variance for
  an EDM-preconditioned net; 'eps': λ = 1/σ², which makes ‖D − x0‖² the ε-MSE ‖ε̂ − ε‖² of an
  ε-prediction net (D = x − σ ε̂): the loss DMD2-SD, SiD-LSG and PixArt-DMD train their fake
  scores with. An ε-teacher's x0 error grows as σ·(its ε error), so an x0 MSE spends the fake
  score's capacity on the large σ where that error (and not the student) dominates.
  'velocity': λ = ((1 + σ)/σ)² = 1/s², which makes it the velocity MSE ‖v̂ − v‖² of a
  rectified-flow net (x0 = x_s − s v̂ with s = σ/(1+σ)): the flow-matching loss of SD3/FLUX.
  """
  if weighting == "none":
    return None
  if weighting == "edm":
    return edm.edm_loss_weight(sigma, sigma_data)
  if weighting == "eps":
    return 1.0 / jnp.square(sigma.astype(jnp.float32))
  if weighting == "velocity":
    sigma = sigma.astype(jnp.float32)
    return jnp.square((1.0 + sigma) / sigma)
  raise ValueError(f"dsm_weighting={weighting!r}; allowed: {DSM_WEIGHTINGS}")


def dsm_loss(fake_x0: jax.Array, x0: jax.Array, weight: jax.Array | None = None) -> jax.Array:
  """Denoising score matching in x0 space: mean[λ(σ)·(D_ψ(x_t) − sg(x0))²].

  weight: per-sample λ [B] or None (FastGen: no weighting; DMD2/EDM: λ(σ)).
  """
  err = jnp.square(fake_x0.astype(jnp.float32) - sg(x0).astype(jnp.float32))
  if weight is not None:
    err = err * bcast(weight.astype(jnp.float32), err)
  return jnp.mean(err)


# ----------------------------------------------------------------------------- schedule
def is_generator_step(step, generator_every: int):
  """FastGen's convention: iteration k is a generator step iff k mod freq == 0.

  With freq = 5 that is 1 generator step then 4 critic steps (fake score + discriminator);
  freq = 1 makes every step a generator step, so methods needing a critic use freq ≥ 2 or
  `critic_steps_per_generator` instead. Works on Python ints and traced arrays.
  """
  return step % generator_every == 0
