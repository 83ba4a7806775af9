"""Sample grids and numbered PNGs (images in [-1, 1], NHWC), quantised as EDM's generate.py."""
from __future__ import annotations

import math
import os

import numpy as np
import PIL.Image


def to_uint8(images) -> np.ndarray:
  """[-1, 1] float NHWC -> uint8 NHWC, as EDM saves PNGs: clip(x·127.5 + 128, 0, 255)."""
  x = np.asarray(images, np.float32)
  return np.clip(x * 127.5 + 128, 0, 255).astype(np.uint8)


def make_grid(images, ncol: int | None = None, pad: int = 1) -> np.ndarray:
  """Tiles N images [N, H, W, C] into one uint8 [rows·(H+pad), ncol·(W+pad), C] array."""
  x = to_uint8(images)
  n, h, w, c = x.shape
  ncol = ncol or int(math.ceil(math.sqrt(n)))
  nrow = int(math.ceil(n / ncol))
  grid = np.zeros((nrow * (h + pad) + pad, ncol * (w + pad) + pad, c), np.uint8)
  for i in range(n):
    r, q = divmod(i, ncol)
    grid[pad + r * (h + pad):pad + r * (h + pad) + h, pad + q * (w + pad):pad + q * (w + pad) + w] = x[i]
  return grid


def save_grid(images, path: str, ncol: int | None = None, upscale: int = 1) -> str:
  """Writes a PNG grid of `images`; `upscale` enlarges tiny images (nearest) for viewing."""
  g = make_grid(images, ncol)
  img = PIL.Image.fromarray(g[..., 0] if g.shape[-1] == 1 else g)
  if upscale > 1:
    img = img.resize((img.width * upscale, img.height * upscale), PIL.Image.NEAREST)
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  img.save(path)
  return path


def save_numbered(images, folder: str, first_index: int = 0) -> list[str]:
  """One PNG per image, named %06d.png from first_index (the layout external FID tools read)."""
  os.makedirs(folder, exist_ok=True)
  out = []
  for i, im in enumerate(to_uint8(images)):
    p = os.path.join(folder, f"{first_index + i:06d}.png")
    PIL.Image.fromarray(im[..., 0] if im.shape[-1] == 1 else im).save(p)
    out.append(p)
  return out
