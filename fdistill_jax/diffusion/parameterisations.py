"""Teacher parameterisation adapters: a network of any convention as EDM's D(x; σ, cond).

Every method works with the denoiser D(x; σ, cond) ≈ E[x0 | x = x0 + σ ε] (EDM/VE convention).
A network trained in another convention wants a rescaled input and its own time variable, and
predicts another quantity; in every case D is affine in the network output F:

  D(x; σ) = c_skip(σ)·x + c_out(σ)·F(c_in(σ)·x, t(σ), cond)

Processes. x_p = c_in·x = a x0 + b ε is the network's input:
  'vp'   (DDPM, IDDPM, SD, PixArt-α): x_p = √ᾱ x0 + √(1−ᾱ) ε, σ² = (1−ᾱ)/ᾱ:
         a = c_in = 1/√(1+σ²), b = σ/√(1+σ²); t(σ) from a schedule (ddpm.DiscreteVPSchedule).
  'flow' (rectified flow): x_p = (1−s) x0 + s ε with s ∈ (0, 1). Dividing by 1−s gives
         σ = s/(1−s), s = σ/(1+σ): a = c_in = 1/(1+σ), b = s = σ/(1+σ); t = time_scale·s
         (FlowTime; diffusers' SD3/Flux transformers take time_scale = 1000).
Predictions F (c_skip, c_out):
  'epsilon':      F = ε̂,  x0 = (x_p − b ε̂)/a = x − σ ε̂                        (1, −σ)
  'sample':       F = x̂0                                                      (0, 1)
  'v_prediction': F = v̂ = a ε − b x0 (Salimans & Ho; 'vp' only, a² + b² = 1):
                  a x_p − b v̂ = (a² + b²) x0                                   (a², −b)
  'velocity':     F = û = dx_p/ds = ε − x0 ('flow' only): x0 = x_p − s û      (a, −b)
Learned-variance networks (IDDPM, PixArt-α: 2C output channels, NHWC) keep the first C.

The σ range a teacher supports is the adapter's `sigma_min` / `sigma_max` (linear DDPM:
0.0100 … 157.4); `check_sigma_range` refuses a config that asks for more. Coefficients are
float32 (float64 for float64 inputs) and D is returned in that dtype, as EDMPrecond does.
Tests: tests/test_parameterisations.py (a Gaussian-mixture teacher in each form, exactly).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp

from fdistill_jax.diffusion.ddpm import DiscreteVPSchedule
from fdistill_jax.diffusion.edm import expand_like

PROCESSES = {"vp": ("epsilon", "sample", "v_prediction"),
             "flow": ("velocity", "epsilon", "sample")}


@dataclasses.dataclass(frozen=True)
class FlowTime:
  """Rectified-flow time t = time_scale · σ/(1 + σ) and the σ range to use.

  A flow model is trained on s ∈ (0, 1), i.e. σ ∈ (0, ∞); the defaults are EDM's [0.002, 80]
  (s ∈ [0.002, 0.988]). Set them to the teacher's training range if it is narrower.
  """
  time_scale: float = 1.0
  sigma_min: float = 0.002
  sigma_max: float = 80.0

  def __post_init__(self):
    if not (self.time_scale > 0 and 0 < self.sigma_min < self.sigma_max < float("inf")):
      raise ValueError(f"FlowTime needs time_scale > 0 and 0 < sigma_min < sigma_max < inf, "
                       f"got {self}")

  def sigma_to_t(self, sigma) -> jax.Array:
    sigma = jnp.asarray(sigma, jnp.float32)
    return self.time_scale * (sigma / (1.0 + sigma))

  def t_to_sigma(self, t) -> jax.Array:
    s = jnp.asarray(t, jnp.float32) / self.time_scale
    return s / (1.0 - s)


@dataclasses.dataclass(frozen=True, eq=False)
class TeacherAdapter:
  """process ('vp' | 'flow'), prediction (PROCESSES[process]), time (an object with
  sigma_to_t, t_to_sigma, sigma_min, sigma_max: DiscreteVPSchedule or FlowTime),
  learned_variance (the network outputs 2C channels; the last C are dropped)."""
  process: str
  prediction: str
  time: Any
  learned_variance: bool = False

  def __post_init__(self):
    if self.process not in PROCESSES:
      raise ValueError(f"process={self.process!r}; expected one of {sorted(PROCESSES)}")
    if self.prediction not in PROCESSES[self.process]:
      raise ValueError(f"prediction={self.prediction!r} is not defined for process "
                       f"{self.process!r}; expected one of {PROCESSES[self.process]}")

  @property
  def sigma_min(self) -> float:
    return float(self.time.sigma_min)

  @property
  def sigma_max(self) -> float:
    return float(self.time.sigma_max)

  def coefficients(self, sigma, dtype=jnp.float32):
    """(c_in, c_skip, c_out, t), each of sigma's shape ([] or [B]); t is float32."""
    sigma = jnp.asarray(sigma).astype(dtype)
    if self.process == "vp":
      a = jax.lax.rsqrt(1.0 + sigma ** 2)
    else:
      a = 1.0 / (1.0 + sigma)
    b = sigma * a
    one, zero = jnp.ones_like(sigma), jnp.zeros_like(sigma)
    c_skip, c_out = {"epsilon": (one, -sigma), "sample": (zero, one),
                     "v_prediction": (a * a, -b), "velocity": (a, -b)}[self.prediction]
    return a, c_skip, c_out, self.time.sigma_to_t(sigma)

  def denoise(self, net: Callable[..., Any], x: jax.Array, sigma, cond=None, **kwargs):
    """D(x; σ, cond) [B, ...] from net(x_in, t, cond, **kwargs) -> F (or (F, *extras)).

    x: [B, ..., C] (NHWC for images); sigma: [] or [B]; cond: any pytree, passed through.
    Returns D in float32 (float64 for float64 x), or (D, *extras) when the net returns a tuple.
    """
    dtype = jnp.promote_types(jnp.asarray(x).dtype, jnp.float32)
    x = jnp.asarray(x).astype(dtype)
    c_in, c_skip, c_out, t = self.coefficients(sigma, dtype)
    out = net(expand_like(c_in, x) * x, t, cond, **kwargs)
    f, extras = (out[0], tuple(out[1:])) if isinstance(out, tuple) else (out, ())
    f = self._drop_variance(f, x)
    d = expand_like(c_skip, x) * x + expand_like(c_out, x) * f.astype(dtype)
    return (d, *extras) if extras else d

  def wrap(self, net: Callable[..., Any]) -> Callable[..., Any]:
    """fn(x, sigma, cond=None, **kwargs) -> D, the adapted `net` (see `denoise`)."""
    return lambda x, sigma, cond=None, **kw: self.denoise(net, x, sigma, cond, **kw)

  def _drop_variance(self, f: jax.Array, x: jax.Array) -> jax.Array:
    c = x.shape[-1]
    if self.learned_variance:
      if f.shape[:-1] != x.shape[:-1] or f.shape[-1] != 2 * c:
        raise ValueError(f"learned_variance: the network output has shape {f.shape}; expected "
                         f"{x.shape[:-1] + (2 * c,)} (prediction and variance channels)")
      return f[..., :c]
    if f.shape != x.shape:
      raise ValueError(f"the network output has shape {f.shape}, the input {x.shape}; a "
                       f"learned-variance network (2C channels) needs learned_variance=True")
    return f


def ddpm(prediction: str = "epsilon", *, beta_schedule: str = "linear",
         num_train_timesteps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02,
         timestep_mode: str = "interpolate", learned_variance: bool = False) -> TeacherAdapter:
  """A DDPM-family teacher (defaults: PixArt-α's ε-prediction on the linear schedule)."""
  schedule = DiscreteVPSchedule.create(beta_schedule, num_train_timesteps, beta_start, beta_end,
                                       timestep_mode)
  return TeacherAdapter("vp", prediction, schedule, learned_variance)


def rectified_flow(prediction: str = "velocity", *, time_scale: float = 1.0,
                   sigma_min: float = 0.002, sigma_max: float = 80.0) -> TeacherAdapter:
  """A rectified-flow teacher x_s = (1 − s) x0 + s ε predicting u = ε − x0 at t = time_scale·s."""
  return TeacherAdapter("flow", prediction, FlowTime(time_scale, sigma_min, sigma_max))


def from_diffusers_scheduler_config(config: Mapping[str, Any], *, learned_variance: bool = False,
                                    timestep_mode: str = "interpolate",
                                    source: str = "scheduler config") -> TeacherAdapter:
  """The adapter that a diffusers pipeline's scheduler_config.json implies (DDPM-family schedulers
  with prediction_type epsilon / v_prediction / sample; FlowMatch* schedulers as velocity)."""
  if str(config.get("_class_name", "")).startswith("FlowMatch"):
    return rectified_flow(time_scale=float(config.get("num_train_timesteps", 1000)))
  pred = config.get("prediction_type", "epsilon")
  if pred not in PROCESSES["vp"]:
    raise ValueError(f"{source}: prediction_type={pred!r}; expected one of {PROCESSES['vp']}")
  schedule = DiscreteVPSchedule.from_diffusers_config(config, timestep_mode, source)
  return TeacherAdapter("vp", pred, schedule, learned_variance)


def check_sigma_range(adapter, sigma_min: float, sigma_max: float,
                      field: str = "config.diffusion") -> None:
  """Raise ValueError if [sigma_min, sigma_max] is not inside the teacher's supported range.

  adapter: anything with sigma_min / sigma_max (a TeacherAdapter, a DiscreteVPSchedule).
  """
  lo, hi = float(adapter.sigma_min), float(adapter.sigma_max)
  tol = 1e-6
  if sigma_min < lo * (1 - tol) or sigma_max > hi * (1 + tol):
    raise ValueError(f"{field}.sigma_min/sigma_max = ({sigma_min}, {sigma_max}) is outside the "
                     f"σ range the teacher supports, [{lo:.6g}, {hi:.6g}]: set them inside it")
