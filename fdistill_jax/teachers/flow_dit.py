"""A rectified-flow (velocity-prediction) DiT as a teacher: D(x; σ, cond) in EDM's convention.

The flow family of SD3 / FLUX / SANA with our PixArt transformer as the network body
(`models.pixart.PixArtTransformer` with out_channels = in_channels: no learned-σ channels):

    teacher = load_flow_teacher(folder, null_cond=cache.null_condition(), guidance_scale=4.5)
    d = teacher(x, sigma, cond)                        # x̂0, float32 [B, H, W, C]
    d, feats = teacher(x, sigma, cond, return_features=True)
    z0 = sample(teacher, latents, cond, num_steps=28)  # Euler (or Heun), diffusers' grid

The process in the network's native space is x_s = (1 − s)·x0 + s·ε, s ∈ (0, 1]; the network
takes (x_s, t = T·s) with T = num_train_timesteps (1000) and predicts v̂ ≈ ε − x0, so
x̂0 = x_s − s·v̂. In EDM units x = x0 + σ ε: x = x_s/(1 − s), i.e.

    σ = s/(1 − s),   s = σ/(1 + σ),   x_s = x/(1 + σ),   t = T·σ/(1 + σ),

and D(x; σ) = x_s − s·v̂(x_s, t) = x/(1 + σ) − σ/(1 + σ)·v̂ (`parameterisations.rectified_flow`,
prediction 'velocity': c_in = c_skip = 1/(1 + σ), c_out = −σ/(1 + σ)).

σ range. s = 1 (pure noise, where diffusers' flow samplers start) is σ = ∞, which EDM-units code
cannot hold; the defaults are s ∈ [0.001, 0.999], the ends of diffusers' 1000-step training
grid away from s = 1 (whatever T): σ_min = 1/999 ≈ 0.001001 (t = 1 for T = 1000),
σ_max = 999 (t = 999). A student trained at EDM's σ_max = 80 asks for s = 0.988 (t = 987.7),
PixArt-α's 157.4 for s = 0.9937: both inside. `make_flow_teacher(sigma_min=, sigma_max=)`
narrows or widens it. (The reference sampler `sample` works in s and starts at s = 1.)

Call signature as `teachers.pixart.PixArtTeacher` (so the methods hold it like any denoiser):
teacher(x [B,H,W,C], sigma [] or [B], cond {"embeddings": [B,L,D], "mask": [B,L]}, *,
guidance_scale=None, return_features=False) -> D float32 [B,H,W,C] or (D, {f"block{i}": ...}).
Classifier-free guidance D = D(∅) + w·(D(c) − D(∅)) (= guiding v̂, D being affine in v̂), one call
on [∅; c] when w ∉ {None, 1}; features are then the conditional half's. Parity with diffusers:
tests/test_flow_dit.py.

Export: `to_diffusers_folder` writes transformer/ (PixArtTransformer2DModel) and scheduler/
(FlowMatchEulerDiscreteScheduler). No stock diffusers pipeline runs this pair (see its docstring).
"""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import jax
import jax.numpy as jnp
from etils import epath

from fdistill_jax import validation as V
from fdistill_jax.diffusion import flow_samplers
from fdistill_jax.diffusion import parameterisations as param_lib
from fdistill_jax.models import pixart as pixart_lib
from fdistill_jax.teachers.pixart import VAE_FACTOR, _check_cond, guided_denoise

SOLVERS = flow_samplers.SOLVERS  # The first is the default reference sampler.
NUM_TRAIN_TIMESTEPS = 1000
SCHEDULER_CLASS = "FlowMatchEulerDiscreteScheduler"
PREDICTION = "flow"
NAME = "rectified-flow DiT teacher (velocity adapter)"


S_RANGE = (1e-3, 1.0 - 1e-3)  # The default s range (module docstring).


def default_sigma_range() -> tuple[float, float]:
  """(σ_min, σ_max) = (1/999, 999): σ = s/(1 − s) at the ends of S_RANGE (module docstring)."""
  return tuple(s / (1.0 - s) for s in S_RANGE)


# ------------------------------------------------------------------ the family (teachers.FAMILIES)
# config.teacher.schedule of a 'flow_dit' teacher: {num_train_timesteps, shift, sigma_min,
# sigma_max}, every key optional (defaults: 1000, 1.0 and default_sigma_range()).
SCHEDULE_KEYS = ("num_train_timesteps", "shift", "sigma_min", "sigma_max")
RULES = {  # The family's fields beyond the text-to-image problem's.
    "eval.teacher_solver": V.one_of(*SOLVERS),
    "eval.sampler": V.one_of("one_step", *SOLVERS),
    "teacher.schedule.num_train_timesteps": V.within(1, 10 ** 6, "an int"),
    "teacher.schedule.shift": V.above(0, "the SD3 time shift (1 = none)"),
    "teacher.schedule.sigma_min": V.above(0, "a noise level (σ = s/(1 − s))"),
    "teacher.schedule.sigma_max": V.above(0, "a noise level (σ = s/(1 − s))"),
}


def _schedule(teacher_cfg) -> dict:
  sched = dict(teacher_cfg.get("schedule", None) or {})
  unknown = sorted(set(sched) - set(SCHEDULE_KEYS))
  if unknown:
    raise V.ConfigError(f"config.teacher.schedule has {unknown}: not fields of a flow teacher's "
                        f"schedule; known: {SCHEDULE_KEYS}")
  return {"num_train_timesteps": int(sched.get("num_train_timesteps", NUM_TRAIN_TIMESTEPS)),
          "shift": float(sched.get("shift", 1.0)),
          "sigma_min": sched.get("sigma_min"), "sigma_max": sched.get("sigma_max")}


def velocity_adapter(num_train_timesteps: int = NUM_TRAIN_TIMESTEPS,
                     sigma_min: float | None = None,
                     sigma_max: float | None = None) -> param_lib.TeacherAdapter:
  """The rectified-flow velocity adapter at t = T·s on [σ_min, σ_max] (default_sigma_range())."""
  lo, hi = default_sigma_range()
  return param_lib.rectified_flow(
      "velocity", time_scale=float(num_train_timesteps),
      sigma_min=lo if sigma_min is None else float(sigma_min),
      sigma_max=hi if sigma_max is None else float(sigma_max))


def adapter(teacher_cfg) -> param_lib.TeacherAdapter:
  """The velocity adapter of config.teacher (teacher.schedule: time scale T and σ range)."""
  s = _schedule(teacher_cfg)
  return velocity_adapter(s["num_train_timesteps"], s["sigma_min"], s["sigma_max"])


def check_module(module: pixart_lib.PixArtTransformer) -> None:
  """A ValueError unless the transformer predicts a velocity (out_channels = in_channels)."""
  if module.out_dim != module.in_channels:
    raise ValueError(
        f"config.teacher: a flow teacher predicts a velocity (out_channels = in_channels = "
        f"{module.in_channels}), got out_channels={module.out_dim}"
        + (" (a learned-σ ε-prediction PixArt-α transformer: teacher.kind='pixart', "
           "teachers.pixart)" if module.out_dim == 2 * module.in_channels else ""))


def wrap(teacher_cfg, module, params, adapter_, null_cond: Any = None) -> "FlowDiTTeacher":
  """The D(x; σ, cond) the text-to-image problem holds (teacher.schedule's shift for sampling)."""
  return FlowDiTTeacher(module, params, adapter_, null_cond, None,
                        _schedule(teacher_cfg)["shift"])


def export_scheduler(teacher_cfg) -> dict:
  """scheduler_config.json of the teacher's own Euler sampler (FlowMatchEulerDiscreteScheduler)."""
  s = _schedule(teacher_cfg)
  return scheduler_config(s["num_train_timesteps"], s["shift"])


@dataclasses.dataclass(frozen=True, eq=False)  # eq=False: hashable by identity (static in jit).
class FlowDiTTeacher:
  """module (PixArtTransformer with out_channels = in_channels), params (its 'params'),
  adapter (TeacherAdapter 'flow'/'velocity', FlowTime time_scale = T), null_cond (the ""
  condition or None), guidance_scale (default w; None = no guidance), shift (the SD3 time shift
  of its reference sampler, written to the exported scheduler)."""
  module: pixart_lib.PixArtTransformer
  params: Any
  adapter: param_lib.TeacherAdapter
  null_cond: Any = None
  guidance_scale: float | None = None
  shift: float = 1.0

  @property
  def sigma_min(self) -> float:
    return self.adapter.sigma_min

  @property
  def sigma_max(self) -> float:
    return self.adapter.sigma_max

  @property
  def num_train_timesteps(self) -> int:
    return int(round(self.adapter.time.time_scale))

  def network(self, x_s: jax.Array, t: jax.Array, cond: Any, *, return_features: bool = False):
    """The raw transformer on native inputs: x_s [B,H,W,C], t = T·s [B] float -> v̂ [B,H,W,C]
    (or (v̂, feats)). A transformer with guidance_embedding reads the scale from
    cond["guidance"]."""
    b, h, w, _ = x_s.shape
    added = (pixart_lib.micro_conditions(b, VAE_FACTOR * h, VAE_FACTOR * w)
             if self.module.micro_conditioned else None)
    emb = jnp.broadcast_to(cond["embeddings"], (b,) + cond["embeddings"].shape[1:])
    mask = jnp.broadcast_to(cond["mask"], (b,) + cond["mask"].shape[1:])
    extra = {"guidance": cond["guidance"]} if self.module.guidance_embedding else {}
    return self.module.apply({"params": self.params}, x_s, t, emb, mask, added,
                             return_features=return_features, **extra)

  def velocity(self, x_s: jax.Array, t: jax.Array, cond: Any) -> jax.Array:
    """v̂ [B,H,W,C] at (x_s, t = T·s): the `flow_samplers` VelocityFn."""
    return self.network(x_s, jnp.asarray(t, jnp.float32), cond)

  def __call__(self, x: jax.Array, sigma, cond: Any, *, guidance_scale: float | None = None,
               return_features: bool = False):
    """D(x; σ, cond) (module docstring)."""
    return guided_denoise(self, x, sigma, cond, guidance_scale, return_features, "flow teacher")


def make_flow_teacher(module: pixart_lib.PixArtTransformer, params: Any, *,
                      null_cond: Any = None, guidance_scale: float | None = None,
                      compute_dtype: Any = None, feature_blocks=None,
                      num_train_timesteps: int = NUM_TRAIN_TIMESTEPS, shift: float = 1.0,
                      sigma_min: float | None = None, sigma_max: float | None = None
                      ) -> FlowDiTTeacher:
  """A FlowDiTTeacher from a module and its params (the 'params' collection or {'params': ...}).

  The module must predict C = in_channels channels (a velocity); a learned-σ PixArt-α
  transformer (2C outputs) is refused. sigma_min / sigma_max default to `default_sigma_range()`.
  compute_dtype / feature_blocks as `make_pixart_teacher`.
  """
  if isinstance(params, dict) and set(params) == {"params"}:
    params = params["params"]
  if not isinstance(module, pixart_lib.PixArtTransformer):
    raise TypeError(f"flow teacher: module must be a PixArtTransformer, got "
                    f"{type(module).__name__}")
  check_module(module)
  flow_samplers._check_shift(shift, num_train_timesteps)  # pylint: disable=protected-access
  opts = {}
  if compute_dtype is not None:
    opts["dtype"] = compute_dtype
  if feature_blocks is not None:
    opts["feature_blocks"] = tuple(feature_blocks)
  if opts:
    module = module.clone(**opts)
  adapter_ = velocity_adapter(num_train_timesteps, sigma_min, sigma_max)
  if null_cond is not None:
    null_cond = jax.tree_util.tree_map(jnp.asarray, dict(null_cond))
  return FlowDiTTeacher(module, params, adapter_, null_cond, guidance_scale, float(shift))


def read_scheduler_config(folder: str | os.PathLike) -> dict | None:
  """The FlowMatch scheduler_config.json of a pipeline folder (`scheduler/`) or None if absent;
  a scheduler of another family is refused."""
  from fdistill_jax import untrusted  # pylint: disable=import-outside-toplevel
  path = epath.Path(folder) / "scheduler" / "scheduler_config.json"
  if not path.is_file():
    return None
  cfg = untrusted.read_json(path)
  name = cfg.get("_class_name", "") if isinstance(cfg, dict) else ""
  if not str(name).startswith("FlowMatch"):
    raise ValueError(f"{path}: _class_name is {name!r}; a flow teacher needs a FlowMatch* "
                     "scheduler (an ε-prediction PixArt-α folder loads with teachers.pixart)")
  for key in ("use_dynamic_shifting", "invert_sigmas", "use_karras_sigmas",
              "use_exponential_sigmas", "use_beta_sigmas", "shift_terminal",
              "stochastic_sampling"):
    if cfg.get(key):
      raise ValueError(f"{path}: {key}={cfg[key]!r} is not supported by the flow samplers")
  untrusted.check_int(cfg.get("num_train_timesteps", 1000), "field 'num_train_timesteps'",
                      str(path), 1, 10 ** 6)
  untrusted.check_real(cfg.get("shift", 1.0), "field 'shift'", str(path), positive=True)
  return cfg


def load_flow_teacher(folder: str, **kwargs) -> FlowDiTTeacher:
  """From a diffusers PixArtTransformer2DModel folder, or a folder with transformer/ (and
  scheduler/, whose num_train_timesteps and shift are used unless given in kwargs); kwargs as
  `make_flow_teacher`. Needs no torch."""
  from fdistill_jax.convert import pixart as conv  # pylint: disable=import-outside-toplevel
  sched = read_scheduler_config(folder)
  if sched is not None:
    kwargs.setdefault("num_train_timesteps", int(sched.get("num_train_timesteps", 1000)))
    kwargs.setdefault("shift", float(sched.get("shift", 1.0)))
  module, params = conv.load_diffusers_folder(folder)
  return make_flow_teacher(module, params, **kwargs)


def sample(teacher: FlowDiTTeacher, latents: jax.Array, cond: Any, *, num_steps: int = 28,
           guidance_scale: float | None = 4.5, solver: str = "euler", shift: float | None = None,
           sigmas=None, vae: Any = None) -> jax.Array:
  """The teacher's reference multi-step sample (diffusers' FlowMatch Euler / Heun loops).

  latents: unit noise at s = 1 [B,h,w,C] (the flow's native space, as diffusers pipelines start;
  σ_max·latents in EDM units is only approached as σ_max → ∞). shift: None = the teacher's.
  sigmas: explicit s grid (Euler only). vae: (AutoencoderKL module, variables) to decode to
  images [B,8h,8w,3] in [−1, 1]; None returns the latents x̂0 [B,h,w,C].
  """
  if solver not in SOLVERS:
    raise ValueError(f"solver={solver!r}; expected one of {SOLVERS}")
  _check_cond(cond, latents.shape[0])
  if latents.ndim != 4 or latents.shape[-1] != teacher.module.in_channels:
    raise ValueError(f"flow teacher: latents must be [B,h,w,{teacher.module.in_channels}], "
                     f"got {tuple(latents.shape)}")
  w = 1.0 if guidance_scale is None else float(guidance_scale)
  kw = dict(guidance_scale=w, null_cond=teacher.null_cond,
            shift=teacher.shift if shift is None else float(shift),
            num_train_timesteps=teacher.num_train_timesteps)
  if solver == "euler":
    z = flow_samplers.euler(teacher.velocity, latents, cond, num_steps, sigmas=sigmas, **kw)
  else:
    if sigmas is not None:
      raise ValueError("sigmas= is for solver='euler' (FlowMatchHeunDiscreteScheduler takes none)")
    z = flow_samplers.heun(teacher.velocity, latents, cond, num_steps, **kw)
  if vae is None:
    return z
  vae_module, vae_variables = vae
  return vae_module.apply(vae_variables, z, method=vae_module.decode_latents)


# ------------------------------------------------------------------------------------ export


def scheduler_config(num_train_timesteps: int = NUM_TRAIN_TIMESTEPS, shift: float = 1.0) -> dict:
  """scheduler_config.json of the FlowMatchEulerDiscreteScheduler that runs `sample`'s Euler grid
  (every other field at the class default)."""
  from fdistill_jax.convert import pixart as conv  # pylint: disable=import-outside-toplevel
  flow_samplers._check_shift(shift, num_train_timesteps)  # pylint: disable=protected-access
  return {"_class_name": SCHEDULER_CLASS, "_diffusers_version": conv.diffusers_version(),
          "num_train_timesteps": int(num_train_timesteps), "shift": float(shift),
          "use_dynamic_shifting": False}


def to_diffusers_folder(teacher_or_params: Any, out_dir: str | os.PathLike, *,
                        module: pixart_lib.PixArtTransformer | None = None,
                        num_train_timesteps: int | None = None,
                        shift: float | None = None) -> str:
  """Write a flow DiT as diffusers folders; returns out_dir.

  teacher_or_params: a FlowDiTTeacher, or params (then `module` is required). Writes
  out_dir/transformer/ (`convert.pixart.to_diffusers_folder`: PixArtTransformer2DModel,
  float32) and out_dir/scheduler/scheduler_config.json (`scheduler_config`), loadable with
  PixArtTransformer2DModel.from_pretrained(out_dir, subfolder="transformer") and
  FlowMatchEulerDiscreteScheduler.from_pretrained(out_dir, subfolder="scheduler"), and back with
  `load_flow_teacher(out_dir)`.

  No model_index.json: no stock pipeline of diffusers 0.42.1 runs this pair. The PixArt
  pipelines (PixArtAlphaPipeline, PixArtSigmaPipeline, PAG PixArt-Σ) take any scheduler and
  pass the timesteps (here T·s, floats) straight to the transformer, and skip the learned-σ
  split when out_channels = in_channels, but they scale the initial noise by
  `scheduler.init_noise_sigma` and call `scheduler.scale_model_input`, which FlowMatch
  schedulers lack (AttributeError), and with one step read `step(...)[1]`, which FlowMatch's
  one-element tuple lacks. The flow pipelines (SD3, FLUX, SANA, Lumina, ...) take other
  transformer classes. Sample with the scheduler's own loop (tests/test_flow_dit.py).
  """
  from fdistill_jax.convert import pixart as conv  # pylint: disable=import-outside-toplevel
  if isinstance(teacher_or_params, FlowDiTTeacher):
    t = teacher_or_params
    module, params = t.module, t.params
    num_train_timesteps = t.num_train_timesteps if num_train_timesteps is None else \
        num_train_timesteps
    shift = t.shift if shift is None else shift
  else:
    params = teacher_or_params
    if module is None:
      raise ValueError("to_diffusers_folder: params need module= (the PixArtTransformer)")
  if module.out_dim != module.in_channels:
    raise ValueError(f"flow export: out_channels={module.out_dim} != in_channels="
                     f"{module.in_channels} (a learned-σ transformer is not a velocity model)")
  # The exported config is diffusers' (no compute dtype / feature options).
  base = pixart_lib.from_diffusers_config(module.diffusers_config())
  out = epath.Path(os.fspath(out_dir))
  conv.to_diffusers_folder(params, base, out / "transformer")
  cfg = scheduler_config(NUM_TRAIN_TIMESTEPS if num_train_timesteps is None
                         else num_train_timesteps, 1.0 if shift is None else shift)
  from fdistill_jax import fileio  # pylint: disable=import-outside-toplevel
  fileio.write_text(out / "scheduler" / "scheduler_config.json",
                    json.dumps(cfg, indent=2, sort_keys=True))
  return os.fspath(out_dir)
