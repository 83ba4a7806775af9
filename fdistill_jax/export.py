"""Export a trained student (or a teacher trained here) for use outside this project.

  python -m fdistill_jax.export --config=configs/digits_js.py --workdir=runs/digits_js \
      --out=runs/digits_js/export [--params=raw|0.98] [--step=1200]

One entry point for every architecture the project trains. `--out` is a folder (local or
`gs://`); it always receives
  metadata.json       method, divergence, teacher, sigma_init, step, params (the EMA track or
                      'raw'), architecture (kind + constructor kwargs), files, and the full config;
  params.safetensors  the chosen generator parameters, flat: '/'-joined Flax paths -> arrays
                      (Dense kernels [in, out], conv kernels HWIO), float32;
plus the native format of the teacher family (the writer teachers.FAMILIES[kind].export names):
  edm (EDMPrecond)    edm_precond.safetensors: EDM's state_dict (PyTorch names, OIHW layouts,
                      resample_filter buffers) with precond_kwargs in its metadata; it loads with
                      `EDMPrecond(**precond_kwargs).load_state_dict(sd)` in NVIDIA's code and
                      here with `fdistill_jax.teachers.edm.load_edm`.
  pixart (PixArt-α)   diffusers/: a PixArtTransformer2DModel folder (config.json + safetensors)
                      for `PixArtTransformer2DModel.from_pretrained` / PixArtAlphaPipeline;
                      metadata's architecture gives the student's timestep t* and input scale.
                      A teacher trained with its own T5 (teacher.text_encoder) also gets
                      text_encoder/: a transformers T5EncoderModel folder with the byte
                      tokenizer, the --model of tools/encode_prompts for its prompt cache.
  gmm (toy MLP)       params.safetensors is the format; `fdistill_jax.convert.mlp_torch.load`
                      builds the PyTorch MLPDenoiser from metadata.json and loads it.
A one-step student samples as x = G(sigma_init * z, sigma_init, labels); a K-step student as the
chain of diffusion/few_step.py over metadata's sampling.sigmas with its re-noising rule
(sampling.renoise: 'stochastic' x <- x0 + σ_next·ε, 'deterministic' the DDIM step). `--step`
picks any kept checkpoint (default: the latest), `--params` the EMA track (default:
config.eval.params). Each file is written under a temporary name and renamed, so a failed export
never leaves a partial file over a good one. While it restores, export holds the workdir's lock (engine/workdir_lock.py):
restoring may set aside or adopt checkpoint steps, so it waits for a run training there.
"""
from __future__ import annotations

import json
from typing import Any, Callable

import numpy as np
from absl import app, flags
from etils import epath
from ml_collections import config_flags


def _define_flags() -> None:
  """Defines the command-line flags; only when this module is the program, so that importing
  it (tests, other tools) defines none and cannot clash with another module's flags."""
  global _CONFIG, _WORKDIR, _OUT, _PARAMS, _STEP
  _CONFIG = config_flags.DEFINE_config_file("config", None, "The run's config.", lock_config=True)
  _WORKDIR = flags.DEFINE_string("workdir", None, "The run's workdir.")
  _OUT = flags.DEFINE_string("out", None, "Output folder (local path or gs://).")
  _PARAMS = flags.DEFINE_string("params", None,
                                "'raw' or an EMA decay; default config.eval.params.")
  _STEP = flags.DEFINE_integer("step", None, "Checkpoint step to export; default the latest.")
  flags.mark_flags_as_required(["config", "workdir", "out"])


FORMAT = "fdistill_jax.export/1"
# The diffusers scheduler of K-step PixArt students, copied into their pipeline folders.
SCHEDULER_MODULE = "fdistill_few_step"
SCHEDULER_SOURCE = epath.Path(__file__).parent / "convert" / "few_step_scheduler.py"


def _write_bytes(path: epath.Path, data: bytes) -> None:
  tmp = path.parent / (path.name + ".tmp")
  tmp.write_bytes(data)
  tmp.rename(path)


def flatten(params) -> dict[str, np.ndarray]:
  """Nested Flax params -> {'a/b/kernel': contiguous numpy array}."""
  from flax import traverse_util
  return {k: np.ascontiguousarray(np.asarray(v))
          for k, v in traverse_util.flatten_dict(params, sep="/").items()}


def _safetensors_bytes(arrays: dict[str, np.ndarray], metadata: dict[str, str]) -> bytes:
  from safetensors.numpy import save
  return save(arrays, metadata=metadata)


# ------------------------------------------------------------------ native formats
# Each writer: (cfg, params, out folder) -> (architecture dict for metadata.json, files written).
def _write_edm(cfg, params, out: epath.Path) -> tuple[dict, list[str]]:
  from fdistill_jax.convert import edm_state_dict as esd
  from fdistill_jax.models.edm import build_edm_precond
  kwargs = cfg.teacher.precond_kwargs.to_dict()
  sd = esd.variables_to_state_dict({"params": params}, build_edm_precond(kwargs))
  kw = esd._jsonable(kwargs)  # pylint: disable=protected-access
  meta = {"precond_kwargs": json.dumps(kw), "sigma_init": str(cfg.diffusion.sigma_init),
          "sampling": json.dumps(sampling_metadata(cfg))}
  _write_bytes(out / "edm_precond.safetensors",
               _safetensors_bytes({k: np.ascontiguousarray(v) for k, v in sd.items()}, meta))
  return {"kind": "EDMPrecond", "kwargs": kw}, ["edm_precond.safetensors"]


def mlp_kwargs(params, sigma_data: float) -> dict:
  """MLPDenoiser's constructor kwargs, read off its parameter shapes (no config layout needed)."""
  depth = sum(1 for k in params if k.startswith("block") and k.endswith("_0"))
  return {"dim": int(params["out"]["kernel"].shape[1]),
          "hidden": int(params["inp"]["kernel"].shape[1]), "depth": depth,
          "emb_dim": int(params["emb0"]["kernel"].shape[0]),
          "label_dim": int(params["label"]["kernel"].shape[0]) if "label" in params else 0,
          "sigma_data": float(sigma_data)}


def _write_mlp(cfg, params, out: epath.Path) -> tuple[dict, list[str]]:
  del out  # params.safetensors is the MLP's format.
  return {"kind": "MLPDenoiser", "kwargs": mlp_kwargs(params, cfg.diffusion.sigma_data)}, []


def _pipeline_components(cfg) -> dict:
  """model_index.json's component entries of a PixArtAlphaPipeline folder for this student."""
  from fdistill_jax.convert import pixart as conv
  return {"_class_name": "PixArtAlphaPipeline", "_diffusers_version": conv.diffusers_version(),
          "transformer": ["diffusers", "PixArtTransformer2DModel"],
          "scheduler": [SCHEDULER_MODULE, "FewStepScheduler"],
          "vae": ["diffusers", "AutoencoderKL"] if cfg.teacher.get("vae") else [None, None],
          # Prompts come as prompt_embeds (our cache or the teacher's T5); the T5 is not copied.
          "text_encoder": [None, None], "tokenizer": [None, None]}


def _copy_vae(src: str, dest: epath.Path) -> None:
  """The teacher's AutoencoderKL folder's config and weights, copied byte for byte."""
  from fdistill_jax.convert import vae as vae_conv
  folder = epath.Path(vae_conv.vae_dir(src))
  dest.mkdir(parents=True, exist_ok=True)
  names = [p.name for p in folder.iterdir()
           if p.name == "config.json" or p.name.startswith(vae_conv.WEIGHTS_NAME)]
  for name in sorted(names):
    _write_bytes(dest / name, (folder / name).read_bytes())


def scheduler_config(cfg) -> dict:
  """FewStepScheduler's config: the student's σ's, their DDPM timesteps (float32, the values
  the student runs at) and its re-noising rule."""
  from fdistill_jax.convert import pixart as conv
  from fdistill_jax.experiments import t2i
  s = sampling_metadata(cfg)
  ad = t2i.adapter(cfg)
  ts = [float(np.float32(ad.time.sigma_to_t(np.float32(v)))) for v in s["sigmas"]]
  steps = getattr(ad.time, "num_timesteps", None) or round(float(ad.time.time_scale))
  return {"_class_name": "FewStepScheduler", "_diffusers_version": conv.diffusers_version(),
          "sigmas": s["sigmas"], "timesteps": ts, "renoise": s["renoise"],
          "num_train_timesteps": int(steps),
          "prediction_type": "epsilon" if ad.process == "vp" else "flow"}


def _write_transformer(cfg, params, out: epath.Path) -> tuple[dict, list[str]]:
  """The writer of every family on the PixArt transformer body (pixart, flow_dit).
  `diffusers/`: a PixArtAlphaPipeline folder that samples the student as `--mode=sample`:
  transformer/ (PixArtTransformer2DModel, float32), scheduler/ (FewStepScheduler of
  convert/few_step_scheduler.py, copied in as remote code, with the student's K σ's, timesteps
  and re-noising rule), vae/ (the teacher's AutoencoderKL, where it has one), model_index.json.
  Load it with `PixArtAlphaPipeline.from_pretrained(folder, trust_remote_code=True)` (pass
  `vae=None` for a pixel-space student) and call it with prompt_embeds/prompt_attention_mask,
  num_inference_steps=K, guidance_scale=1.0, use_resolution_binning=False. A student trained
  with its own T5 (teacher.text_encoder) also gets text_encoder/ beside the pipeline folder (a
  transformers T5EncoderModel with the byte tokenizer, tools/encode_prompts' --model). A student
  that takes the guidance scale as an input is not expressible there (the pipeline's transformer
  has no guidance embedding): it gets params.safetensors and metadata.json only. A teacher
  trained here (method edm_training) of a family with its own scheduler (flow_dit: diffusers'
  FlowMatchEulerDiscreteScheduler) gets diffusers/transformer and diffusers/scheduler only."""
  from fdistill_jax.convert import pixart as conv
  from fdistill_jax.experiments import t2i, t2i_text
  from fdistill_jax.models import pixart as pixart_lib
  files, text = [], {}
  if t2i_text.enabled(cfg):  # {"transformer", "text_encoder"}: the T5 goes to its own folder.
    text = {"text_encoder": t2i_text.write_text_encoder(cfg, params["text_encoder"],
                                                        str(out / "text_encoder"))}
    params, files = params["transformer"], files + ["text_encoder"]
  module = pixart_lib.from_diffusers_config(t2i.module_config(cfg))
  sigma = float(cfg.diffusion.sigma_init)
  ad = t2i.adapter(cfg)
  t_star = float(ad.time.sigma_to_t(sigma))
  c_in = 1.0 / ((1.0 + sigma ** 2) ** 0.5 if ad.process == "vp" else 1.0 + sigma)
  arch = {"kind": "PixArtTransformer2DModel", "kwargs": module.diffusers_config(),
          "prediction": t2i.family_teacher(cfg).PREDICTION, "timestep": t_star,
          "input_scale": sigma * c_in, **text}
  if "guidance_embedder" in params:
    arch["pipeline"] = None
    arch["why_no_pipeline"] = (
        "this student takes the guidance scale as an input (config.guidance_input) and "
        "diffusers' PixArtTransformer2DModel has no guidance embedding")
    return arch, files
  pipe = out / "diffusers"
  tm = t2i.family_teacher(cfg)
  if _trains_teacher(cfg) and hasattr(tm, "export_scheduler"):
    # A trained teacher samples with its family's own scheduler, not a student's chain: a
    # folder that the family's loader (teachers/flow_dit.load_flow_teacher) and diffusers'
    # transformer and scheduler classes read.
    conv.to_diffusers_folder(params, module, str(pipe / "transformer"))
    (pipe / "scheduler").mkdir(parents=True, exist_ok=True)
    _write_bytes(pipe / "scheduler" / "scheduler_config.json",
                 json.dumps(tm.export_scheduler(cfg.teacher), indent=1).encode())
    arch["pipeline"] = "teacher"
    return arch, ["diffusers", *files]
  conv.to_diffusers_folder(params, module, str(pipe / "transformer"))
  (pipe / "scheduler").mkdir(parents=True, exist_ok=True)
  _write_bytes(pipe / "scheduler" / "scheduler_config.json",
               json.dumps(scheduler_config(cfg), indent=1).encode())
  _write_bytes(pipe / "scheduler" / f"{SCHEDULER_MODULE}.py", SCHEDULER_SOURCE.read_bytes())
  if cfg.teacher.get("vae"):
    _copy_vae(cfg.teacher.vae, pipe / "vae")
  _write_bytes(pipe / "model_index.json",
               json.dumps(_pipeline_components(cfg), indent=1).encode())
  arch["pipeline"] = "diffusers"
  return arch, ["diffusers", *files]


def _trains_teacher(cfg) -> bool:
  """Whether cfg's method trains a denoiser from data (edm_training) rather than a student."""
  from fdistill_jax.methods import registry
  return not getattr(registry.get(cfg.method.name), "NEEDS_TEACHER", True)


def native_writer(cfg) -> Callable[[Any, Any, epath.Path], tuple[dict, list[str]]]:
  """The writer of cfg's teacher family (teachers.FAMILIES[kind].export)."""
  from fdistill_jax import teachers
  return teachers.of(cfg).writer()


def sampling_metadata(cfg) -> dict:
  """How the student samples: steps K, σ_1 … σ_K (EDM σ units), the re-noising rule between
  steps (diffusion/few_step.py; None for one step) and, for a student that takes the guidance
  scale as an input, its trained range {w_min, w_max} (None otherwise)."""
  from fdistill_jax.diffusion import few_step
  gi = cfg.get("guidance_input")
  chain = few_step.from_config(cfg)
  sigmas = [float(cfg.diffusion.sigma_init)] if chain is None else list(chain.sigmas)
  return {"steps": len(sigmas), "sigmas": sigmas,
          "renoise": None if chain is None else chain.renoise,
          "guidance_input": ({"w_min": float(gi.w_min), "w_max": float(gi.w_max)}
                             if gi is not None and gi.enabled else None)}


# ------------------------------------------------------------------ entry point
def export_generator(cfg, workdir: str, out: str, which: str | None = None,
                     step: int | None = None) -> dict:
  """Writes the generator of checkpoint `step` (default latest) of `workdir` into folder `out`.

  which: 'raw' or an EMA decay string (default config.eval.params). Returns a summary dict.
  """
  import jax

  from fdistill_jax import compose
  native_writer(cfg)  # An unexportable kind fails before the checkpoint is restored.
  if epath.Path(out).suffix in (".safetensors", ".pt", ".pth"):
    raise ValueError(f"--out={out} must be a folder (the EDM state_dict is written as "
                     f"<out>/edm_precond.safetensors)")
  which = which or cfg.eval.params
  from fdistill_jax.engine import workdir_lock
  # The workdir's lock, as for training: restoring may move a step that fails verification to
  # checkpoints/corrupt/ (or adopt one) and building the problem may write the workdir's caches.
  with workdir_lock.hold(workdir, "export"):
    _, state = compose.load_trained(cfg, workdir, step=step)
  params = jax.device_get(compose.generator_params(state, which))
  return write_export(cfg, params, out, step=int(state["step"]), which=which)


def write_export(cfg, params, out: str, *, step: int, which: str) -> dict:
  """Writes generator `params` (host arrays, the nested Flax tree) of cfg's student into folder
  `out` (module docstring); step / which are recorded. Returns export_generator's summary."""
  kind = cfg.teacher.kind
  writer = native_writer(cfg)
  dest = epath.Path(out)
  dest.mkdir(parents=True, exist_ok=True)
  arch, files = writer(cfg, params, dest)
  flat = flatten(params)
  _write_bytes(dest / "params.safetensors",
               _safetensors_bytes(flat, {"format": FORMAT, "step": str(step), "params": which}))
  m = cfg.method
  meta = {"format": FORMAT, "method": m.name, "divergence": m.get("divergence"),
          "teacher": {"kind": kind, "checkpoint": cfg.teacher.get("checkpoint")},
          "sigma_init": float(cfg.diffusion.sigma_init), "sampling": sampling_metadata(cfg),
          "step": step, "params": which,
          "architecture": arch, "files": ["params.safetensors", *files],
          "config": json.loads(cfg.to_json_best_effort())}
  _write_bytes(dest / "metadata.json", json.dumps(meta, indent=1).encode())
  return {"out": str(dest), "step": step, "params": which, "tensors": len(flat),
          "files": meta["files"] + ["metadata.json"]}


def main(argv):
  del argv
  print(export_generator(_CONFIG.value, _WORKDIR.value, _OUT.value, _PARAMS.value, _STEP.value))


if __name__ == "__main__":
  _define_flags()
  app.run(main)
