"""Start a rectified-flow DiT from a trained ε-prediction PixArt transformer: every weight is kept
except the output projection, cut to the prediction channels (the learned-σ half is dropped).

  python -m fdistill_jax.tools.flow_from_eps --src=fdistill_jax/assets/digits_t2i_text_teacher \\
      --out=runs/digits_t2i_flow_init

The body (patch embedding, text cross-attention, blocks) already draws digits from prompts; the
flow teacher of configs/teachers/digits_t2i_flow.py then only has to learn the new input scale
x/(1+σ), the time t = 1000·σ/(1+σ) and the velocity output ε − x0 (at the start it reads its ε̂
as the velocity, so x̂0 = x_s − s·ε̂ = (1−s)·x0 for an exact ε̂: a shrunk image, not noise).
proj_out maps each token to p·p·C_out values laid out (p, p, C_out); the kept columns are those of
the first C = in_channels channels of every (p, p) position. Writes a diffusers
PixArtTransformer2DModel folder (out_channels = in_channels) that the teacher config reads.
"""
from __future__ import annotations

import argparse
from typing import Sequence

import jax
import numpy as np
from flax import traverse_util

from fdistill_jax.convert import pixart as conv
from fdistill_jax.models import pixart as pixart_lib


def prediction_columns(patch_size: int, out_channels: int, keep: int) -> np.ndarray:
  """Indices into proj_out's p·p·out_channels outputs of the first `keep` channels of every
  patch position (the (p, p, C_out) layout of models/pixart.py's unpatchify)."""
  idx = np.arange(patch_size * patch_size * out_channels).reshape(-1, out_channels)
  return idx[:, :keep].reshape(-1)


def flow_from_eps(src: str, out: str) -> dict:
  """Writes the folder; returns {'kept': n tensors copied whole, 'cut': proj_out's new shapes}."""
  module, params = conv.load_diffusers_folder(src)
  c, p = module.in_channels, module.patch_size
  if module.out_dim != 2 * c:
    raise ValueError(f"{src}: expected an ε-prediction transformer with learned σ (out_channels "
                     f"= 2·in_channels = {2 * c}), got out_channels={module.out_dim}")
  new_module = pixart_lib.from_diffusers_config({**module.diffusers_config(), "out_channels": c})
  cols = prediction_columns(p, module.out_dim, c)
  flat = traverse_util.flatten_dict(jax.device_get(params))
  result, cut = {}, {}
  for path, value in flat.items():
    value = np.asarray(value, np.float32)
    if path[0] == "proj_out":
      value = value[..., cols]
      cut["/".join(path)] = value.shape
    result[path] = value
  want = traverse_util.flatten_dict(conv.abstract_params(new_module))
  for path, spec in want.items():
    if result[path].shape != tuple(spec.shape):
      raise ValueError(f"{src}: {'/'.join(path)} has shape {result[path].shape}; the flow "
                       f"transformer expects {tuple(spec.shape)}")
  conv.to_diffusers_folder(traverse_util.unflatten_dict(result), new_module, out)
  return {"kept": len(result) - len(cut), "cut": cut}


def main(argv: Sequence[str] | None = None) -> None:
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--src", required=True, help="diffusers PixArtTransformer2DModel folder (ε)")
  ap.add_argument("--out", required=True, help="folder to write")
  a = ap.parse_args(argv)
  r = flow_from_eps(a.src, a.out)
  print(f"{a.out}: {r['kept']} tensors kept from {a.src}, cut {r['cut']}")


if __name__ == "__main__":
  main()
