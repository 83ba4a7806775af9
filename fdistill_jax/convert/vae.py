"""diffusers `AutoencoderKL` folder (config.json + weights) <-> `fdistill_jax.models.vae`.

Name mapping (state_dict key <-> Flax path under 'params'): `.i` <-> `_i` on a path component
(`encoder.down_blocks.0.resnets.1.conv1.weight` <-> encoder/down_blocks_0/resnets_1/conv1/kernel,
`…attentions.0.to_out.0.weight` <-> …/attentions_0/to_out_0/kernel); Conv2d weight
[O, I, kh, kw] <-> kernel [kh, kw, I, O]; Linear weight [out, in] <-> kernel [in, out];
GroupNorm weight <-> scale. Old checkpoints' attention names (`query`, `key`, `value`,
`proj_attn`, e.g. in stabilityai/sd-vae-ft-ema) are renamed as diffusers does on load.
The expected names and shapes come from `jax.eval_shape` of the module's init, so every missing,
unexpected or mis-shaped key is reported by name with the expected shape.

Reading a `.safetensors` folder needs no torch; `.bin` weights go through `torch.load(...,
weights_only=True)`, imported only then.
"""
from __future__ import annotations

import json
import os
import re
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from etils import epath
from flax import traverse_util

from fdistill_jax import fileio, untrusted
from fdistill_jax.convert.state_dict_io import (StateDict, StateDictMismatchError,
                                                match_state_dict, read_sharded_state_dict,
                                                read_state_dict)
from fdistill_jax.models.vae import AutoencoderKL

WEIGHTS_NAME = "diffusion_pytorch_model"
_DEPRECATED_ATTN = {"query": "to_q", "key": "to_k", "value": "to_v", "proj_attn": "to_out.0"}


# ------------------------------------------------------------------------------------ config


def vae_from_config(config: Mapping[str, Any], *, source: str = "config", dtype=jnp.float32,
                    param_dtype=jnp.float32) -> AutoencoderKL:
  """AutoencoderKL module from a diffusers config dict; rejects what the port does not cover."""
  def bad(field, expected):
    raise ValueError(f"{source}: field {field!r} = {config.get(field)!r}; expected {expected}")

  if not isinstance(config, Mapping):
    raise ValueError(f"{source}: config is a {type(config).__name__}, expected a JSON object")
  cls = config.get("_class_name", "AutoencoderKL")
  if cls != "AutoencoderKL":
    bad("_class_name", "'AutoencoderKL'")
  # Sizes are bounded before anything is built (a hostile config.json could ask for 10^6
  # channels); SD's VAE has 4 blocks of <= 512 channels, 2 layers each.
  chans = config.get("block_out_channels", (64,))
  if not (isinstance(chans, (list, tuple)) and 1 <= len(chans) <= 8):
    bad("block_out_channels", "a list of 1 to 8 channel counts")
  chans = tuple(untrusted.check_int(c, "field 'block_out_channels'", source, 1, 8192)
                for c in chans)
  for field, default, hi in (("in_channels", 3, 1024), ("out_channels", 3, 1024),
                             ("latent_channels", 4, 1024), ("layers_per_block", 1, 64),
                             ("norm_num_groups", 32, 8192)):
    untrusted.check_int(config.get(field, default), f"field {field!r}", source, 1, hi)
  scaling = untrusted.check_real(config.get("scaling_factor", 0.18215), "field 'scaling_factor'",
                                 source, positive=True)
  down = tuple(config.get("down_block_types", ("DownEncoderBlock2D",)))
  up = tuple(config.get("up_block_types", ("UpDecoderBlock2D",)))
  if down != ("DownEncoderBlock2D",) * len(chans):
    bad("down_block_types", f"{len(chans)} x 'DownEncoderBlock2D' (one per block_out_channels)")
  if up != ("UpDecoderBlock2D",) * len(chans):
    bad("up_block_types", f"{len(chans)} x 'UpDecoderBlock2D' (one per block_out_channels)")
  if config.get("act_fn", "silu") not in ("silu", "swish"):
    bad("act_fn", "'silu'")
  for f in ("latents_mean", "latents_std"):
    if config.get(f) is not None:
      bad(f, "null (per-channel latent statistics are not supported; use scaling/shift_factor)")
  groups = int(config.get("norm_num_groups", 32))
  for c in chans:
    if c % groups:
      bad("norm_num_groups", f"a divisor of every block_out_channels {list(chans)}")
  shift = config.get("shift_factor")
  if shift is not None:
    untrusted.check_real(shift, "field 'shift_factor'", source)
  return AutoencoderKL(
      in_channels=int(config.get("in_channels", 3)),
      out_channels=int(config.get("out_channels", 3)),
      latent_channels=int(config.get("latent_channels", 4)),
      block_out_channels=chans,
      layers_per_block=int(config.get("layers_per_block", 1)),
      norm_num_groups=groups,
      use_quant_conv=bool(config.get("use_quant_conv", True)),
      use_post_quant_conv=bool(config.get("use_post_quant_conv", True)),
      mid_block_add_attention=bool(config.get("mid_block_add_attention", True)),
      scaling_factor=scaling,
      shift_factor=None if shift is None else float(shift),
      dtype=dtype, param_dtype=param_dtype)


def module_config(module: AutoencoderKL) -> dict:
  """The diffusers config.json of `module` (loadable with AutoencoderKL.from_config)."""
  n = len(module.block_out_channels)
  return {
      "_class_name": "AutoencoderKL", "in_channels": module.in_channels,
      "out_channels": module.out_channels, "down_block_types": ["DownEncoderBlock2D"] * n,
      "up_block_types": ["UpDecoderBlock2D"] * n,
      "block_out_channels": list(module.block_out_channels),
      "layers_per_block": module.layers_per_block, "act_fn": "silu",
      "latent_channels": module.latent_channels, "norm_num_groups": module.norm_num_groups,
      "scaling_factor": module.scaling_factor, "shift_factor": module.shift_factor,
      "use_quant_conv": module.use_quant_conv, "use_post_quant_conv": module.use_post_quant_conv,
      "mid_block_add_attention": module.mid_block_add_attention,
  }


# ------------------------------------------------------------------------------- name mapping


def torch_name(path: tuple[str, ...]) -> str:
  """Flax param path -> diffusers state_dict key."""
  parts = [re.sub(r"_(\d+)$", r".\1", p) for p in path[:-1]]
  return ".".join(parts + ["bias" if path[-1] == "bias" else "weight"])


def _torch_shape(path, shape) -> tuple[int, ...]:
  if path[-1] == "kernel":
    return tuple(shape[i] for i in ((3, 2, 0, 1) if len(shape) == 4 else (1, 0)))
  return tuple(shape)


def _expected(module: AutoencoderKL) -> dict[str, tuple[tuple[str, ...], tuple[int, ...]]]:
  """torch key -> (flax path, torch shape)."""
  f = 2 ** (len(module.block_out_channels) - 1)
  x = jnp.zeros((1, f, f, module.in_channels), jnp.float32)
  params = jax.eval_shape(lambda: module.init(jax.random.PRNGKey(0), x))["params"]
  return {torch_name(p): (p, _torch_shape(p, s.shape))
          for p, s in traverse_util.flatten_dict(params).items()}


def count_params(module: AutoencoderKL) -> int:
  """Number of parameters, as `sum(p.numel() for p in vae.parameters())` in diffusers."""
  return int(sum(np.prod(s) for _, s in _expected(module).values()))


def _rename_deprecated(state_dict: Mapping[str, Any]) -> dict[str, Any]:
  out = {}
  for k, v in state_dict.items():
    m = re.match(r"^(.*\.attentions\.\d+)\.(query|key|value|proj_attn)\.(weight|bias)$", k)
    out[f"{m[1]}.{_DEPRECATED_ATTN[m[2]]}.{m[3]}" if m else k] = v
  return out


def _squeeze_1x1(a: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
  """1x1-conv attention projections of original LDM checkpoints -> the Linear weights expected."""
  return a[:, :, 0, 0] if a.ndim == 4 and len(shape) == 2 and a.shape[2:] == (1, 1) else a


def _to_flax_layout(path: tuple[str, ...], a: np.ndarray) -> np.ndarray:
  if path[-1] == "kernel":
    return np.transpose(a, (2, 3, 1, 0) if a.ndim == 4 else (1, 0))
  return a


def state_dict_to_params(state_dict: Mapping[str, Any], module: AutoencoderKL, *,
                         source: str = "state_dict", param_dtype=np.float32) -> dict:
  """diffusers AutoencoderKL state_dict (numpy) -> Flax variables {'params': ...} for `module`.

  Arrays are cast to `param_dtype` (None keeps the file's dtype). Raises StateDictMismatchError
  naming every missing, unexpected and mis-shaped key with the expected shape; `source` names
  the file in the message.
  """
  flat = match_state_dict(
      _rename_deprecated(state_dict), _expected(module), to_flax=_to_flax_layout,
      adapt=_squeeze_1x1, param_dtype=param_dtype, source=source,
      header=(f"{source}: state_dict does not match AutoencoderKL(block_out_channels="
              f"{list(module.block_out_channels)}, layers_per_block={module.layers_per_block}, "
              f"latent_channels={module.latent_channels}) built from the config:"))
  return {"params": traverse_util.unflatten_dict(flat)}


def params_to_state_dict(variables: Mapping[str, Any]) -> StateDict:
  """Flax variables -> diffusers state_dict (numpy, PyTorch names and layouts)."""
  out = {}
  for path, a in traverse_util.flatten_dict(dict(variables["params"])).items():
    a = np.asarray(jax.device_get(a))
    if path[-1] == "kernel":
      a = np.transpose(a, (3, 2, 0, 1) if a.ndim == 4 else (1, 0))
    out[torch_name(path)] = np.ascontiguousarray(a)
  return out


# ----------------------------------------------------------------------------------- folders


def vae_dir(path: str) -> str:
  if (epath.Path(path) / "config.json").is_file():
    return path
  sub = str(epath.Path(path) / "vae")
  if (epath.Path(sub) / "config.json").is_file():
    return sub  # a pipeline folder (model_index.json, vae/, transformer/, ...).
  raise FileNotFoundError(f"{path}: no config.json (nor vae/config.json); expected a diffusers "
                          "AutoencoderKL folder or a pipeline folder with a vae/ subfolder")


def read_folder_state_dict(path: str, variant: str | None = None) -> tuple[StateDict, str]:
  """Weights of a diffusers model folder: `diffusion_pytorch_model[.variant].safetensors`, its
  sharded form (`….safetensors.index.json` + shards) or `.bin`. Returns (state_dict, source)."""
  stem = WEIGHTS_NAME + (f".{variant}" if variant else "")
  single = str(epath.Path(path) / (stem + ".safetensors"))
  index = single + ".index.json"
  if epath.Path(single).is_file():
    return read_state_dict(single), single
  if epath.Path(index).is_file():
    return read_sharded_state_dict(path, index), index
  binary = str(epath.Path(path) / (stem + ".bin"))
  if epath.Path(binary).is_file():
    return read_state_dict(binary), binary
  raise FileNotFoundError(f"{path}: none of {epath.Path(single).name}, "
                          f"{epath.Path(index).name}, {epath.Path(binary).name} found")


def load_vae(path: str | os.PathLike, *, variant: str | None = None, dtype=jnp.float32,
             param_dtype=jnp.float32) -> tuple[AutoencoderKL, dict]:
  """(module, variables) from a diffusers AutoencoderKL folder (or a pipeline folder's vae/)."""
  d = vae_dir(os.fspath(path))
  cfg_path = str(epath.Path(d) / "config.json")
  config = untrusted.read_json(cfg_path)  # Bounded (1 MiB), invalid JSON named.
  module = vae_from_config(config, source=cfg_path, dtype=dtype, param_dtype=param_dtype)
  sd, source = read_folder_state_dict(d, variant)
  return module, state_dict_to_params(sd, module, source=source, param_dtype=param_dtype)


def save_vae(path: str | os.PathLike, module: AutoencoderKL, variables: Mapping[str, Any]) -> None:
  """Write a diffusers folder (config.json + diffusion_pytorch_model.safetensors)."""
  path = os.fspath(path)
  fileio.write_text(epath.Path(path) / "config.json", json.dumps(module_config(module), indent=2))
  fileio.save_safetensors(epath.Path(path) / (WEIGHTS_NAME + ".safetensors"),
                          params_to_state_dict(variables))
