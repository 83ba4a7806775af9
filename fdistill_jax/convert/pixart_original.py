"""Original PixArt-α checkpoints (PixArt-alpha/PixArt-alpha `PixArt.py` / `PixArtMS.py` names).

The original names map as diffusers' conversion script does: x_embedder -> pos_embed,
y_embedder.y_proj.fc{1,2} -> caption_projection.linear_{1,2}, t_embedder.mlp.{0,2} ->
timestep_embedder.linear_{1,2}, t_block.1 -> adaln_single.linear, csize_embedder / ar_embedder
-> resolution / aspect_ratio_embedder, blocks.i.attn.qkv -> to_q|to_k|to_v (3 chunks of the output
dim), blocks.i.cross_attn.q_linear -> attn2.to_q, .kv_linear -> to_k|to_v (2 chunks),
{attn,cross_attn}.proj -> to_out.0, mlp.fc{1,2} -> ff.net.0.proj / ff.net.2, final_layer.linear ->
proj_out, final_layer.scale_shift_table -> scale_shift_table. The stored `pos_embed` constant is
dropped; the learned null caption `y_embedder.y_embedding` [L, caption_channels] (which diffusers
does not use) is returned separately.

`.pth` files are read with torch.load(weights_only=True) (torch imported lazily, no pickle code
runs); `.safetensors` with original names need no torch.
"""
from __future__ import annotations

import os
import re
from typing import Any, Mapping

import numpy as np
from etils import epath

from fdistill_jax.convert.pixart import check_config, state_dict_to_params
from fdistill_jax.convert.state_dict_io import (StateDict, StateDictMismatchError,
                                                read_state_dict, read_torch_file,
                                                tensors_to_numpy)
from fdistill_jax.models import pixart as pixart_lib
from fdistill_jax.untrusted import check_float_arrays

_ORIG_SIMPLE = [  # (original prefix, diffusers prefix); weight and bias alike.
    ("x_embedder.proj", "pos_embed.proj"),
    ("y_embedder.y_proj.fc1", "caption_projection.linear_1"),
    ("y_embedder.y_proj.fc2", "caption_projection.linear_2"),
    ("t_embedder.mlp.0", "adaln_single.emb.timestep_embedder.linear_1"),
    ("t_embedder.mlp.2", "adaln_single.emb.timestep_embedder.linear_2"),
    ("csize_embedder.mlp.0", "adaln_single.emb.resolution_embedder.linear_1"),
    ("csize_embedder.mlp.2", "adaln_single.emb.resolution_embedder.linear_2"),
    ("ar_embedder.mlp.0", "adaln_single.emb.aspect_ratio_embedder.linear_1"),
    ("ar_embedder.mlp.2", "adaln_single.emb.aspect_ratio_embedder.linear_2"),
    ("t_block.1", "adaln_single.linear"),
    ("final_layer.linear", "proj_out"),
    ("final_layer.scale_shift_table", "scale_shift_table"),
]
_ORIG_BLOCK = [("scale_shift_table", "scale_shift_table"), ("attn.proj", "attn1.to_out.0"),
               ("cross_attn.q_linear", "attn2.to_q"), ("cross_attn.proj", "attn2.to_out.0"),
               ("mlp.fc1", "ff.net.0.proj"), ("mlp.fc2", "ff.net.2")]
_ORIG_FUSED = [("attn.qkv", "attn1", ("to_q", "to_k", "to_v")),
               ("cross_attn.kv_linear", "attn2", ("to_k", "to_v"))]
ORIGINAL_DROPPED = ("pos_embed",)   # constant sin-cos table stored by the original model
NULL_CAPTION_KEY = "y_embedder.y_embedding"


def _rename(key: str, table) -> str | None:
  for a, b in table:
    if key == a or key.startswith(a + "."):
      return b + key[len(a):]
  return None


def original_to_diffusers(state_dict: Mapping[str, Any]) -> tuple[StateDict, dict]:
  """Original PixArt state_dict -> (diffusers state_dict, extras).

  Fused `attn.qkv` / `cross_attn.kv_linear` weights and biases are split into equal chunks of
  the output dim (a size not divisible by 3 / 2 is reported). extras holds the learned null
  caption `y_embedder.y_embedding` if present. Unknown keys are kept under their original
  names so that the state_dict check reports them as unexpected.
  """
  out: StateDict = {}
  extras: dict = {}
  for key, a in state_dict.items():
    a = np.asarray(a)
    if key in ORIGINAL_DROPPED:
      continue
    if key == NULL_CAPTION_KEY:
      extras["null_caption"] = a
      continue
    new = _rename(key, _ORIG_SIMPLE)
    m = re.fullmatch(r"blocks\.(\d+)\.(.+)", key)
    if new is None and m:
      i, rest = m.groups()
      sub = _rename(rest, _ORIG_BLOCK)
      if sub is not None:
        new = f"transformer_blocks.{i}.{sub}"
      else:
        for fused, attn, names in _ORIG_FUSED:
          leaf = rest[len(fused) + 1:] if rest.startswith(fused + ".") else None
          if leaf in ("weight", "bias"):
            if a.shape[0] % len(names):
              raise StateDictMismatchError(
                  f"{key}: shape {list(a.shape)}, dim 0 is not divisible into "
                  f"{len(names)} chunks ({'|'.join(names)})")
            for name, chunk in zip(names, np.split(a, len(names), axis=0)):
              out[f"transformer_blocks.{i}.{attn}.{name}.{leaf}"] = chunk
            new = ""
            break
    if new == "":
      continue
    out[new if new is not None else key] = a
  return out, extras


def diffusers_to_original(state_dict: Mapping[str, Any]) -> StateDict:
  """diffusers state_dict -> original PixArt names (fusing q|k|v and k|v); inverse of the above."""
  out: StateDict = {}
  inv_simple = [(b, a) for a, b in _ORIG_SIMPLE]
  inv_block = [(b, a) for a, b in _ORIG_BLOCK]
  fused: dict[str, dict[str, np.ndarray]] = {}
  for key, a in state_dict.items():
    a = np.asarray(a)
    m = re.fullmatch(r"transformer_blocks\.(\d+)\.(.+)", key)
    if m:
      i, rest = m.groups()
      sub = _rename(rest, inv_block)
      if sub is not None:
        out[f"blocks.{i}.{sub}"] = a
        continue
      fm = re.fullmatch(r"(attn[12])\.(to_[qkv])\.(weight|bias)", rest)
      if fm:
        fused.setdefault(f"{i}.{fm.group(1)}.{fm.group(3)}", {})[fm.group(2)] = a
        continue
    new = _rename(key, inv_simple)
    if new is None:
      raise KeyError(f"diffusers key {key!r} has no original PixArt name")
    out[new] = a
  for tag, parts in fused.items():
    i, attn, leaf = tag.split(".")
    if attn == "attn1":
      out[f"blocks.{i}.attn.qkv.{leaf}"] = np.concatenate(
          [parts["to_q"], parts["to_k"], parts["to_v"]], axis=0)
    else:   # attn2.to_q was renamed to cross_attn.q_linear above.
      out[f"blocks.{i}.cross_attn.kv_linear.{leaf}"] = np.concatenate(
          [parts["to_k"], parts["to_v"]], axis=0)
  return out



# ------------------------------------------------------------------------------------- files


def read_original_checkpoint(path: str | os.PathLike, *, ema: bool = False) -> StateDict:
  """Original PixArt `.pth` (`{'state_dict': ..., 'state_dict_ema'?: ...}` or a bare state_dict)
  via torch.load(weights_only=True), or `.safetensors`; numpy arrays by original name."""
  path = os.fspath(path)
  if path.lower().endswith(".safetensors"):
    out = read_state_dict(path)
    check_float_arrays(out, path)
    return out
  if not epath.Path(path).is_file():  # Local or gs://.
    raise FileNotFoundError(f"no such file: {path}")
  # The same checks as EDM's .pt files: storages must fit in the file before torch.load runs,
  # stride-0/oversized views and copies beyond the file's size are refused before allocating.
  torch, obj, budget = read_torch_file(path)
  if not isinstance(obj, Mapping):
    raise ValueError(f"{path}: expected a dict, got {type(obj).__name__}")
  key = "state_dict_ema" if ema else "state_dict"
  if key in obj:
    obj = obj[key]
  elif ema or "state_dict" in obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
    raise ValueError(f"{path}: no {key!r} entry (top-level keys: {sorted(map(str, obj))[:10]})")
  if not isinstance(obj, Mapping):
    raise ValueError(f"{path}: {key!r} is a {type(obj).__name__}, not a state_dict")
  out = tensors_to_numpy(torch, obj, path, budget)
  check_float_arrays(out, path)  # Weights, the null caption and the stored pos_embed alike.
  return out


def load_original_checkpoint(path: str | os.PathLike, config: Mapping[str, Any], *,
                             ema: bool = False, **options):
  """(module, params, extras) from an original PixArt checkpoint and a diffusers-style config
  (e.g. `pixart_alpha_config(512)`). extras: {'null_caption': [L, caption_channels]} if stored."""
  check_config(config, f"config for {os.fspath(path)}")
  module = pixart_lib.from_diffusers_config(config, **options)
  sd, extras = original_to_diffusers(read_original_checkpoint(path, ema=ema))
  params = state_dict_to_params(sd, module, source=f"{os.fspath(path)} (original PixArt names)")
  return module, params, extras
