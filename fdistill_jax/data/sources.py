"""Random-access image sources: the protocol the input pipeline reads records from, and the
in-memory sources.

Every source has `len(source)`, `source[i] -> {"image": uint8 [H, W, C], "label": int}` and two
attributes the pipeline needs before reading anything: `image_shape` (H, W, C) and `label_dim`
(number of classes; 0 for an unconditional source, whose records carry label -1).

Here:
* `ImageSource`: the protocol.
* `ArraySource`: in-memory arrays (also the tfds fallback for TFRecord-prepared data), and
  `load_npz_arrays` for an `.npz` of them (no pickles, declared sizes checked first).
* `DigitsSource`: scikit-learn's packaged handwritten digits (1,797 8x8 images), resized; works
  offline and is the project's default dataset.

Elsewhere in this package: `image_folder.ImageFolderSource` (an EDM `dataset_tool.py` zip or a
folder of images) and `tfds_reader.tfds_source` (a TFDS dataset prepared in the user's TFDS data
directory). `pipeline.make_source` picks one from the config.

Sources are cheap to pickle (zip handles are opened lazily per process) so grain workers can use
them.
"""
from __future__ import annotations

import os
import zipfile
import zlib
from typing import Any, Protocol

import numpy as np
import PIL.Image
from etils import epath

from fdistill_jax import untrusted

DIGITS_SPLITS = ("train", "test", "all")
# Digits split: a fixed permutation (seed 0) of the 1,797 images; the last 297 are held out.
DIGITS_NUM_TRAIN = 1500
DIGITS_SPLIT_SEED = 0


class ImageSource(Protocol):
  """What the pipeline needs from a source."""
  image_shape: tuple[int, int, int]
  label_dim: int

  def __len__(self) -> int:
    ...

  def __getitem__(self, index: int) -> dict[str, Any]:
    ...


def _check_index(index: int, length: int) -> int:
  index = int(index)
  if not -length <= index < length:
    raise IndexError(f"record index {index} out of range for a source of {length} records")
  return index % length


class ArraySource:
  """In-memory images.

  Args:
    images: uint8 [N, H, W, C] (or [N, H, W], given one channel).
    labels: int [N] class indices, or None for an unconditional source.
    label_dim: number of classes; defaults to max(labels) + 1 (0 when labels is None).
    name: short name used in repr (and so in the pipeline's saved state).
  """

  def __init__(self, images: np.ndarray, labels: np.ndarray | None = None,
               label_dim: int | None = None, name: str = "arrays"):
    images = np.asarray(images)
    if images.ndim == 3:
      images = images[..., None]
    if images.ndim != 4 or images.dtype != np.uint8:
      raise ValueError(f"ArraySource: images must be uint8 [N, H, W, C] (or [N, H, W]); got "
                       f"dtype {images.dtype}, shape {images.shape}")
    if images.shape[-1] not in (1, 3):
      raise ValueError(f"ArraySource: expected 1 or 3 channels (NHWC), got shape {images.shape}")
    if labels is None:
      if label_dim:
        raise ValueError(f"ArraySource: label_dim={label_dim} given without labels")
      label_dim = 0
    else:
      labels = np.asarray(labels)
      if labels.shape != (images.shape[0],) or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"ArraySource: labels must be int [N={images.shape[0]}]; got dtype "
                         f"{labels.dtype}, shape {labels.shape}")
      if labels.size and labels.min() < 0:
        raise ValueError(f"ArraySource: labels must be >= 0, found {labels.min()}")
      inferred = int(labels.max()) + 1 if labels.size else 0
      label_dim = inferred if label_dim is None else int(label_dim)
      if inferred > label_dim:
        raise ValueError(f"ArraySource: label {inferred - 1} does not fit label_dim={label_dim}")
    self.images = images
    self.labels = labels
    self.label_dim = int(label_dim)
    self.image_shape = tuple(int(s) for s in images.shape[1:])
    self.name = name

  def __len__(self) -> int:
    return self.images.shape[0]

  def __getitem__(self, index: int) -> dict[str, Any]:
    index = _check_index(index, len(self))
    label = -1 if self.labels is None else int(self.labels[index])
    return {"image": self.images[index], "label": label}

  def __repr__(self) -> str:
    return f"ArraySource({self.name}, n={len(self)}, shape={self.image_shape}, " \
           f"label_dim={self.label_dim})"


NPZ_MAX_BYTES = untrusted.NPZ_MAX_BYTES  # Largest array data an .npz may declare (all members).


def _check_npz_sizes(path: str, max_bytes: int) -> None:
  """Refuses an .npz whose members (whatever their names) declare more data than they hold, or
  more than max_bytes in all, before numpy allocates the declared shapes."""
  with epath.Path(path).open("rb") as raw:  # Local or gs://.
    untrusted.npz_members(raw, path, max_bytes)


def load_npz_arrays(path: str | os.PathLike, max_bytes: int = NPZ_MAX_BYTES
                    ) -> tuple[np.ndarray, np.ndarray | None]:
  """(images uint8 [N, H, W, C], labels int [N] or None) from an .npz; every error names `path`.

  No pickled objects are loaded (allow_pickle=False). Each member's .npy header must declare
  exactly the bytes the member holds, and all of them at most max_bytes, before anything is
  allocated; shapes and dtypes are then checked.
  """
  path = os.fspath(path)
  expected = "expected an .npz with 'images' uint8 [N, H, W, C] (C = 1 or 3) and optional " \
             "'labels' int [N]"
  if not epath.Path(path).is_file():
    raise FileNotFoundError(f"dataset.path {path!r} does not exist ({expected})")
  _check_npz_sizes(path, max_bytes)
  try:
    with epath.Path(path).open("rb") as raw, np.load(raw, allow_pickle=False) as npz:
      if not isinstance(npz, np.lib.npyio.NpzFile):
        raise ValueError("a single .npy array, not an .npz archive")
      if "images" not in npz:
        raise ValueError(f"no 'images' array (found {sorted(npz.keys())})")
      images = npz["images"]
      labels = npz["labels"] if "labels" in npz else None
  except (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error, KeyError) as e:
    raise ValueError(f"{path}: cannot read ({type(e).__name__}: {e}); {expected}") from e
  if images.dtype != np.uint8 or images.ndim not in (3, 4) or (
      images.ndim == 4 and images.shape[-1] not in (1, 3)):
    raise ValueError(f"{path}: 'images' has dtype {images.dtype}, shape {images.shape}; "
                     f"{expected}")
  if labels is not None and (labels.shape != images.shape[:1]
                             or not np.issubdtype(labels.dtype, np.integer)):
    raise ValueError(f"{path}: 'labels' has dtype {labels.dtype}, shape {labels.shape}; "
                     f"{expected}")
  return images, labels


def resize_digits(images: np.ndarray, resolution: int) -> np.ndarray:
  """sklearn digits (float, 0..16, [N, 8, 8]) -> uint8 [N, R, R, 1].

  Values are scaled to 0..255 in float32, resized with PIL's bilinear filter on the float (mode "F")
  image (so there is one rounding, at the end), then rounded and clipped to uint8.
  """
  scaled = np.asarray(images, np.float32) * (255.0 / 16.0)
  out = np.empty((scaled.shape[0], resolution, resolution), np.uint8)
  for i, img in enumerate(scaled):
    if img.shape != (resolution, resolution):
      img = np.asarray(PIL.Image.fromarray(img).resize(
          (resolution, resolution), PIL.Image.Resampling.BILINEAR))
    out[i] = np.clip(np.rint(img), 0, 255).astype(np.uint8)
  return out[..., None]


def load_digits_arrays(resolution: int = 16, split: str = "train") -> tuple[np.ndarray, np.ndarray]:
  """The packaged digits as (uint8 [N, R, R, 1], int64 [N]); no network needed.

  Splits: 'train' (1,500 images), 'test' (the other 297) or 'all' (1,797), from a fixed
  permutation with seed 0.
  """
  if split not in DIGITS_SPLITS:
    raise ValueError(f"digits split must be one of {DIGITS_SPLITS}, got {split!r}")
  if not isinstance(resolution, (int, np.integer)) or resolution < 4:
    raise ValueError(f"digits resolution must be an int >= 4, got {resolution!r}")
  import sklearn.datasets  # Local import: only this source needs scikit-learn.
  digits = sklearn.datasets.load_digits()
  order = np.random.default_rng(DIGITS_SPLIT_SEED).permutation(digits.images.shape[0])
  if split == "train":
    order = order[:DIGITS_NUM_TRAIN]
  elif split == "test":
    order = order[DIGITS_NUM_TRAIN:]
  else:
    order = np.sort(order)
  return resize_digits(digits.images[order], int(resolution)), digits.target[order].astype(np.int64)


class DigitsSource(ArraySource):
  """scikit-learn's handwritten digits, 10 classes, 1 channel, resized to `resolution`."""

  def __init__(self, resolution: int = 16, split: str = "train", conditional: bool = True):
    images, labels = load_digits_arrays(resolution, split)
    super().__init__(images, labels if conditional else None, 10 if conditional else None,
                     name=f"digits-{split}-{resolution}")
