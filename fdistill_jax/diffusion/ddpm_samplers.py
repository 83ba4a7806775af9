"""Reference multi-step samplers for discrete-time DDPM ε-prediction teachers (PixArt-α, SD).

Both follow diffusers 0.42.1 step by step, so that a trajectory equals the PyTorch pipeline's to
float32 rounding (tests/test_ddpm_samplers.py):

* `dpm_solver_pp_2m`: `DPMSolverMultistepScheduler` with PixArt-α's shipped scheduler config
  (= the class defaults): algorithm_type "dpmsolver++", solver_order 2, solver_type "midpoint",
  timestep_spacing "linspace", steps_offset 0, lower_order_final True, euler_at_final False,
  final_sigmas_type "zero" (the last step is first order and lands on the x̂0 prediction),
  lambda_min_clipped −inf, no thresholding. PixArt's pipeline runs 20 steps.
* `ddim`: `DDIMScheduler` with η = 0. diffusers' class defaults are timestep_spacing "leading" and
  clip_sample=True (x̂0 clipped to [−1, 1], meant for pixel models; harmful on latents), so both
  are arguments here; the defaults follow PixArt's config (linspace, no clipping).

An ε model is `eps_fn(x [B, ...], t int32 [B], cond) -> ε̂ [B, ...]` with the DDPM integer time
t ∈ [0, T) (what PixArt's transformer takes; learned-σ channels already dropped). `cond` is any
pytree with a leading batch axis (e.g. {"embeddings": [B, L, D], "mask": [B, L]}).
`alphas_cumprod` is ᾱ_t for t = 0..T−1 (numpy, any schedule; PixArt: linear β 1e-4→0.02, T=1000).

Classifier-free guidance (`guidance_scale` w ≠ 1 with `null_cond`, e.g. the cached "" T5
embedding, batch 1 or B): ε = ε(x, ∅) + w·(ε(x, c) − ε(x, ∅)), evaluated as one call on the
concatenated batch [∅; c] as the pipeline does.
"""
from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

EpsFn = Callable[[jax.Array, jax.Array, Any], jax.Array]
SPACINGS = ("linspace", "leading", "trailing")


def guided_eps(eps_fn: EpsFn, guidance_scale: float, null_cond: Any = None) -> EpsFn:
  """ε with classifier-free guidance; the identity wrapper when guidance_scale == 1."""
  if guidance_scale == 1.0:
    return eps_fn
  if null_cond is None:
    raise ValueError(f"guidance_scale={guidance_scale} needs null_cond (e.g. the embedding "
                     'of "")')

  def fn(x, t, cond):
    b = x.shape[0]
    null = jax.tree_util.tree_map(lambda n, c: jnp.broadcast_to(n, c.shape).astype(c.dtype),
                                  null_cond, cond)
    both = jax.tree_util.tree_map(lambda n, c: jnp.concatenate([n, c]), null, cond)
    e = eps_fn(jnp.concatenate([x, x]), jnp.concatenate([t, t]), both)
    e_null, e_cond = e[:b], e[b:]
    return e_null + guidance_scale * (e_cond - e_null)
  return fn


def _check_alphas(alphas_cumprod) -> np.ndarray:
  a = np.asarray(alphas_cumprod)
  if a.ndim != 1 or a.size < 2 or not np.all((a > 0) & (a <= 1)):
    raise ValueError(f"alphas_cumprod must be a 1-D array of values in (0, 1], got shape {a.shape}")
  return a


def dpm_solver_timesteps(alphas_cumprod, num_steps: int, *, timestep_spacing: str = "linspace",
                         steps_offset: int = 0, final_sigmas_type: str = "zero"
                         ) -> tuple[np.ndarray, np.ndarray]:
  """(timesteps int64 [N], sigmas float32 [N+1]) as DPMSolverMultistepScheduler.set_timesteps.

  σ = sqrt((1 − ᾱ)/ᾱ) at each timestep, then 0 ("zero") or σ at t=0 ("sigma_min").
  """
  a = _check_alphas(alphas_cumprod)
  n_train = a.size
  if timestep_spacing == "linspace":
    ts = np.linspace(0, n_train - 1, num_steps + 1).round()[::-1][:-1]
  elif timestep_spacing == "leading":
    ts = (np.arange(0, num_steps + 1) * (n_train // (num_steps + 1))).round()[::-1][:-1]
    ts = ts + steps_offset
  elif timestep_spacing == "trailing":
    ts = np.arange(n_train, 0, -n_train / num_steps).round() - 1
  else:
    raise ValueError(f"timestep_spacing must be one of {SPACINGS}, got {timestep_spacing!r}")
  ts = ts.astype(np.int64)
  sig_all = np.sqrt((1 - a.astype(np.float32)) / a.astype(np.float32)).astype(np.float32)
  if final_sigmas_type == "zero":
    last = 0.0
  elif final_sigmas_type == "sigma_min":
    last = sig_all[0]
  else:
    raise ValueError(f"final_sigmas_type must be 'zero' or 'sigma_min', got {final_sigmas_type!r}")
  return ts, np.concatenate([sig_all[ts], [last]]).astype(np.float32)


def _dpm_coefficients(sigmas: np.ndarray, lower_order_final: bool, euler_at_final: bool,
                      final_sigmas_type: str) -> dict[str, np.ndarray]:
  """Per-step scalars of DPM-Solver++(2M) midpoint, in float32 with diffusers' operation order
  (its λ differences lose ~1e-6 relative to cancellation; matching them keeps the trajectories
  equal to rounding)."""
  s = sigmas.astype(np.float32)
  n = s.size - 1
  one = np.float32(1.0)
  with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
    alpha = one / np.sqrt(s * s + one)
    sigma = s * alpha
    lam = np.log(alpha) - np.log(sigma)  # +inf at σ = 0.
    i = np.arange(n)
    h = lam[i + 1] - lam[i]
    phi = alpha[i + 1] * (np.exp(-h) - one)  # = −1 when the target σ is 0.
    h0 = lam[i] - lam[np.maximum(i - 1, 0)]
    inv_r0 = one / (h0 / h)
  inv_r0 = np.where((i > 0) & np.isfinite(inv_r0), inv_r0, 0).astype(np.float32)
  last_first = (euler_at_final or (lower_order_final and n < 15) or final_sigmas_type == "zero")
  second = (i > 0) & ~((i == n - 1) & last_first)
  return dict(ratio=(sigma[i + 1] / sigma[i]).astype(np.float32), phi=phi.astype(np.float32),
              inv_r0=inv_r0, second=second, alpha_s=alpha[i], sigma_s=sigma[i])


def dpm_solver_pp_2m(eps_fn: EpsFn, latents: jax.Array, cond: Any, alphas_cumprod,
                     num_steps: int = 20, *, guidance_scale: float = 1.0, null_cond: Any = None,
                     timestep_spacing: str = "linspace", steps_offset: int = 0,
                     lower_order_final: bool = True, euler_at_final: bool = False,
                     final_sigmas_type: str = "zero", return_trajectory: bool = False):
  """DPM-Solver++(2M), midpoint, deterministic; diffusers' DPMSolverMultistepScheduler.

  latents: x_T ~ N(0, I) [B, ...] (init_noise_sigma = 1). Returns x_0 [B, ...] in the latents'
  dtype, or (x_0, traj) with traj = {"x": [N, B, ...] after each step, "x0": [N, B, ...] the
  x̂0 of each step, "t": [N] timesteps} when return_trajectory.
  """
  ts, sigmas = dpm_solver_timesteps(alphas_cumprod, num_steps, timestep_spacing=timestep_spacing,
                                    steps_offset=steps_offset, final_sigmas_type=final_sigmas_type)
  c = _dpm_coefficients(sigmas, lower_order_final, euler_at_final, final_sigmas_type)
  eps = guided_eps(eps_fn, guidance_scale, null_cond)
  b, dtype = latents.shape[0], latents.dtype

  def step(carry, k):
    x, m_prev = carry
    t = jnp.full((b,), k["t"], jnp.int32)
    e = eps(x.astype(dtype), t, cond).astype(jnp.float32)
    m0 = (x - k["sigma_s"] * e) / k["alpha_s"]  # x̂0 (convert_model_output)
    first = k["ratio"] * x - k["phi"] * m0
    d1 = k["inv_r0"] * (m0 - m_prev)
    x_new = jnp.where(k["second"], first - 0.5 * k["phi"] * d1, first)
    return (x_new, m0), (x_new.astype(dtype), m0.astype(dtype))

  per_step = dict(c, t=ts.astype(np.int32))
  x0 = latents.astype(jnp.float32)
  (x, _), (xs, m0s) = jax.lax.scan(step, (x0, jnp.zeros_like(x0)), per_step)
  if return_trajectory:
    return x.astype(dtype), {"x": xs, "x0": m0s, "t": jnp.asarray(ts, jnp.int32)}
  return x.astype(dtype)


def ddim_timesteps(num_train_timesteps: int, num_steps: int, *, timestep_spacing: str = "linspace",
                   steps_offset: int = 0) -> np.ndarray:
  """Timesteps int64 [N] as DDIMScheduler.set_timesteps."""
  if num_steps > num_train_timesteps:
    raise ValueError(f"num_steps={num_steps} exceeds num_train_timesteps={num_train_timesteps}")
  if timestep_spacing == "linspace":
    ts = np.linspace(0, num_train_timesteps - 1, num_steps).round()[::-1]
  elif timestep_spacing == "leading":
    ts = (np.arange(0, num_steps) * (num_train_timesteps // num_steps)).round()[::-1] + steps_offset
  elif timestep_spacing == "trailing":
    ts = np.round(np.arange(num_train_timesteps, 0, -num_train_timesteps / num_steps)) - 1
  else:
    raise ValueError(f"timestep_spacing must be one of {SPACINGS}, got {timestep_spacing!r}")
  return ts.astype(np.int64)


def ddim(eps_fn: EpsFn, latents: jax.Array, cond: Any, alphas_cumprod, num_steps: int = 20, *,
         guidance_scale: float = 1.0, null_cond: Any = None, timestep_spacing: str = "linspace",
         steps_offset: int = 0, set_alpha_to_one: bool = True, clip_sample: float | None = None,
         return_trajectory: bool = False):
  """Deterministic DDIM (η = 0), diffusers' DDIMScheduler.step.

  The previous timestep is t − T // N (diffusers' rule, whatever the spacing); below 0 it uses
  ᾱ = 1 (set_alpha_to_one) or ᾱ_0. clip_sample: clip x̂0 to [−c, c] (None: off). Returns like
  `dpm_solver_pp_2m`.
  """
  a = _check_alphas(alphas_cumprod).astype(np.float32)
  ts = ddim_timesteps(a.size, num_steps, timestep_spacing=timestep_spacing,
                      steps_offset=steps_offset)
  prev = ts - a.size // num_steps
  final = np.float32(1.0) if set_alpha_to_one else a[0]
  a_t = a[ts]
  a_prev = np.where(prev >= 0, a[np.maximum(prev, 0)], final).astype(np.float32)
  one = np.float32(1.0)  # float32 throughout, like the scheduler.
  per_step = dict(t=ts.astype(np.int32), sa=np.sqrt(a_t), sb=np.sqrt(one - a_t),
                  sa_prev=np.sqrt(a_prev), sb_prev=np.sqrt(one - a_prev))
  eps = guided_eps(eps_fn, guidance_scale, null_cond)
  b, dtype = latents.shape[0], latents.dtype

  def step(x, k):
    e = eps(x.astype(dtype), jnp.full((b,), k["t"], jnp.int32), cond).astype(jnp.float32)
    x0 = (x - k["sb"] * e) / k["sa"]
    if clip_sample is not None:
      x0 = jnp.clip(x0, -clip_sample, clip_sample)
    x_new = k["sa_prev"] * x0 + k["sb_prev"] * e
    return x_new, (x_new.astype(dtype), x0.astype(dtype))

  x, (xs, x0s) = jax.lax.scan(step, latents.astype(jnp.float32), per_step)
  if return_trajectory:
    return x.astype(dtype), {"x": xs, "x0": x0s, "t": jnp.asarray(ts, jnp.int32)}
  return x.astype(dtype)
