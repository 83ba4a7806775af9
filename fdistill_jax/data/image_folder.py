"""`ImageFolderSource`: an EDM `dataset_tool.py` zip or a folder of images (local or an object
store such as gs://), with an optional `dataset.json` of labels, as a random-access source
(the `ImageSource` protocol of sources.py).

Reads are bounded and every error names the archive or folder and the member: `dataset.json` is
refused above MAX_LABELS_JSON_BYTES before it is inflated or parsed; CRC and decompression errors
name the member.
"""
from __future__ import annotations

import io
import json
import os
import stat
import zipfile
import zlib
from typing import Any, Mapping, Sequence

import numpy as np
import PIL.Image
from etils import epath

from fdistill_jax.data.sources import _check_index

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".ppm", ".tif", ".tiff")
# dataset.json is read whole and parsed; ImageNet's (1.28M labels) is ~40 MB. Anything larger is
# refused before it is inflated or parsed (a small zip can inflate to gigabytes).
MAX_LABELS_JSON_BYTES = 256 << 20
# One encoded image: an 8192x8192 RGB PNG stored without compression is 192 MiB. Larger members are
# refused by their declared size, and by their actual size while inflating.
MAX_IMAGE_BYTES = 256 << 20


def _list_folder(path: str) -> list[str]:
  """Every file under folder `path`, as '/'-separated names relative to it (symlinked folders
  are not followed)."""
  if "://" not in path:
    return [os.path.relpath(os.path.join(root, f), path).replace(os.sep, "/")
            for root, _, files in os.walk(path) for f in files]
  # Object stores: epath's walk; its roots may come back without the gs:// prefix (fsspec).
  base, names = path.split("://", 1)[-1].rstrip("/"), []
  for root, _, files in epath.Path(path).walk():
    rel = str(root).split("://", 1)[-1].rstrip("/")[len(base):].strip("/")
    names += [f"{rel}/{f}" if rel else f for f in files]
  return names


def _read_regular_file(path: str, limit: int | None) -> bytes:
  """Bytes of a local regular file (symlinks followed), at most limit + 1 of them. A FIFO, device
  or socket (also behind a symlink) is refused by stat before it is opened, and the open is
  non-blocking and checked again, so a read never blocks or streams forever."""
  if not stat.S_ISREG(os.stat(path).st_mode):
    raise ValueError(f"{path} is not a regular file (a FIFO, device or socket); only regular "
                     "image files are read")
  fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
  with os.fdopen(fd, "rb") as f:
    if not stat.S_ISREG(os.fstat(fd).st_mode):  # Swapped after the stat above.
      raise ValueError(f"{path} is not a regular file; only regular image files are read")
    return f.read(-1 if limit is None else limit + 1)


def _decode_image(data: bytes, what: str) -> np.ndarray:
  """Encoded image bytes -> uint8 [H, W, C]."""
  try:
    with PIL.Image.open(io.BytesIO(data)) as img:
      mode = img.mode
      if mode.startswith(("I", "F")):
        raise ValueError(f"{mode!r} pixels are not 8-bit; expected 8-bit grayscale or RGB")
      if mode not in ("L", "RGB"):  # 1-bit and gray+alpha to L; palette, RGBA, CMYK to RGB.
        img = img.convert("L" if mode in ("1", "LA") else "RGB")
      arr = np.asarray(img, np.uint8)
  except Exception as e:  # PIL raises several types for bad files.
    raise ValueError(f"cannot decode image {what}: {e}") from e
  return arr[..., None] if arr.ndim == 2 else arr


class ImageFolderSource:
  """An EDM `dataset_tool.py` zip or a directory of images (all the same size).

  Files with image extensions anywhere under the root are records, in sorted path order (as EDM
  does). Optional `dataset.json` at the root: {"labels": [[relative/path.png, int], ...]} or
  {"labels": null}; when present with labels, every image must have one.

  Args:
    path: a .zip file or a directory.
    use_labels: False ignores dataset.json labels (unconditional).
  """

  def __init__(self, path: str | os.PathLike, use_labels: bool = True):
    self.path = os.fspath(path)
    self._zip: zipfile.ZipFile | None = None
    prepare = ("prepare one with EDM's dataset_tool.py, e.g. `python dataset_tool.py "
               "--source=downloads/cifar10/cifar-10-python.tar.gz "
               "--dest=datasets/cifar10-32x32.zip`, or point to a folder of PNG files")
    if epath.Path(self.path).is_dir():  # Local or gs:// (the same for a zip below).
      self.kind = "folder"
      names = _list_folder(self.path)
    elif epath.Path(self.path).is_file():
      with epath.Path(self.path).open("rb") as raw:
        is_zip = zipfile.is_zipfile(raw)
      if not is_zip:
        raise ValueError(f"{self.path}: not a zip file (expected an EDM dataset zip of PNG files "
                         f"+ optional dataset.json, or a directory); {prepare}")
      self.kind = "zip"
      try:
        names = self._open_zip().namelist()
      except zipfile.BadZipFile as e:
        raise ValueError(f"{self.path}: malformed zip ({e}); {prepare}") from e
    else:
      raise FileNotFoundError(f"dataset path {self.path!r} does not exist: expected an EDM "
                              f"dataset zip or an image folder; {prepare}")
    self.files = sorted(n for n in names if n.lower().endswith(IMAGE_EXTENSIONS))
    if not self.files:
      raise ValueError(f"{self.path}: no image files ({', '.join(IMAGE_EXTENSIONS)}) found; "
                       f"{prepare}")
    self.labels = self._read_labels(names) if use_labels else None
    self.label_dim = 0 if self.labels is None else int(self.labels.max()) + 1
    self.image_shape = tuple(int(s) for s in self._load(0).shape)

  def _open_zip(self) -> zipfile.ZipFile:
    if self._zip is None:
      local = "://" not in self.path
      self._zip = zipfile.ZipFile(self.path if local else epath.Path(self.path).open("rb"))
    return self._zip

  def _read_bytes(self, name: str, limit: int | None = None) -> bytes:
    """Bytes of member/file `name`; more than `limit` bytes raises ValueError (bounded read)."""
    try:
      if self.kind == "zip":
        zf = self._open_zip()
        if limit is not None and zf.getinfo(name).file_size > limit:
          raise ValueError(f"{name} declares {zf.getinfo(name).file_size} bytes, above the "
                           f"{limit}-byte limit")
        with zf.open(name) as f:
          data = f.read(-1 if limit is None else limit + 1)
      elif "://" not in self.path:
        data = _read_regular_file(os.path.join(self.path, name), limit)
      else:  # Object stores hold only objects: no devices or FIFOs.
        with (epath.Path(self.path) / name).open("rb") as f:
          data = f.read(-1 if limit is None else limit + 1)
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, KeyError) as e:
      raise ValueError(f"{self.path}: cannot read {name!r} ({type(e).__name__}: {e}); the "
                       f"{'archive' if self.kind == 'zip' else 'folder'} is corrupt") from e
    if limit is not None and len(data) > limit:
      raise ValueError(f"{name} is larger than the {limit}-byte limit")
    return data

  def _read_labels(self, names: Sequence[str]) -> np.ndarray | None:
    if "dataset.json" not in names:
      return None
    where = f"{self.path}/dataset.json"
    expected = 'expected {"labels": [["path/in/dataset.png", int], ...]} or {"labels": null}'
    try:
      raw = self._read_bytes("dataset.json", MAX_LABELS_JSON_BYTES)
    except ValueError as e:
      raise ValueError(f"{where}: {e}; {expected}") from e
    try:
      meta = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
      raise ValueError(f"{where}: not valid JSON ({e}); {expected}") from e
    except RecursionError:
      raise ValueError(f"{where}: JSON nested too deeply to parse; {expected}") from None
    if not isinstance(meta, Mapping) or "labels" not in meta:
      raise ValueError(f"{where}: no 'labels' field; {expected}")
    if meta["labels"] is None:
      return None
    try:
      table = {str(fname).replace("\\", "/"): label for fname, label in meta["labels"]}
    except (TypeError, ValueError, RecursionError) as e:
      raise ValueError(f"{where}: 'labels' is not a list of [fname, label] pairs; "
                       f"{expected}") from e
    missing = [f for f in self.files if f not in table]
    if missing:
      raise ValueError(f"{where}: {len(missing)} image(s) have no label, e.g. {missing[0]!r}; "
                       f"{expected}")
    labels = [table[f] for f in self.files]
    bad = [(f, l) for f, l in zip(self.files, labels)
           if isinstance(l, bool) or not isinstance(l, int) or l < 0]
    if bad:
      raise ValueError(f"{where}: label of {bad[0][0]!r} is {bad[0][1]!r}; only non-negative int "
                       f"class labels are supported ({expected})")
    return np.asarray(labels, np.int64)

  def _load(self, index: int) -> np.ndarray:
    name = self.files[index]
    try:
      data = self._read_bytes(name, MAX_IMAGE_BYTES)
    except ValueError as e:
      msg = str(e)
      raise ValueError(msg if msg.startswith(self.path) else f"{self.path}: {msg}") from None
    return _decode_image(data, f"{self.path}:{name}")

  def __len__(self) -> int:
    return len(self.files)

  def __getitem__(self, index: int) -> dict[str, Any]:
    index = _check_index(index, len(self))
    image = self._load(index)
    if image.shape != self.image_shape:
      raise ValueError(f"{self.path}:{self.files[index]} has shape {image.shape}, but the "
                       f"dataset's first image has {self.image_shape}; all images must match")
    label = -1 if self.labels is None else int(self.labels[index])
    return {"image": image, "label": label}

  def __getstate__(self) -> dict[str, Any]:
    state = dict(self.__dict__)
    state["_zip"] = None  # Zip handles do not pickle; each worker reopens its own.
    return state

  def __repr__(self) -> str:
    return f"ImageFolderSource({os.path.basename(self.path)}, kind={self.kind}, n={len(self)}, " \
           f"shape={self.image_shape}, label_dim={self.label_dim})"
