"""Discrete VP (DDPM) noise schedules seen as σ grids, and the σ ↔ timestep maps of a teacher.

A DDPM teacher is trained at integer timesteps t ∈ {0, …, T−1} on x_t = √ᾱ_t x0 + √(1−ᾱ_t) ε.
Dividing by √ᾱ_t gives EDM's VE form x = x0 + σ ε with

  σ_t = √((1 − ᾱ_t)/ᾱ_t),   ᾱ = 1/(1 + σ²),   x_t = x/√(1 + σ²).

The linear schedule (β from 1e-4 to 0.02 over 1000 steps; DDPM, IDDPM and PixArt-α, whose
training code uses IDDPM's "linear" schedule and whose diffusers checkpoints ship a scheduler
with beta_schedule='linear') spans σ ∈ [0.0100, 157.4]. Stable Diffusion 1.x/2.x use
'scaled_linear' (β = linspace(√0.00085, √0.012)², σ ∈ [0.0292, 14.61]), not 'linear'.
ᾱ is computed in float64 (as IDDPM/PixArt do); diffusers computes it in float32, which differs
by float32 rounding only (tests/test_parameterisations.py checks both).

σ → t, timestep_mode:
  'interpolate' (default): piecewise-linear in log σ between the grid points, a fractional t
    (k-diffusion's DiscreteSchedule and diffusers' EulerDiscreteScheduler do the same). The
    distillation methods draw σ continuously, and the teachers embed t sinusoidally, so a
    fractional t evaluates the network at the noise level actually present in x; D(x; σ) is
    then continuous in σ. σ outside [sigma_min, sigma_max] clamps t to [0, T−1].
  'nearest': the grid point nearest in log σ (an integer t, EDM's iDDPMPrecond convention).
    Exact only when σ lies on the grid; off the grid the input is scaled for σ but the network
    is told σ_t, which is off by up to half a grid step (≈ 20 % in σ at the low end).
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2")
TIMESTEP_MODES = ("interpolate", "nearest")


def make_betas(beta_schedule: str = "linear", num_train_timesteps: int = 1000,
               beta_start: float = 1e-4, beta_end: float = 0.02) -> np.ndarray:
  """β_t of diffusers' named schedules, float64 [T].

  'linear': linspace(beta_start, beta_end); 'scaled_linear': linspace(√beta_start, √beta_end)²;
  'squaredcos_cap_v2': GLIDE's cosine ᾱ(s) = cos²((s + 0.008)/1.008 · π/2), β capped at 0.999.
  """
  t = int(num_train_timesteps)
  if t < 2:
    raise ValueError(f"num_train_timesteps must be >= 2, got {num_train_timesteps}")
  if beta_schedule == "linear":
    return np.linspace(beta_start, beta_end, t, dtype=np.float64)
  if beta_schedule == "scaled_linear":
    return np.linspace(beta_start ** 0.5, beta_end ** 0.5, t, dtype=np.float64) ** 2
  if beta_schedule == "squaredcos_cap_v2":
    abar = lambda s: math.cos((s + 0.008) / 1.008 * math.pi / 2) ** 2
    return np.array([min(1 - abar((i + 1) / t) / abar(i / t), 0.999) for i in range(t)])
  raise ValueError(f"beta_schedule={beta_schedule!r} is not supported; expected one of "
                   f"{BETA_SCHEDULES}")


@dataclasses.dataclass(frozen=True, eq=False)  # eq=False: hashable by identity (static under jit).
class DiscreteVPSchedule:
  """A DDPM schedule's σ grid and the maps between σ and the network's timestep.

  alphas_cumprod: ᾱ_t, float64 [T], strictly decreasing in (0, 1). Stored as numpy (static).
  timestep_mode: 'interpolate' | 'nearest' (module docstring).
  sigma_min / sigma_max: σ_0 and σ_{T−1}, the range the teacher was trained on.
  """
  alphas_cumprod: np.ndarray
  timestep_mode: str = "interpolate"

  def __post_init__(self):
    a = np.asarray(self.alphas_cumprod, np.float64)
    if a.ndim != 1 or a.shape[0] < 2 or not np.all((a > 0) & (a < 1)) or np.any(np.diff(a) >= 0):
      raise ValueError("alphas_cumprod must be a strictly decreasing [T >= 2] vector in (0, 1) "
                       "(a zero-terminal-SNR schedule has σ_max = ∞ and is not supported)")
    if self.timestep_mode not in TIMESTEP_MODES:
      raise ValueError(f"timestep_mode={self.timestep_mode!r}; expected one of {TIMESTEP_MODES}")

  @staticmethod
  def create(beta_schedule: str = "linear", num_train_timesteps: int = 1000,
             beta_start: float = 1e-4, beta_end: float = 0.02,
             timestep_mode: str = "interpolate") -> "DiscreteVPSchedule":
    """From diffusers-style fields (the defaults are the linear schedule of PixArt-α)."""
    betas = make_betas(beta_schedule, num_train_timesteps, beta_start, beta_end)
    return DiscreteVPSchedule(np.cumprod(1.0 - betas), timestep_mode)

  @staticmethod
  def from_diffusers_config(config: Mapping[str, Any], timestep_mode: str = "interpolate",
                            source: str = "scheduler config") -> "DiscreteVPSchedule":
    """From a diffusers scheduler_config.json dict (beta_schedule, beta_start, beta_end,
    num_train_timesteps, optional trained_betas); rescale_betas_zero_snr is refused."""
    if config.get("rescale_betas_zero_snr"):
      raise ValueError(f"{source}: rescale_betas_zero_snr=True gives σ_max = ∞; not supported")
    if config.get("trained_betas") is not None:
      betas = np.asarray(config["trained_betas"], np.float64)
      return DiscreteVPSchedule(np.cumprod(1.0 - betas), timestep_mode)
    return DiscreteVPSchedule.create(config.get("beta_schedule", "linear"),
                                     config.get("num_train_timesteps", 1000),
                                     config.get("beta_start", 1e-4), config.get("beta_end", 0.02),
                                     timestep_mode)

  # -- the grid -------------------------------------------------------------------------------
  @property
  def num_timesteps(self) -> int:
    return int(np.shape(self.alphas_cumprod)[0])

  @property
  def sigmas(self) -> np.ndarray:
    """σ_t = √((1 − ᾱ_t)/ᾱ_t), float64 [T], ascending."""
    a = np.asarray(self.alphas_cumprod, np.float64)
    return np.sqrt((1.0 - a) / a)

  @property
  def sigma_min(self) -> float:
    return float(self.sigmas[0])

  @property
  def sigma_max(self) -> float:
    return float(self.sigmas[-1])

  # -- maps (jit-able; σ and t of any shape, float32) -----------------------------------------
  def sigma_to_t(self, sigma) -> jax.Array:
    """Timestep for σ (same shape, float32): fractional ('interpolate') or integer-valued."""
    log_s = jnp.log(jnp.asarray(sigma, jnp.float32))
    grid = jnp.asarray(np.log(self.sigmas), jnp.float32)
    last = self.num_timesteps - 1
    if self.timestep_mode == "nearest":
      return jnp.argmin(jnp.abs(log_s[..., None] - grid), axis=-1).astype(jnp.float32)
    log_s = jnp.clip(log_s, grid[0], grid[last])
    lo = jnp.clip(jnp.searchsorted(grid, log_s, side="right", method="compare_all") - 1, 0, last - 1)
    w = (log_s - grid[lo]) / (grid[lo + 1] - grid[lo])
    return lo.astype(jnp.float32) + jnp.clip(w, 0.0, 1.0)

  def t_to_sigma(self, t) -> jax.Array:
    """σ at timestep t (same shape, float32); fractional t interpolates log σ ('nearest':
    the grid point nearest to t)."""
    t = jnp.asarray(t, jnp.float32)
    grid = jnp.asarray(np.log(self.sigmas), jnp.float32)
    last = self.num_timesteps - 1
    if self.timestep_mode == "nearest":
      return jnp.exp(grid[jnp.clip(jnp.round(t), 0, last).astype(jnp.int32)])
    t = jnp.clip(t, 0.0, float(last))
    lo = jnp.clip(jnp.floor(t).astype(jnp.int32), 0, last - 1)
    w = t - lo.astype(jnp.float32)
    return jnp.exp(grid[lo] + w * (grid[lo + 1] - grid[lo]))
