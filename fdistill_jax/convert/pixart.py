"""PixArt-α weights: diffusers folders <-> `models.pixart` params, and the export to diffusers.

Name mapping (diffusers `PixArtTransformer2DModel.state_dict()` key <-> Flax param path):
* `pos_embed.proj.weight` [D,C,p,p] <-> pos_embed_proj/kernel [p,p,C,D] (+ bias);
* `adaln_single.emb.{timestep,resolution,aspect_ratio}_embedder.linear_{1,2}` <->
  `{timestep,resolution,aspect_ratio}_embedder/linear_{1,2}`; `adaln_single.linear` <->
  `adaln_single_linear`; `caption_projection.linear_{1,2}` <-> the same path;
* `transformer_blocks.{i}.attn{1,2}.{to_q,to_k,to_v}` / `.to_out.0` <->
  `transformer_blocks_{i}/attn{1,2}/{to_q,to_k,to_v,to_out}`; `.ff.net.0.proj` / `.ff.net.2` <->
  `net_0_proj` / `net_2`; `scale_shift_table`s and `proj_out` keep their names;
* Linear `weight` [out, in] <-> `kernel` [in, out].
The non-persistent `pos_embed.pos_embed` buffer is not stored (it is recomputed).

Original PixArt `.pth` checkpoints: `fdistill_jax.convert.pixart_original`. Export back to
diffusers (the transformer of an exported pipeline folder): `to_diffusers_folder`.

Diffusers folders need only safetensors (no torch).
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
from fdistill_jax.models import pixart as pixart_lib

WEIGHTS_NAME = "diffusion_pytorch_model.safetensors"
INDEX_NAME = "diffusion_pytorch_model.safetensors.index.json"
CLASS_NAME = "PixArtTransformer2DModel"
_PREFIX = {"pos_embed_proj": "pos_embed.proj",
           "timestep_embedder": "adaln_single.emb.timestep_embedder",
           "resolution_embedder": "adaln_single.emb.resolution_embedder",
           "aspect_ratio_embedder": "adaln_single.emb.aspect_ratio_embedder",
           "adaln_single_linear": "adaln_single.linear"}
_INNER = {"to_out": "to_out.0", "net_0_proj": "ff.net.0.proj", "net_2": "ff.net.2"}


# ------------------------------------------------------------------------------ Flax <-> diffusers


def abstract_params(module: pixart_lib.PixArtTransformer) -> dict:
  """ShapeDtypeStruct tree of the module's params (no memory, no compute)."""
  p, c = module.patch_size, module.in_channels
  x = jnp.zeros((1, 2 * p, 2 * p, c), jnp.float32)
  ctx = jnp.zeros((1, 1, module.caption_channels or module.cross_attention_dim or 1), jnp.float32)
  cond = pixart_lib.micro_conditions(1, 16 * p, 16 * p) if module.micro_conditioned else None
  init = lambda: module.init(jax.random.PRNGKey(0), x, jnp.zeros((1,)), ctx, None, cond)
  return jax.eval_shape(init)["params"]


def count_params(module: pixart_lib.PixArtTransformer) -> int:
  """Number of trainable scalars (as `sum(p.numel() for p in model.parameters())`)."""
  return int(sum(np.prod(a.shape) for a in jax.tree_util.tree_leaves(abstract_params(module))))


def torch_name(path: tuple[str, ...]) -> str:
  """Flax param path -> diffusers state_dict key."""
  if len(path) == 1:
    return path[0]
  head, *rest = path
  parts = [_PREFIX.get(head, head)]
  m = re.fullmatch(r"transformer_blocks_(\d+)", head)
  if m:
    parts = [f"transformer_blocks.{m.group(1)}"]
  parts += [_INNER.get(p, p) for p in rest[:-1]]
  parts.append({"kernel": "weight"}.get(rest[-1], rest[-1]))
  return ".".join(parts)


def _to_torch(path: tuple[str, ...], a: np.ndarray) -> np.ndarray:
  if path[-1] != "kernel":
    return a
  return a.transpose(3, 2, 0, 1) if a.ndim == 4 else a.T


def _from_torch(path: tuple[str, ...], a: np.ndarray) -> np.ndarray:
  if path[-1] != "kernel":
    return a
  return a.transpose(2, 3, 1, 0) if a.ndim == 4 else a.T


def _expected(module) -> dict[str, tuple[tuple[str, ...], tuple[int, ...]]]:
  """diffusers key -> (flax path, torch shape)."""
  out = {}
  for path, sds in traverse_util.flatten_dict(abstract_params(module)).items():
    shape = tuple(sds.shape)
    if path[-1] == "kernel":
      shape = (shape[3], shape[2], shape[0], shape[1]) if len(shape) == 4 else shape[::-1]
    out[torch_name(path)] = (path, shape)
  return out


def state_dict_to_params(state_dict: Mapping[str, Any], module, *, source: str = "state_dict",
                         param_dtype=np.float32) -> dict:
  """diffusers state_dict (numpy, torch names/layouts) -> Flax params of `module` (numpy).

  Raises StateDictMismatchError listing every missing, unexpected and mis-shaped key with the
  expected shape. The non-persistent `pos_embed.pos_embed` is tolerated and ignored.
  """
  sd = {k: v for k, v in state_dict.items() if k != "pos_embed.pos_embed"}
  flat = match_state_dict(
      sd, _expected(module), to_flax=_from_torch, param_dtype=param_dtype, source=source,
      header=f"{source}: state_dict does not match PixArtTransformer2DModel({_describe(module)}):")
  return traverse_util.unflatten_dict(flat)


def params_to_state_dict(params: Mapping[str, Any], module) -> StateDict:
  """Flax params -> diffusers state_dict (numpy float32, torch names and layouts)."""
  expected = _expected(module)
  flat = traverse_util.flatten_dict(dict(params))
  if flat and next(iter(flat))[0] == "params":
    raise ValueError("pass variables['params'], not the variables dict")
  out: StateDict = {}
  for path, a in flat.items():
    key = torch_name(path)
    if key not in expected:
      raise StateDictMismatchError(f"params entry {'/'.join(path)} ({key}) is not part of "
                                   f"PixArtTransformer2DModel({_describe(module)})")
    out[key] = np.ascontiguousarray(_to_torch(path, np.asarray(jax.device_get(a), np.float32)))
    if out[key].shape != expected[key][1]:
      raise StateDictMismatchError(f"params {'/'.join(path)}: expected torch shape "
                                   f"{list(expected[key][1])}, got {list(out[key].shape)}")
  missing = sorted(set(expected) - set(out))
  if missing:
    raise StateDictMismatchError(f"params lack {len(missing)} entries: {missing[:20]}")
  return out


def _describe(module) -> str:
  return (f"num_layers={module.num_layers}, heads={module.num_attention_heads}x"
          f"{module.attention_head_dim}, caption_channels={module.caption_channels}, "
          f"micro-conditions={module.micro_conditioned}")


# ------------------------------------------------------------------------------------- files


# Bounds on a config.json's sizes, checked before any module is built or traced (a hostile file
# could ask for 20000 layers or 10^6-wide attention). The released PixArt-α/Σ models are far
# inside them (28 layers, 16 x 72 heads, 4096 caption channels).
CONFIG_INT_BOUNDS = {"num_layers": (1, 512), "num_attention_heads": (1, 1024),
                     "attention_head_dim": (1, 1024), "in_channels": (1, 1024),
                     "out_channels": (1, 2048), "sample_size": (1, 16384), "patch_size": (1, 64),
                     "caption_channels": (1, 65536), "cross_attention_dim": (1, 65536)}
MAX_CONFIG_PARAMS = 20 * 10 ** 9  # ~16 · num_layers · width² parameters (80 GB in float32).


def check_config(cfg: Any, source: str) -> None:
  """Raises ValueError naming `source`, the field and its bound if a diffusers PixArt config
  asks for absurd sizes or non-finite scalars."""
  if not isinstance(cfg, Mapping):
    raise ValueError(f"{source}: config is a JSON {type(cfg).__name__}, expected an object")
  for key, (lo, hi) in CONFIG_INT_BOUNDS.items():
    if cfg.get(key) is not None:
      untrusted.check_int(cfg[key], f"field {key!r}", source, lo, hi)
  for key in ("norm_eps", "interpolation_scale"):
    if cfg.get(key) is not None:
      untrusted.check_real(cfg[key], f"field {key!r}", source, positive=True)
  width = (cfg.get("num_attention_heads") or 16) * (cfg.get("attention_head_dim") or 72)
  estimate = 16 * (cfg.get("num_layers") or 28) * width ** 2
  if estimate > MAX_CONFIG_PARAMS:
    raise ValueError(f"{source}: num_layers x (num_attention_heads x attention_head_dim)^2 asks "
                     f"for about {estimate:.3g} parameters, over the bound "
                     f"MAX_CONFIG_PARAMS={MAX_CONFIG_PARAMS:.3g}")


def _read_config(folder: str) -> dict:
  path = epath.Path(folder) / "config.json"
  if not path.is_file():
    raise FileNotFoundError(f"{folder}: no config.json (expected a diffusers "
                            f"{CLASS_NAME} folder)")
  cfg = untrusted.read_json(path)  # Bounded (1 MiB), invalid JSON named.
  check_config(cfg, str(path))
  name = cfg.get("_class_name", CLASS_NAME)
  if name not in (CLASS_NAME, "Transformer2DModel"):
    raise ValueError(f"{path}: _class_name is {name!r}, expected {CLASS_NAME!r}")
  return cfg


def read_diffusers_weights(folder: str | os.PathLike, weights_name: str = WEIGHTS_NAME,
                           index_name: str = INDEX_NAME) -> StateDict:
  """The state_dict of a diffusers model folder: `diffusion_pytorch_model.safetensors`, or the
  shards listed by `diffusion_pytorch_model.safetensors.index.json` (every shard checked);
  local or gs://. Other names (transformers' `model.safetensors`) through the two arguments."""
  folder = os.fspath(folder)
  single, index = epath.Path(folder) / weights_name, epath.Path(folder) / index_name
  if single.is_file():
    return read_state_dict(single)
  if not index.is_file():
    found = (sorted(p.name for p in epath.Path(folder).iterdir())
             if epath.Path(folder).is_dir() else "no such folder")
    raise FileNotFoundError(f"{folder}: neither {weights_name} nor {index_name} (found: {found}); "
                            "only safetensors weights are read")
  return read_sharded_state_dict(folder, index)


def load_diffusers_folder(folder: str | os.PathLike, **options):
  """(module, params) from a diffusers PixArtTransformer2DModel folder (or a pipeline folder
  with a `transformer/` subfolder). `options` go to the module (dtype, remat, feature_blocks)."""
  folder = os.fspath(folder)
  if not (epath.Path(folder) / "config.json").is_file() and \
      (epath.Path(folder) / "transformer" / "config.json").is_file():
    folder = str(epath.Path(folder) / "transformer")
  module = pixart_lib.from_diffusers_config(_read_config(folder), **options)
  single = epath.Path(folder) / WEIGHTS_NAME  # Errors name the weights file (or the index).
  source = str(single if single.is_file() else epath.Path(folder) / INDEX_NAME)
  params = state_dict_to_params(read_diffusers_weights(folder), module, source=source)
  return module, params


def pixart_alpha_config(resolution: int = 512) -> dict:
  """diffusers config of the released PixArt-XL-2 transformers (512, or 1024-MS)."""
  if resolution not in (256, 512, 1024):
    raise ValueError(f"PixArt-α resolution must be 256, 512 or 1024, got {resolution}")
  return {"num_attention_heads": 16, "attention_head_dim": 72, "in_channels": 4,
          "out_channels": 8, "num_layers": 28, "cross_attention_dim": 1152,
          "attention_bias": True, "sample_size": resolution // 8, "patch_size": 2,
          "activation_fn": "gelu-approximate", "num_embeds_ada_norm": 1000,
          "norm_type": "ada_norm_single", "norm_elementwise_affine": False, "norm_eps": 1e-6,
          "caption_channels": 4096, "interpolation_scale": None,
          "use_additional_conditions": None}


# -------------------------------------------------------------------------------- export (§5)


def to_diffusers_folder(params: Mapping[str, Any], config: Mapping[str, Any] | Any,
                        out_dir: str | os.PathLike) -> str:
  """Write params as a diffusers `PixArtTransformer2DModel` folder; returns out_dir.

  config: the diffusers config dict or the PixArtTransformer module. Writes `config.json` and a
  float32 `diffusion_pytorch_model.safetensors` (every parameter; the non-persistent position
  embedding is not stored), which `PixArtTransformer2DModel.from_pretrained(out_dir)` loads with
  no missing or unexpected keys. fdistill_jax.export puts it in a PixArtAlphaPipeline folder
  (`transformer/`) with the FewStepScheduler that samples a student exactly (docs/text_to_image.md
  'Export to a diffusers pipeline'). Channels 4..7 (learned sigma) are written as they are; the
  pipeline drops them.
  """
  module = config if isinstance(config, pixart_lib.PixArtTransformer) else \
      pixart_lib.from_diffusers_config(config)
  sd = params_to_state_dict(params, module)
  out_dir = os.fspath(out_dir)
  cfg = {"_class_name": CLASS_NAME, "_diffusers_version": diffusers_version(),
         **module.diffusers_config()}
  fileio.write_text(epath.Path(out_dir) / "config.json", json.dumps(cfg, indent=2, sort_keys=True))
  fileio.save_safetensors(epath.Path(out_dir) / WEIGHTS_NAME, sd, metadata={"format": "pt"})
  return out_dir


def diffusers_version() -> str:
  try:
    from importlib.metadata import version  # pylint: disable=import-outside-toplevel
    return version("diffusers")
  except Exception:  # Not installed: the version the format was checked against.
    return "0.42.1"
