"""T5 encoder weights: transformers `T5EncoderModel` folders <-> `models.t5` params.

Name mapping (transformers state_dict key <-> Flax param path):
* `shared.weight` [V, D] <-> shared/embedding (the same layout); `encoder.embed_tokens.weight`
  is the same tensor (tied): accepted on import when equal, never written;
* `encoder.block.{i}.layer.0.SelfAttention.{q,k,v,o}.weight` <->
  `block_{i}/layer_0_SelfAttention/{q,k,v,o}/kernel`; block 0's
  `…SelfAttention.relative_attention_bias.weight` [buckets, heads] <-> `…/embedding`;
* `encoder.block.{i}.layer.{0,1}.layer_norm.weight` <-> `block_{i}/layer_{0,1}_layer_norm/weight`;
  `encoder.block.{i}.layer.1.DenseReluDense.{wi_0,wi_1,wo | wi,wo}.weight` <->
  `block_{i}/layer_1_DenseReluDense/…/kernel`; `encoder.final_layer_norm.weight` likewise;
* Linear `weight` [out, in] <-> `kernel` [in, out].
Folders need only safetensors and json (no torch, no transformers): `load_folder` reads
config.json + model.safetensors (or a sharded index, or a PixArt pipeline's text_encoder/);
`write_folder` writes a folder that `transformers.T5EncoderModel.from_pretrained` loads with
no missing or unexpected keys, with the byte tokenizer beside it when max_length is given.
"""
from __future__ import annotations

import os
import re
from typing import Any, Mapping

import jax
import numpy as np
from etils import epath
from flax import traverse_util

from fdistill_jax import fileio, untrusted
from fdistill_jax.convert.pixart import read_diffusers_weights
from fdistill_jax.convert.state_dict_io import StateDict, StateDictMismatchError, match_state_dict
from fdistill_jax.data import byte_tokenizer
from fdistill_jax.models import t5 as t5_lib

WEIGHTS_NAME = "model.safetensors"
INDEX_NAME = "model.safetensors.index.json"
TIED = "encoder.embed_tokens.weight"


def torch_name(path: tuple[str, ...]) -> str:
  """Flax param path -> transformers state_dict key."""
  if path[0] == "shared":
    return "shared.weight"
  parts = ["encoder"]
  for p in path[:-1]:  # block_3 -> block.3; layer_0_SelfAttention -> layer.0.SelfAttention
    m = re.fullmatch(r"(block|layer)_(\d+)(?:_(.+))?", p)
    parts += [g for g in m.groups() if g] if m else [p]
  return ".".join(parts + ["weight"])


def _to_torch(path: tuple[str, ...], a: np.ndarray) -> np.ndarray:
  return a.T if path[-1] == "kernel" else a


def abstract_params(config: t5_lib.T5Config) -> dict:
  """ShapeDtypeStruct tree of the encoder's params (no memory, no compute)."""
  return jax.eval_shape(lambda: t5_lib.init_params(config, jax.random.PRNGKey(0)))


def _expected(config: t5_lib.T5Config) -> dict[str, tuple[tuple[str, ...], tuple[int, ...]]]:
  """transformers key -> (Flax path, torch shape)."""
  out = {}
  for path, sds in traverse_util.flatten_dict(abstract_params(config)).items():
    shape = tuple(sds.shape)
    out[torch_name(path)] = (path, shape[::-1] if path[-1] == "kernel" else shape)
  return out


def state_dict_to_params(state_dict: Mapping[str, Any], config: t5_lib.T5Config, *,
                         source: str = "state_dict") -> dict:
  """transformers T5EncoderModel state_dict (numpy) -> Flax params (numpy float32). Raises
  StateDictMismatchError listing every missing, unexpected and mis-shaped key."""
  sd = dict(state_dict)
  if TIED in sd:  # Tied to shared.weight: one tensor, possibly stored under both names.
    tied = np.asarray(sd.pop(TIED))
    if "shared.weight" not in sd:
      sd["shared.weight"] = tied
    elif not np.array_equal(tied, np.asarray(sd["shared.weight"])):
      raise StateDictMismatchError(f"{source}: {TIED} differs from shared.weight; "
                                   "T5EncoderModel ties them")
  flat = match_state_dict(
      sd, _expected(config), to_flax=_to_torch, source=source,  # A transpose is self-inverse.
      header=f"{source}: state_dict does not match T5EncoderModel({_describe(config)}):")
  return traverse_util.unflatten_dict(flat)


def params_to_state_dict(params: Mapping[str, Any], config: t5_lib.T5Config) -> StateDict:
  """Flax params -> transformers state_dict (numpy float32, torch names and layouts)."""
  expected = _expected(config)
  flat = {torch_name(p): (p, a) for p, a in traverse_util.flatten_dict(dict(params)).items()}
  if set(flat) != set(expected):
    raise StateDictMismatchError(
        f"params do not match T5EncoderModel({_describe(config)}): missing "
        f"{sorted(set(expected) - set(flat))[:20]}, unexpected {sorted(set(flat) - set(expected))[:20]}")
  out: StateDict = {}
  for key, (path, a) in flat.items():
    out[key] = np.ascontiguousarray(_to_torch(path, np.asarray(jax.device_get(a), np.float32)))
    if out[key].shape != expected[key][1]:
      raise StateDictMismatchError(f"params {'/'.join(path)}: expected torch shape "
                                   f"{list(expected[key][1])}, got {list(out[key].shape)}")
  return out


def _describe(c: t5_lib.T5Config) -> str:
  return (f"vocab={c.vocab_size}, d_model={c.d_model}, layers={c.num_layers}, heads={c.num_heads}"
          f"x{c.d_kv}, d_ff={c.d_ff}, {c.feed_forward_proj}")


# ------------------------------------------------------------------------------------- files


def encoder_folder(folder: str) -> str:
  """The T5 folder itself, or a PixArt pipeline's text_encoder/."""
  sub = epath.Path(folder) / "text_encoder"
  if not (epath.Path(folder) / "config.json").is_file() and (sub / "config.json").is_file():
    return str(sub)
  return folder


def read_config(folder: str) -> t5_lib.T5Config:
  path = epath.Path(folder) / "config.json"
  if not path.is_file():
    raise FileNotFoundError(f"{folder}: no config.json (expected a transformers T5EncoderModel "
                            "folder)")
  cfg = untrusted.read_json(path)  # Bounded (1 MiB), invalid JSON named.
  if not isinstance(cfg, dict):
    raise ValueError(f"{path}: a JSON {type(cfg).__name__}, expected an object")
  if cfg.get("model_type", "t5") != "t5":
    raise ValueError(f"{path}: model_type is {cfg.get('model_type')!r}, expected 't5'")
  check_config(cfg, str(path))
  return t5_lib.T5Config.from_dict(cfg)


# Bounds on a config.json's sizes, checked before any module is traced; T5-XXL's encoder (4.7B
# parameters: d_model 4096, 24 layers, 64 heads, d_ff 10240) is far inside them.
CONFIG_INT_BOUNDS = {"vocab_size": (1, 1 << 20), "d_model": (1, 65536), "d_kv": (1, 4096),
                     "d_ff": (1, 1 << 18), "num_layers": (1, 512), "num_heads": (1, 1024),
                     "relative_attention_num_buckets": (1, 4096),
                     "relative_attention_max_distance": (1, 1 << 20)}
MAX_CONFIG_PARAMS = 20 * 10 ** 9


def check_config(cfg: Mapping[str, Any], source: str) -> None:
  """Raises ValueError naming `source`, the field and its bound for absurd T5 sizes."""
  for key, (lo, hi) in CONFIG_INT_BOUNDS.items():
    if key in cfg:
      untrusted.check_int(cfg[key], f"field {key!r}", source, lo, hi)
  if "layer_norm_epsilon" in cfg:
    untrusted.check_real(cfg["layer_norm_epsilon"], "field 'layer_norm_epsilon'", source,
                         positive=True)
  c = t5_lib.T5Config.from_dict(cfg)
  estimate = c.vocab_size * c.d_model + c.num_layers * (4 * c.d_model * c.num_heads * c.d_kv
                                                        + 3 * c.d_model * c.d_ff)
  if estimate > MAX_CONFIG_PARAMS:
    raise ValueError(f"{source}: the sizes ask for about {estimate:.3g} parameters, over the "
                     f"bound MAX_CONFIG_PARAMS={MAX_CONFIG_PARAMS:.3g}")


def load_folder(folder: str | os.PathLike) -> tuple[t5_lib.T5Config, dict]:
  """(config, params) of a transformers T5EncoderModel folder (single or sharded safetensors;
  local or gs://), or of a PixArt pipeline folder's text_encoder/."""
  folder = encoder_folder(os.fspath(folder))
  config = read_config(folder)
  sd = read_diffusers_weights(folder, WEIGHTS_NAME, INDEX_NAME)
  return config, state_dict_to_params(sd, config, source=folder)


def write_folder(params: Mapping[str, Any], config: t5_lib.T5Config, out_dir: str | os.PathLike,
                 max_length: int | None = None) -> str:
  """Writes config.json and model.safetensors (float32) of a transformers T5EncoderModel, and
  with max_length the byte tokenizer (data/byte_tokenizer.py, model_max_length = max_length),
  so that tools/encode_prompts can encode prompts with the folder alone; returns out_dir."""
  out_dir = os.fspath(out_dir)
  sd = params_to_state_dict(params, config)
  fileio.write_json(epath.Path(out_dir) / "config.json", config.to_transformers(), indent=2)
  fileio.save_safetensors(epath.Path(out_dir) / WEIGHTS_NAME, sd, metadata={"format": "pt"})
  if max_length is not None:
    if config.vocab_size < byte_tokenizer.VOCAB_SIZE:
      raise ValueError(f"the byte tokenizer needs vocab_size >= {byte_tokenizer.VOCAB_SIZE}, "
                       f"the encoder has {config.vocab_size}")
    byte_tokenizer.write_tokenizer(out_dir, max_length)
  return out_dir
