"""Reference samplers for rectified-flow (flow matching) velocity teachers (SD3, FLUX, SANA).

The process, in the model's native space: x_s = (1 − s)·x0 + s·ε with s ∈ (0, 1] (s = 1 is pure
noise, where sampling starts). The network takes x_s and the timestep t = T·s (T =
num_train_timesteps, 1000 for the released models; a float, not an integer) and predicts the
velocity v̂ ≈ dx_s/ds = ε − x0, so x̂0 = x_s − s·v̂. (diffusers calls s "sigma"; it is not EDM's
σ: EDM's x = x_s/(1 − s) = x0 + σ ε with σ = s/(1 − s), see diffusion/parameterisations.py.)

Both samplers follow diffusers 0.42.1 step by step, so that a trajectory equals the PyTorch
scheduler loop's to float32 rounding (tests/test_flow_dit.py):

* `flow_timesteps`: the grid of `FlowMatchEulerDiscreteScheduler.set_timesteps` with the class
  defaults except `shift` (no dynamic shifting, no Karras/exponential/beta σ's, no terminal
  stretch, no inversion). The SD3 time shift is s' = shift·s/(1 + (shift − 1)·s). diffusers'
  details, reproduced here: the constructor builds the training grid s = (1..T)/T in float32 and
  already shifts it; `set_timesteps(N)` spaces N points linearly (float64) between T·s_max and
  T·s_min of that *shifted* training grid and shifts them again (so with shift ≠ 1 the smallest s
  is shifted twice), then rounds to float32; timesteps = T·s in float32; a final s = 0 is
  appended. Explicit `sigmas` (N values of s) are cast to float32 and shifted once, in float32.
* `euler`: `FlowMatchEulerDiscreteScheduler.step` (deterministic): x ← x + (s_{k+1} − s_k)·v̂,
  N network calls, the last step lands on s = 0 (x̂0).
* `heun`: `FlowMatchHeunDiscreteScheduler` (s_churn = 0). Its timesteps are
  [t_0, t_1, t_1, t_2, t_2, …, t_{N−1}, t_{N−1}] (2N − 1 calls): for k < N − 1 an Euler
  prediction x' = x + (s_{k+1} − s_k)·d_k from the slope at (x, t_k), then a second call at
  (x', t_{k+1}) and the corrected x ← x + (s_{k+1} − s_k)·(d_k + d'_k)/2; the next step calls the
  network at t_{k+1} again on the corrected x. The last step (to s = 0) is plain Euler. The
  slopes are computed as the scheduler does, d = (x − (x − v̂·s))/s (equal to v̂ up to rounding).
  Its grid is `flow_timesteps` without explicit sigmas (the Heun scheduler takes none).

A velocity model is `velocity_fn(x [B, ...], t float32 [B], cond) -> v̂ [B, ...]` with t = T·s in
[0, T] (what SD3's and our PixArt transformer take). `cond` is any pytree with a leading batch
axis. Classifier-free guidance (`guidance_scale` w ≠ 1 with `null_cond`, batch 1 or B):
v = v(x, ∅) + w·(v(x, c) − v(x, ∅)), one call on the concatenated batch [∅; c] as the pipelines
do (`ddpm_samplers.guided_eps`, which is not specific to ε).

latents: unit Gaussian noise (s = 1, what diffusers' flow pipelines start from: their
init_noise_sigma is 1); both samplers return x̂0 in the latents' dtype, the state carried in
float32 as the schedulers do.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from fdistill_jax.diffusion.ddpm_samplers import guided_eps

VelocityFn = Callable[[jax.Array, jax.Array, Any], jax.Array]
SOLVERS = ("euler", "heun")


def guided_velocity(velocity_fn: VelocityFn, guidance_scale: float,
                    null_cond: Any = None) -> VelocityFn:
  """v with classifier-free guidance on a [∅; c] batch; the identity wrapper when w == 1."""
  return guided_eps(velocity_fn, guidance_scale, null_cond)


def time_shift(s, shift: float):
  """The SD3 time shift s' = shift·s / (1 + (shift − 1)·s), in s's dtype (numpy or jax)."""
  return shift * s / (1 + (shift - 1) * s)


def _check_shift(shift: float, num_train_timesteps: int) -> None:
  if not (np.isfinite(shift) and shift > 0):
    raise ValueError(f"shift must be a finite number > 0, got {shift!r}")
  if int(num_train_timesteps) != num_train_timesteps or num_train_timesteps < 1:
    raise ValueError(f"num_train_timesteps must be a positive integer, got {num_train_timesteps!r}")


def training_sigmas(num_train_timesteps: int = 1000, shift: float = 1.0) -> np.ndarray:
  """float32 [T]: the constructor's grid s = (T..1)/T, shifted (what sigma_max/min come from)."""
  _check_shift(shift, num_train_timesteps)
  t = np.linspace(1, num_train_timesteps, num_train_timesteps, dtype=np.float32)[::-1]
  s = t / np.float32(num_train_timesteps)
  return time_shift(s, float(shift)).astype(np.float32)


def flow_timesteps(num_steps: int | None = None, *, shift: float = 1.0,
                   num_train_timesteps: int = 1000, sigmas: Sequence[float] | None = None
                   ) -> tuple[np.ndarray, np.ndarray]:
  """(timesteps float32 [N], sigmas float32 [N+1]) as FlowMatchEulerDiscreteScheduler's
  set_timesteps(num_steps) or set_timesteps(sigmas=...) (module docstring); sigmas are the s
  values, ending with 0."""
  _check_shift(shift, num_train_timesteps)
  n_train = int(num_train_timesteps)
  if sigmas is not None:
    s = np.asarray(sigmas, np.float64).astype(np.float32)
    if s.ndim != 1 or s.size < 1 or num_steps not in (None, s.size):
      raise ValueError(f"sigmas must be a 1-D list of num_steps values, got shape {s.shape} "
                       f"with num_steps={num_steps}")
    if not np.all((s > 0) & (s <= 1)) or np.any(np.diff(s) >= 0):
      raise ValueError(f"sigmas must decrease strictly within (0, 1], got {s.tolist()}")
    s = time_shift(s, float(shift)).astype(np.float32)  # float32 maths, as diffusers.
  else:
    if num_steps is None or int(num_steps) != num_steps or num_steps < 1:
      raise ValueError(f"num_steps must be a positive integer, got {num_steps!r}")
    train = training_sigmas(n_train, shift)
    s_max, s_min = float(train[0]), float(train[-1])
    ts = np.linspace(s_max * n_train, s_min * n_train, int(num_steps))  # float64
    s = time_shift(ts / n_train, float(shift)).astype(np.float32)
  timesteps = (s * np.float32(n_train)).astype(np.float32)
  return timesteps, np.concatenate([s, np.zeros(1, np.float32)])


def _grid(num_steps, shift, num_train_timesteps, sigmas):
  ts, s = flow_timesteps(num_steps, shift=shift, num_train_timesteps=num_train_timesteps,
                         sigmas=sigmas)
  return ts, s, ts.size


def euler(velocity_fn: VelocityFn, latents: jax.Array, cond: Any, num_steps: int | None = 28, *,
          guidance_scale: float = 1.0, null_cond: Any = None, shift: float = 1.0,
          num_train_timesteps: int = 1000, sigmas: Sequence[float] | None = None,
          return_trajectory: bool = False):
  """The deterministic Euler sampler of FlowMatchEulerDiscreteScheduler (module docstring).

  latents: x at s = 1, N(0, I) [B, ...]. Returns x̂0 [B, ...] in the latents' dtype, or (x̂0, traj)
  with traj = {"x": [N, B, ...] after each step, "t": [N] timesteps, "sigmas": [N+1]}.
  """
  ts, s, n = _grid(num_steps, shift, num_train_timesteps, sigmas)
  v_fn = guided_velocity(velocity_fn, guidance_scale, null_cond)
  b, dtype = latents.shape[0], latents.dtype
  per_step = dict(t=ts, dt=(s[1:] - s[:-1]).astype(np.float32))

  def step(x, k):
    v = v_fn(x.astype(dtype), jnp.full((b,), k["t"], jnp.float32), cond).astype(jnp.float32)
    x_new = x + k["dt"] * v
    return x_new, x_new.astype(dtype)

  x, xs = jax.lax.scan(step, latents.astype(jnp.float32), per_step)
  if return_trajectory:
    return x.astype(dtype), {"x": xs, "t": jnp.asarray(ts), "sigmas": jnp.asarray(s)}
  return x.astype(dtype)


def heun_timesteps(num_steps: int, *, shift: float = 1.0, num_train_timesteps: int = 1000
                   ) -> np.ndarray:
  """float32 [2N − 1]: the network times of FlowMatchHeunDiscreteScheduler (t_0, then each
  later t_k twice)."""
  ts, _, _ = _grid(num_steps, shift, num_train_timesteps, None)
  return np.concatenate([ts[:1], np.repeat(ts[1:], 2)]).astype(np.float32)


def heun(velocity_fn: VelocityFn, latents: jax.Array, cond: Any, num_steps: int = 28, *,
         guidance_scale: float = 1.0, null_cond: Any = None, shift: float = 1.0,
         num_train_timesteps: int = 1000, return_trajectory: bool = False):
  """Heun's method as FlowMatchHeunDiscreteScheduler (s_churn = 0): 2N − 1 network calls.

  Returns like `euler`; traj["x"] is [N, B, ...], the state after each of the N steps (after
  the correction; the last step is Euler), traj["t"] the N grid times t_k.
  """
  ts, s, n = _grid(num_steps, shift, num_train_timesteps, None)
  v_fn = guided_velocity(velocity_fn, guidance_scale, null_cond)
  b, dtype = latents.shape[0], latents.dtype

  def slope(x, t, sig):
    v = v_fn(x.astype(dtype), jnp.full((b,), t, jnp.float32), cond).astype(jnp.float32)
    return (x - (x - v * sig)) / sig  # (sample − denoised) / σ, the scheduler's expression.

  def step(x, k):
    d = slope(x, k["t"], k["s"])
    x_pred = x + d * k["dt"]
    d2 = slope(x_pred, k["t_next"], k["s_next"])
    x_new = x + (0.5 * (d + d2)) * k["dt"]
    return x_new, x_new.astype(dtype)

  per_step = dict(t=ts[:-1], s=s[:n - 1], t_next=ts[1:], s_next=s[1:n],
                  dt=(s[1:n] - s[:n - 1]).astype(np.float32))
  x = latents.astype(jnp.float32)
  xs = jnp.zeros((0,) + latents.shape, dtype)
  if n > 1:
    x, xs = jax.lax.scan(step, x, per_step)
  # Last step, s_{N−1} → 0: Euler (a correction would divide by s = 0).
  x = x + slope(x, ts[-1], s[n - 1]) * np.float32(s[n] - s[n - 1])
  if return_trajectory:
    xs = jnp.concatenate([xs, x[None].astype(dtype)])
    return x.astype(dtype), {"x": xs, "t": jnp.asarray(ts), "sigmas": jnp.asarray(s)}
  return x.astype(dtype)
