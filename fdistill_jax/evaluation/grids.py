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


def by_label(x: np.ndarray, num_labels: int, cols: int = 8) -> np.ndarray:
  """Samples x [N, H, W, C] drawn with labels i mod num_labels -> [num_labels, cols, H, W, C]
  (row c holds the first `cols` samples of label c; needs N ≥ num_labels · cols)."""
  x = np.asarray(x)
  if len(x) < num_labels * cols:
    raise ValueError(f"by_label: {len(x)} samples < {num_labels} labels × {cols} columns")
  return np.stack([x[c::num_labels][:cols] for c in range(num_labels)])


def save_labelled_grid(blocks: list[tuple[str, np.ndarray]], row_labels: list[str], path: str,
                       upscale: int = 4) -> str:
  """Side-by-side grids, one row per label: blocks = [(title, images [rows, cols, H, W, C] in
  [-1, 1])], each with len(row_labels) rows (e.g. the student and the teacher on the same noise
  and labels). Row labels on the left, block titles on top."""
  import PIL.ImageDraw
  tiles = [make_grid(x.reshape((-1,) + x.shape[2:]), ncol=x.shape[1]) for _, x in blocks]
  for (title, x) in blocks:
    if x.shape[0] != len(row_labels):
      raise ValueError(f"block {title!r} has {x.shape[0]} rows for {len(row_labels)} row labels")
  tiles = [np.repeat(np.repeat(t, upscale, 0), upscale, 1) for t in tiles]
  gap, left, top = 3 * upscale, 8 * max(len(s) for s in row_labels) + 6, 16
  h = max(t.shape[0] for t in tiles)
  w = left + sum(t.shape[1] for t in tiles) + gap * (len(tiles) - 1)
  mode = "L" if tiles[0].shape[-1] == 1 else "RGB"
  canvas = PIL.Image.new(mode, (w, h + top), 255 if mode == "L" else (255, 255, 255))
  draw = PIL.ImageDraw.Draw(canvas)
  x0 = left
  for (title, _), t in zip(blocks, tiles):
    canvas.paste(PIL.Image.fromarray(t[..., 0] if t.shape[-1] == 1 else t), (x0, top))
    draw.text((x0 + 2, 2), title, fill="black")
    x0 += t.shape[1] + gap
  row_h = (h - upscale) / len(row_labels)
  for i, label in enumerate(row_labels):
    draw.text((3, top + int((i + 0.5) * row_h) - 5), label, fill="black")
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  canvas.save(path)
  return path


def save_captioned_grid(images, captions: list[str], path: str, ncol: int = 8, upscale: int = 1,
                        title: str = "", lines: int = 3) -> str:
  """A PNG grid of images [N, H, W, C] in [-1, 1] with captions[i] written under image i
  (wrapped to the tile width, at most `lines` lines, the last cut with '…')."""
  import textwrap

  import PIL.ImageDraw
  x = to_uint8(images)
  n, h, w, c = x.shape
  if len(captions) != n:
    raise ValueError(f"save_captioned_grid: {len(captions)} captions for {n} images")
  ih, iw, pad, line_h = h * upscale, w * upscale, 4, 11
  tw = max(iw, 120)
  chars = max(8, tw // 6)  # PIL's default bitmap font is ~6 px per character.
  th = ih + lines * line_h + 4
  top = 16 if title else 0
  ncol = max(1, min(ncol, n))
  nrow = int(math.ceil(n / ncol))
  mode = "L" if c == 1 else "RGB"
  white = 255 if mode == "L" else (255, 255, 255)
  canvas = PIL.Image.new(mode, (ncol * (tw + pad) + pad, top + nrow * (th + pad) + pad), white)
  draw = PIL.ImageDraw.Draw(canvas)
  if title:
    draw.text((pad, 2), title, fill="black")
  for i in range(n):
    r, q = divmod(i, ncol)
    x0, y0 = pad + q * (tw + pad), top + pad + r * (th + pad)
    img = PIL.Image.fromarray(x[i, ..., 0] if c == 1 else x[i])
    if upscale > 1:
      img = img.resize((iw, ih), PIL.Image.NEAREST)
    canvas.paste(img, (x0 + (tw - iw) // 2, y0))
    wrapped = textwrap.wrap(captions[i], chars) or [""]
    if len(wrapped) > lines:
      wrapped = wrapped[:lines]
      wrapped[-1] = wrapped[-1][:chars - 1] + "…"
    for k, line in enumerate(wrapped):
      draw.text((x0, y0 + ih + 2 + k * line_h), line, fill="black")
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  canvas.save(path)
  return path
