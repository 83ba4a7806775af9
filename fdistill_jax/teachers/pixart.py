"""PixArt-α as a teacher: D(x; σ, cond) in EDM's convention, CFG, and the reference sampler.

    teacher = load_pixart_teacher("PixArt-XL-2-512x512", null_cond=cache.null_condition(),
                                  guidance_scale=4.5, compute_dtype=jnp.bfloat16)
    d = teacher(x, sigma, cond)                        # x̂0, float32 [B, H, W, 4]
    d, feats = teacher(x, sigma, cond, return_features=True)
    z0 = sample(teacher, key_or_latents, cond)         # DPM-Solver++(2M), 20 steps, w = 4.5

Call signature (a plain callable; the engine/method code can hold it like any denoiser):
  teacher(x [B,H,W,4] float latents (EDM/VE: x = x0 + σ ε, x0 = VAE latents · scaling_factor),
          sigma [] or [B], cond {"embeddings": [B,L,D] T5 states, "mask": [B,L] int32/uint8/
          float (1 = token)}, *, guidance_scale=None (None: the teacher's default),
          return_features=False) -> D [B,H,W,4] float32, or (D, {f"block{i}": [B,N,D_model]}).
  The network sees x_t = x/√(1+σ²) at the DDPM timestep t(σ) (`DiscreteVPSchedule`, fractional
  t between grid points, the linear schedule β 1e-4 → 0.02 over 1000 steps); the learned-σ
  channels are dropped and D = x − σ ε̂ (`parameterisations.TeacherAdapter`).
  `teacher.sigma_min` / `teacher.sigma_max` are the adapter's range (0.0100 … 157.4).

Classifier-free guidance (scale w, `null_cond` = the cached "" embedding, batch 1 or B, same L):
D = D(x; σ, ∅) + w·(D(x; σ, c) − D(x; σ, ∅)), the same as guiding ε since D is affine in ε̂.
w = 1 or None: one network call on the batch; otherwise one call on [∅; c] (2B rows); features
are then those of the conditional half. 1024-MS transformers (micro-conditions) get the
resolution 8·(H, W) pixels and the aspect ratio H/W, as PixArtAlphaPipeline passes them.
bf16: `compute_dtype=jnp.bfloat16` runs the matmuls in bf16 (float32 weights, residual stream,
norms and output), see models/pixart.py. Parity: tests/test_pixart_teacher.py.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from fdistill_jax import validation as V
from fdistill_jax.diffusion import ddpm_samplers
from fdistill_jax.diffusion import parameterisations as param_lib
from fdistill_jax.models import pixart as pixart_lib

VAE_FACTOR = 8  # SD VAE: latent pixel -> 8 image pixels (micro-conditions are in pixels).
SOLVERS = ("dpm_solver_pp_2m", "ddim")  # The first is the default reference sampler.
PREDICTION = "epsilon"
NAME = "PixArt teacher (DDPM-ε adapter)"
RULES = {  # The family's evaluation fields (teachers.FAMILIES['pixart'].rules).
    "eval.teacher_solver": V.one_of(*SOLVERS),
    "eval.sampler": V.one_of("one_step", *SOLVERS),
}


def adapter(teacher_cfg) -> param_lib.TeacherAdapter:
  """The DDPM-ε adapter of config.teacher (PixArt-α's linear β schedule unless teacher.schedule
  sets beta_schedule / beta_start / beta_end / num_train_timesteps)."""
  return param_lib.ddpm("epsilon", learned_variance=True,
                        **dict(teacher_cfg.get("schedule", None) or {}))


def check_module(module: pixart_lib.PixArtTransformer) -> None:
  """A ValueError unless the transformer predicts ε and a learned σ (out = 2·in channels)."""
  if module.out_dim != 2 * module.in_channels:
    raise ValueError(f"config.teacher: the PixArt teacher must have learned σ (out_channels = "
                     f"2·in_channels = {2 * module.in_channels}), got {module.out_dim}")


def _check_cond(cond: Any, batch: int, what: str = "cond") -> None:
  if not isinstance(cond, dict) or not {"embeddings", "mask"} <= set(cond):
    raise ValueError(f"PixArt teacher: {what} must be {{'embeddings': [B,L,D], 'mask': [B,L]}}, "
                     f"got {type(cond).__name__} "
                     f"{sorted(cond) if isinstance(cond, dict) else ''}")
  e, m = cond["embeddings"], cond["mask"]
  if e.ndim != 3 or m.shape != e.shape[:2] or e.shape[0] not in (batch, 1):
    raise ValueError(f"PixArt teacher: {what}['embeddings'] {tuple(e.shape)} / ['mask'] "
                     f"{tuple(m.shape)}: expected [B,L,D] / [B,L] with B = {batch} (or 1)")


def guided_denoise(teacher, x: jax.Array, sigma, cond: Any, guidance_scale: float | None,
                   return_features: bool, name: str):
  """D(x; σ, cond) of a transformer teacher (PixArtTeacher, flow_dit.FlowDiTTeacher: anything
  with .network, .adapter, .null_cond, .guidance_scale), classifier-free guided at
  `guidance_scale` (None: the teacher's own): one call on [∅; c] when w ∉ {None, 1}, with the
  conditional half's features. `name` names the teacher in errors."""
  w = teacher.guidance_scale if guidance_scale is None else guidance_scale
  b = x.shape[0]
  _check_cond(cond, b)
  net = lambda xi, t, c: teacher.network(xi, t, c, return_features=return_features)
  if w is None or w == 1.0:
    return teacher.adapter.denoise(net, x, sigma, cond)
  if teacher.null_cond is None:
    raise ValueError(f"{name}: guidance_scale={w} needs null_cond (the cached \"\" "
                     "embedding, PromptCache.null_condition())")
  _check_cond(teacher.null_cond, b, "null_cond")
  null = jax.tree_util.tree_map(lambda n, c: jnp.broadcast_to(n, c.shape).astype(c.dtype),
                                teacher.null_cond, cond)
  both = jax.tree_util.tree_map(lambda n, c: jnp.concatenate([n, c]), null, cond)
  sig = jnp.broadcast_to(jnp.asarray(sigma, jnp.float32), (b,))
  out = teacher.adapter.denoise(net, jnp.concatenate([x, x]), jnp.concatenate([sig, sig]), both)
  d, feats = out if return_features else (out, None)
  d_null, d_cond = d[:b], d[b:]
  d = d_null + w * (d_cond - d_null)
  if not return_features:
    return d
  return d, jax.tree_util.tree_map(lambda f: f[b:], feats)


@dataclasses.dataclass(frozen=True, eq=False)  # eq=False: hashable by identity (static in jit).
class PixArtTeacher:
  """module (PixArtTransformer, learned-σ 8-channel output), params (its 'params' collection),
  adapter (TeacherAdapter 'vp'/'epsilon' with learned_variance), null_cond (the "" condition or
  None), guidance_scale (default w; None = no guidance)."""
  module: pixart_lib.PixArtTransformer
  params: Any
  adapter: param_lib.TeacherAdapter
  null_cond: Any = None
  guidance_scale: float | None = None

  @property
  def sigma_min(self) -> float:
    return self.adapter.sigma_min

  @property
  def sigma_max(self) -> float:
    return self.adapter.sigma_max

  @property
  def alphas_cumprod(self) -> np.ndarray:
    return np.asarray(self.adapter.time.alphas_cumprod)

  def network(self, x_t: jax.Array, t: jax.Array, cond: Any, *, return_features: bool = False):
    """The raw transformer on DDPM inputs: x_t [B,H,W,4], t [B] -> [B,H,W,8] (or (out, feats)).
    A transformer with guidance_embedding reads the scale from cond["guidance"] [B]."""
    b, h, w, _ = x_t.shape
    added = (pixart_lib.micro_conditions(b, VAE_FACTOR * h, VAE_FACTOR * w)
             if self.module.micro_conditioned else None)
    emb = jnp.broadcast_to(cond["embeddings"], (b,) + cond["embeddings"].shape[1:])
    mask = jnp.broadcast_to(cond["mask"], (b,) + cond["mask"].shape[1:])
    extra = {"guidance": cond["guidance"]} if self.module.guidance_embedding else {}
    return self.module.apply({"params": self.params}, x_t, t, emb, mask, added,
                             return_features=return_features, **extra)

  def eps(self, x_t: jax.Array, t: jax.Array, cond: Any) -> jax.Array:
    """ε̂ [B,H,W,4] (learned-σ channels dropped): the `ddpm_samplers` EpsFn."""
    return self.network(x_t, t, cond)[..., :x_t.shape[-1]]

  def __call__(self, x: jax.Array, sigma, cond: Any, *, guidance_scale: float | None = None,
               return_features: bool = False):
    """D(x; σ, cond) (module docstring)."""
    return guided_denoise(self, x, sigma, cond, guidance_scale, return_features, "PixArt teacher")


def make_pixart_teacher(module: pixart_lib.PixArtTransformer, params: Any, *,
                        null_cond: Any = None, guidance_scale: float | None = None,
                        compute_dtype: Any = None, feature_blocks=None,
                        timestep_mode: str = "interpolate", beta_schedule: str = "linear",
                        num_train_timesteps: int = 1000, beta_start: float = 1e-4,
                        beta_end: float = 0.02) -> PixArtTeacher:
  """A PixArtTeacher from a module and its params (the 'params' collection or {'params': ...}).

  compute_dtype: e.g. jnp.bfloat16 for the matmuls; feature_blocks: blocks whose tokens
  return_features gives (None: the last). The schedule defaults are PixArt-α's.
  """
  if isinstance(params, dict) and set(params) == {"params"}:
    params = params["params"]
  check_module(module)
  opts = {}
  if compute_dtype is not None:
    opts["dtype"] = compute_dtype
  if feature_blocks is not None:
    opts["feature_blocks"] = tuple(feature_blocks)
  if opts:
    module = module.clone(**opts)
  adapter = param_lib.ddpm("epsilon", beta_schedule=beta_schedule,
                           num_train_timesteps=num_train_timesteps, beta_start=beta_start,
                           beta_end=beta_end, timestep_mode=timestep_mode, learned_variance=True)
  if null_cond is not None:
    null_cond = jax.tree_util.tree_map(jnp.asarray, dict(null_cond))
  return PixArtTeacher(module, params, adapter, null_cond, guidance_scale)


def wrap(teacher_cfg, module, params, adapter_, null_cond: Any = None) -> PixArtTeacher:
  """The D(x; σ, cond) the text-to-image problem holds (teachers/__init__'s family interface)."""
  del teacher_cfg  # Everything PixArt-specific is in the adapter.
  return PixArtTeacher(module, params, adapter_, null_cond)


def load_pixart_teacher(folder: str, **kwargs) -> PixArtTeacher:
  """From a diffusers PixArtTransformer2DModel folder or a pipeline folder (transformer/); kwargs
  as `make_pixart_teacher`. Needs no torch (safetensors weights)."""
  from fdistill_jax.convert import pixart as conv  # noqa: PLC0415 (numpy/safetensors only)
  module, params = conv.load_diffusers_folder(folder)
  return make_pixart_teacher(module, params, **kwargs)


def sample(teacher: PixArtTeacher, latents: jax.Array, cond: Any, *, num_steps: int = 20,
           guidance_scale: float = 4.5, solver: str = "dpm_solver_pp_2m", vae: Any = None,
           alphas_cumprod: Any = None, **solver_kwargs) -> jax.Array:
  """The teacher's reference multi-step sample (PixArtAlphaPipeline's defaults).

  latents: x_T ~ N(0, I) [B,h,w,4] (DDPM convention; σ_max·x_T in EDM's). solver:
  'dpm_solver_pp_2m' (PixArt's scheduler) or 'ddim' (η = 0); solver_kwargs go to
  `ddpm_samplers` (timestep_spacing, ...). vae: (AutoencoderKL module, variables) to decode
  to images [B,8h,8w,3] in [−1, 1] (unclipped); None returns the latents x̂0 [B,h,w,4].
  alphas_cumprod: override of the teacher's ᾱ (e.g. diffusers' float32 values).
  """
  if solver not in SOLVERS:
    raise ValueError(f"solver={solver!r}; expected one of {SOLVERS}")
  _check_cond(cond, latents.shape[0])
  w = 1.0 if guidance_scale is None else float(guidance_scale)
  a = teacher.alphas_cumprod if alphas_cumprod is None else alphas_cumprod
  fn = getattr(ddpm_samplers, solver)
  z = fn(teacher.eps, latents, cond, a, num_steps, guidance_scale=w,
         null_cond=teacher.null_cond, **solver_kwargs)
  if vae is None:
    return z
  vae_module, vae_variables = vae
  return vae_module.apply(vae_variables, z, method=vae_module.decode_latents)
