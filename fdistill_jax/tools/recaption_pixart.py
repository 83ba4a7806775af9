"""Start a PixArt transformer for a new text encoder from a trained one: every weight is kept
except the caption projection's first layer, which is re-initialised for the new encoder's width.

  python -m fdistill_jax.tools.recaption_pixart --src=fdistill_jax/assets/digits_t2i_teacher \\
      --caption_channels=64 --out=runs/digits_t2i_text_init [--seed=0]

PixArt-α itself starts its text-to-image training from a class-conditional DiT; this is the same
move in miniature: the digits teacher trained on cached 32-d embeddings already draws digits, so
a teacher for the 64-d byte-level T5 (configs/teachers/digits_t2i_text.py) only has to learn to
read the new states (caption_projection/linear_1: [caption_channels, D] -> [64, D], drawn as
diffusers' nn.Linear default, U(±1/√fan_in), bias 0 as our Flax init). Writes a diffusers
PixArtTransformer2DModel folder that the teacher config reads as teacher.checkpoint.
"""
from __future__ import annotations

import argparse
import os
from typing import Sequence

import jax
import numpy as np
from flax import traverse_util

from fdistill_jax.convert import pixart as conv
from fdistill_jax.models import pixart as pixart_lib

NEW_LAYER = ("caption_projection", "linear_1")


def recaption(src: str, caption_channels: int, out: str, seed: int = 0) -> dict:
  """Writes the folder; returns {'kept': n leaves copied, 'new': [(path, shape)]}."""
  module, params = conv.load_diffusers_folder(src)
  old = module.diffusers_config()
  if not old.get("caption_channels"):
    raise ValueError(f"{src}: the transformer has no caption projection (caption_channels unset)")
  new_module = pixart_lib.from_diffusers_config({**old, "caption_channels": int(caption_channels)})
  leaves = traverse_util.flatten_dict(jax.device_get(params))
  layer = traverse_util.flatten_dict(conv.abstract_params(new_module))
  rng = np.random.default_rng(seed)
  new, result = [], {}
  for path, spec in layer.items():
    if path[:2] == NEW_LAYER:
      fan_in = int(caption_channels)
      value = (rng.uniform(-1, 1, spec.shape) / np.sqrt(fan_in) if path[-1] == "kernel"
               else np.zeros(spec.shape))
      new.append(("/".join(path), tuple(spec.shape)))
    else:
      value = leaves[path]
      if value.shape != spec.shape:
        raise ValueError(f"{src}: {'/'.join(path)} has shape {value.shape}, the new transformer "
                         f"expects {tuple(spec.shape)}")
    result[path] = np.asarray(value, np.float32)
  conv.to_diffusers_folder(traverse_util.unflatten_dict(result), new_module, out)
  return {"kept": len(result) - len(new), "new": new}


def main(argv: Sequence[str] | None = None) -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--src", required=True, help="diffusers PixArtTransformer2DModel folder")
  p.add_argument("--caption_channels", type=int, required=True, help="the new encoder's width")
  p.add_argument("--out", required=True, help="folder to write")
  p.add_argument("--seed", type=int, default=0)
  a = p.parse_args(argv)
  r = recaption(a.src, a.caption_channels, a.out, a.seed)
  print(f"{a.out}: {r['kept']} tensors kept from {a.src}, re-initialised {r['new']}")


if __name__ == "__main__":
  main()
