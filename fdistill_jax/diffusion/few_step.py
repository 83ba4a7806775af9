"""Few-step students: the K-step sampling chain and where a generator's training input comes from.

A K-step student samples from pure noise at σ_1 along σ_1 > σ_2 > … > σ_K:
  x^(1) = σ_1 z;   x0^(k) = G_θ(x^(k), σ_k);   x^(k+1) = renoise(x0^(k), x^(k), σ_k, σ_{k+1});
and returns x0^(K). Re-noising rules (`renoise`):
  'stochastic'     x^(k+1) = x0^(k) + σ_{k+1} ε_k with fresh ε_k ~ N(0, I): DMD2's multi-step
                   sampler and consistency models' multistep sampling;
  'deterministic'  x^(k+1) = x0^(k) + σ_{k+1} (x^(k) − x0^(k)) / σ_k: the DDIM/Euler step of the
                   probability-flow ODE with the student's x0 (no fresh noise).
K = 1 is the one-step generator x0^(1) = G_θ(σ_1 z, σ_1).

Training: a generator step trains G_θ at one chain position k per sample, drawn uniformly from
{1, …, K}; the methods' losses see only the resulting x_g = G_θ(x_in, σ_k) [B, ...]. Where x_in
comes from (`source`):
  'noised_data'  k = 1: σ_1 z; k > 1: x + σ_k z with x the batch's data (real or teacher samples,
                 forward-noised, as FastGen's multi-step DMD2 and DMD2's ImageNet recipe). Cost:
                 one student evaluation with gradient.
  'backward'     the student's own chain from σ_1 z to position k with its current parameters
                 and no gradient through the earlier steps (DMD2's SDXL backward simulation).
                 Cost: K − 1 forward evaluations without gradient + 1 with; activations of one.
  'rollout'      the same chain with the gradient through every earlier step (end-to-end
                 unrolled training, as FastGen's flow-map students). Cost: K evaluations with
                 gradient; activation memory K times one step's.
The training chain runs every sample through K − 1 steps whatever its k and picks each sample's
state at its own k, so one compiled program serves all positions.

Timesteps (`schedule`): 'fixed' trains at the configured σ's (DMD2's fixed 4-step list);
'random' keeps σ_1 and redraws σ_2 > … > σ_K per batch, uniform in the Karras coordinate
ρ = 7 between `sigma_min` and σ_1 and sorted (the rCM note: random positions suit consistency
training); sampling always uses the configured σ's.

Shapes: z, data [B, ...]; cond a pytree of [B, ...]; σ's are float32.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp

SOURCES = ("noised_data", "backward", "rollout")
RENOISE = ("stochastic", "deterministic")
SCHEDULES = ("fixed", "random")
DATA_FREE = ("prompts", "synthetic")  # Datasets whose batch "x" only carries a shape.

sg = jax.lax.stop_gradient


@dataclasses.dataclass(frozen=True)
class Chain:
  """A student's step list and training rule (module docstring). sigmas: σ_1 > … > σ_K."""
  sigmas: tuple[float, ...]
  source: str = "backward"
  renoise: str = "stochastic"
  schedule: str = "fixed"
  sigma_min: float = 0.002

  def __post_init__(self):
    s = tuple(float(v) for v in self.sigmas)
    if not s or any(b >= a for a, b in zip(s, s[1:])) or s[-1] <= 0:
      raise ValueError(f"few-step sigmas {self.sigmas}: need σ_1 > σ_2 > … > σ_K > 0")
    for name, value, allowed in (("source", self.source, SOURCES),
                                 ("renoise", self.renoise, RENOISE),
                                 ("schedule", self.schedule, SCHEDULES)):
      if value not in allowed:
        raise ValueError(f"few-step {name}={value!r}; allowed: {allowed}")
    object.__setattr__(self, "sigmas", s)

  @property
  def steps(self) -> int:
    return len(self.sigmas)


def _bcast(v: jax.Array, x: jax.Array) -> jax.Array:
  return v.reshape(v.shape + (1,) * (x.ndim - v.ndim))


def _full(b: int, sigma) -> jax.Array:
  return jnp.broadcast_to(jnp.asarray(sigma, jnp.float32), (b,))


def renoise(x0: jax.Array, x: jax.Array, sigma: jax.Array, sigma_next: jax.Array, rule: str,
            noise: jax.Array | None) -> jax.Array:
  """x^(k+1) from x0^(k) and x^(k) (module docstring). sigma, sigma_next: [B]; noise [B, ...]."""
  if rule == "stochastic":
    return x0 + _bcast(sigma_next, x0) * noise
  if rule == "deterministic":
    return x0 + _bcast(sigma_next / sigma, x0) * (x - x0)
  raise ValueError(f"few-step renoise={rule!r}; allowed: {RENOISE}")


def _keys(key, n: int) -> list:
  return [None] * n if key is None else list(jax.random.split(key, n))


def sample(student: Callable[..., Any], params, z: jax.Array, cond, chain: Chain, *,
           key: jax.Array | None = None, noise_key: jax.Array | None = None) -> jax.Array:
  """x0^(K) of the K-step chain from σ_1 z along chain.sigmas; [B, ...] like z.

  student(params, x, sigma [B], cond, key=...) -> x0. key: the networks' dropout keys (None at
  evaluation); noise_key: the fresh noise of 'stochastic' re-noising (required then, K > 1).
  """
  b, k_steps = z.shape[0], chain.steps
  if k_steps > 1 and chain.renoise == "stochastic" and noise_key is None:
    raise ValueError("a few-step student with stochastic re-noising needs noise_key to sample")
  net_keys = _keys(key, k_steps)
  noises = (renoise_noise(noise_key, k_steps, z.shape, z.dtype)
            if chain.renoise == "stochastic" and k_steps > 1 else [None] * (k_steps - 1))
  x = chain.sigmas[0] * z
  for k, s in enumerate(chain.sigmas):
    x0 = student(params, x, _full(b, s), cond, key=net_keys[k])
    if k + 1 < k_steps:
      x = renoise(x0, x, _full(b, s), _full(b, chain.sigmas[k + 1]), chain.renoise, noises[k])
  return x0


def renoise_noise(noise_key: jax.Array, k_steps: int, shape, dtype=jnp.float32) -> list:
  """The fresh noise ε_1 … ε_{K−1} [shape] that `sample` draws from noise_key for stochastic
  re-noising (exported pipelines replay it: convert/few_step_scheduler.py)."""
  keys = jax.random.split(noise_key, k_steps)
  return [jax.random.normal(keys[k], shape, dtype) for k in range(k_steps - 1)]


def chain_key(key: jax.Array) -> jax.Array:
  """The key of a step's chain draws, folded from the method's step key so that the method's own
  splits (and so every K = 1 number) stay those of a one-step run."""
  return jax.random.fold_in(key, 0x6B)


def noise_key_from(z: jax.Array) -> jax.Array:
  """A re-noising key derived from the noise z itself (its first value's bits), for sampling
  paths handed z without a key: the same z gives the same sample, different z different noise."""
  bits = jax.lax.bitcast_convert_type(z.reshape(-1)[0].astype(jnp.float32), jnp.uint32)
  return jax.random.fold_in(jax.random.PRNGKey(0x6B), bits)


def training_sigmas(key: jax.Array, chain: Chain) -> jax.Array:
  """σ_1 … σ_K [K] float32 of one batch: the configured list, or σ_1 and K − 1 sorted draws."""
  fixed = jnp.asarray(chain.sigmas, jnp.float32)
  if chain.schedule == "fixed" or chain.steps == 1:
    return fixed
  rho = 7.0
  a, b = chain.sigma_min ** (1 / rho), chain.sigmas[0] ** (1 / rho)
  u = jnp.sort(jax.random.uniform(key, (chain.steps - 1,)))[::-1]   # Descending σ.
  return jnp.concatenate([fixed[:1], (a + u * (b - a)) ** rho])


def training_input(student: Callable[..., Any], params, z: jax.Array, cond, chain: Chain,
                   key: jax.Array, data: jax.Array | None = None
                   ) -> tuple[jax.Array, jax.Array, jax.Array]:
  """(x_in [B, ...], σ_in [B], k [B] int32): the generator's input at each sample's position.

  params: the generator's parameters (the chain of 'backward' runs on sg(params); 'rollout'
  keeps the gradient). data: the batch's data in the teacher's space (for 'noised_data').
  """
  b, k_steps = z.shape[0], chain.steps
  k_pos, k_sig, k_chain = jax.random.split(key, 3)
  pos = jax.random.randint(k_pos, (b,), 0, k_steps)
  sigmas = training_sigmas(k_sig, chain)
  sigma_in = sigmas[pos]
  if chain.source == "noised_data":
    if data is None:
      raise ValueError("few_step.source='noised_data' needs the batch's data")
    first = _bcast(pos == 0, z)
    x_in = jnp.where(first, sigmas[0] * z, data.astype(z.dtype) + _bcast(sigma_in, z) * z)
    return x_in, sigma_in, pos
  chain_params = params if chain.source == "rollout" else sg(params)
  keys = jax.random.split(k_chain, 2 * k_steps)
  x = sigmas[0] * z
  x_in = x
  for k in range(k_steps - 1):
    x0 = student(chain_params, x, _full(b, sigmas[k]), cond, key=keys[k])
    noise = (None if chain.renoise == "deterministic"
             else jax.random.normal(keys[k_steps + k], z.shape, z.dtype))
    x = renoise(x0, x, _full(b, sigmas[k]), _full(b, sigmas[k + 1]), chain.renoise, noise)
    if chain.source == "backward":
      x = sg(x)
    x_in = jnp.where(_bcast(pos == k + 1, x), x, x_in)
  return x_in, sigma_in, pos


# ----------------------------------------------------------------------------- config
def config(**overrides):
  """config.few_step: sigmas () = the one-step student at diffusion.sigma_init (K = 1)."""
  import ml_collections  # pylint: disable=import-outside-toplevel
  c = dict(sigmas=(), source="backward", renoise="stochastic", schedule="fixed")
  c.update(overrides)
  return ml_collections.ConfigDict(c)


def from_config(cfg) -> Chain | None:
  """The Chain of cfg.few_step, or None for a one-step student (no block, or sigmas ())."""
  f = cfg.get("few_step")
  if f is None or len(f.sigmas) == 0:
    return None
  return Chain(sigmas=tuple(f.sigmas), source=f.source, renoise=f.renoise, schedule=f.schedule,
               sigma_min=cfg.diffusion.sigma_min)


def check_config(cfg, allow_steps: bool = True) -> None:
  """config.few_step: names the field and what is allowed (ConfigError). allow_steps=False: the
  method trains one-step students only (sigmas must stay ())."""
  from fdistill_jax import validation  # pylint: disable=import-outside-toplevel
  need = validation.need
  f = cfg.get("few_step")
  if f is None:
    return
  for field, allowed in (("source", SOURCES), ("renoise", RENOISE), ("schedule", SCHEDULES)):
    need(f[field] in allowed, f"few_step.{field}", f[field], f"allowed: {allowed}")
  sig = f.sigmas
  ok = isinstance(sig, (tuple, list)) and all(
      isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v < 1e5 for v in sig)
  need(ok, "few_step.sigmas", sig, "a tuple of finite noise levels in (0, 1e5), () = one step")
  if not sig:
    return
  need(allow_steps, "few_step.sigmas", sig,
       f"() for method {cfg.method.name!r}, which trains one-step students only")
  data_free = hasattr(cfg, "dataset") and cfg.dataset.name in DATA_FREE  # (toy: none)
  need(not (f.source == "noised_data" and data_free), "few_step.source", f.source,
       "'backward' or 'rollout': this dataset.name carries no data to noise")
  need(all(b < a for a, b in zip(sig, sig[1:])), "few_step.sigmas", sig,
       "strictly decreasing σ_1 > σ_2 > … > σ_K")
  need(abs(float(sig[0]) - float(cfg.diffusion.sigma_init)) <= 1e-6 * float(sig[0]),
       "few_step.sigmas", sig, f"σ_1 = diffusion.sigma_init ({cfg.diffusion.sigma_init}): the "
       "chain starts from the generator's input noise level")
  need(float(sig[-1]) >= float(cfg.diffusion.sigma_min), "few_step.sigmas", sig,
       f"every σ >= diffusion.sigma_min ({cfg.diffusion.sigma_min})")

