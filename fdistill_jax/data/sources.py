"""Random-access image sources: what the input pipeline reads records from.

Every source has `len(source)`, `source[i] -> {"image": uint8 [H, W, C], "label": int}` and two
attributes the pipeline needs before reading anything: `image_shape` (H, W, C) and `label_dim`
(number of classes; 0 for an unconditional source, whose records carry label -1).

Sources:
* `DigitsSource`: scikit-learn's packaged handwritten digits (1,797 8x8 images), resized; works
  offline and is the project's default dataset.
* `ArraySource`: in-memory arrays (also the tfds fallback for TFRecord-prepared data).
* `ImageFolderSource`: an EDM `dataset_tool.py` zip or a folder of images, with an optional
  `dataset.json` of labels.
* `tfds_source`: a TFDS dataset prepared in the user's TFDS data directory (`cifar10`,
  `imagenet_resized/64x64`, ...).

Sources are cheap to pickle (zip handles are opened lazily per process) so grain workers can use
them.
"""
from __future__ import annotations

import io
import json
import os
import zipfile
import zlib
from typing import Any, Mapping, Protocol, Sequence

import numpy as np
import PIL.Image
from etils import epath

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".ppm", ".tif", ".tiff")
DIGITS_SPLITS = ("train", "test", "all")
# Digits split: a fixed permutation (seed 0) of the 1,797 images; the last 297 are held out.
DIGITS_NUM_TRAIN = 1500
DIGITS_SPLIT_SEED = 0
# dataset.json is read whole and parsed; ImageNet's (1.28M labels) is ~40 MB. Anything larger is
# refused before it is inflated or parsed (a small zip can inflate to gigabytes).
MAX_LABELS_JSON_BYTES = 256 << 20


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


def _list_folder(path: str) -> list[str]:
  """Every file under folder `path`, as '/'-separated names relative to it."""
  if "://" not in path:
    return [os.path.relpath(os.path.join(root, f), path).replace(os.sep, "/")
            for root, _, files in os.walk(path) for f in files]
  # Object stores: epath's walk; its roots may come back without the gs:// prefix (fsspec).
  base, names = path.split("://", 1)[-1].rstrip("/"), []
  for root, _, files in epath.Path(path).walk():
    rel = str(root).split("://", 1)[-1].rstrip("/")[len(base):].strip("/")
    names += [f"{rel}/{f}" if rel else f for f in files]
  return names


NPZ_MAX_BYTES = 64 * 2 ** 30  # Largest array data an .npz may declare (all members together).


def _check_npz_sizes(path: str, max_bytes: int) -> None:
  """Refuses an .npz whose .npy headers declare more data than their members hold, or more than
  max_bytes in all: numpy allocates the declared shape before it reads a member, so a small
  file with a forged header would otherwise become a huge allocation."""
  total = 0
  try:
    with epath.Path(path).open("rb") as raw, zipfile.ZipFile(raw) as zf:  # Local or gs://.
      for info in zf.infolist():
        if not info.filename.endswith(".npy"):
          continue
        with zf.open(info) as f:
          version = np.lib.format.read_magic(f)
          read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                         else np.lib.format.read_array_header_2_0)
          shape, _, dtype = read_header(f)
          header_len = f.tell()
        if dtype.hasobject:
          continue  # np.load refuses it (allow_pickle=False) with its own message.
        declared = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        if declared != info.file_size - header_len:
          raise ValueError(f"member {info.filename!r} declares {shape} {dtype} ({declared} bytes) "
                           f"but holds {info.file_size - header_len} bytes of data")
        total += declared
  except zipfile.BadZipFile:
    return  # Not a zip (a bare .npy, or garbage): np.load reports it below, naming the path.
  except (ValueError, OSError, EOFError, zlib.error) as e:
    raise ValueError(f"{path}: cannot read ({type(e).__name__}: {e})") from None
  if total > max_bytes:
    raise ValueError(f"{path}: its arrays declare {total} bytes, over the {max_bytes}-byte limit "
                     "(sources.NPZ_MAX_BYTES)")


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
      else:
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
    return _decode_image(self._read_bytes(name), f"{self.path}:{name}")

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


def _tfds_prepare_hint(name: str, data_dir: str | None) -> str:
  where = data_dir or "$TFDS_DATA_DIR (default ~/tensorflow_datasets)"
  return (f"prepare it with `tfds build {name} --data_dir={where} --file_format=array_record` "
          f"(array_record gives random access; a TFRecord copy can be converted with `tfds "
          f"convert_format --dataset_version_dir=<data_dir>/<name>/<version> "
          f"--out_file_format=array_record`)")


class TfdsSource:
  """A random-access TFDS data source (array_record or parquet prepared data)."""

  def __init__(self, data_source: Any, name: str, split: str, image_key: str,
               label_key: str | None, image_shape: tuple[int, int, int], label_dim: int):
    self._ds = data_source
    self.name, self.split = name, split
    self.image_key, self.label_key = image_key, label_key
    self.image_shape, self.label_dim = image_shape, label_dim

  def __len__(self) -> int:
    return len(self._ds)

  def __getitem__(self, index: int) -> dict[str, Any]:
    ex = self._ds[_check_index(index, len(self))]
    image = np.asarray(ex[self.image_key], np.uint8)
    image = image[..., None] if image.ndim == 2 else image
    label = int(ex[self.label_key]) if self.label_dim else -1
    return {"image": image, "label": label}

  def __repr__(self) -> str:
    return f"TfdsSource({self.name}, split={self.split}, n={len(self)}, " \
           f"shape={self.image_shape}, label_dim={self.label_dim})"


def tfds_source(name: str, split: str = "train", data_dir: str | None = None,
                image_key: str = "image", label_key: str | None = "label",
                use_labels: bool = True, reader: str = "auto",
                max_in_memory_bytes: int = 8 << 30) -> ImageSource:
  """A prepared TFDS dataset (e.g. 'cifar10', 'imagenet_resized/64x64') as a random-access source.

  Readers:
  * 'data_source' (random access, no TensorFlow): `builder.as_data_source(split)`; needs the data
    prepared as array_record (or parquet). Records are read lazily; grain shards and shuffles them.
  * 'tf_data': `builder.as_dataset(split)` through tf.data (TensorFlow), read once into memory as
    an ArraySource; for the TFDS default TFRECORD preparation, which has no random access.
    Refused above `max_in_memory_bytes` (ImageNet 64x64 is ~16 GB: convert it instead).
  * 'auto': 'data_source' when the prepared format allows it, else 'tf_data'.

  Args:
    name: TFDS name with optional config, e.g. 'imagenet_resized/64x64'.
    split: TFDS split string, e.g. 'train' or 'train[:90%]'.
    data_dir: TFDS data directory; None uses TFDS's default.
    image_key, label_key: feature names; label_key None or use_labels False -> unconditional.
  """
  import tensorflow_datasets as tfds  # Local import: only this source needs TFDS.
  if reader not in ("auto", "data_source", "tf_data"):
    raise ValueError(f"tfds reader must be 'auto', 'data_source' or 'tf_data', got {reader!r}")
  try:
    builder = tfds.builder(name, data_dir=data_dir)
  except tfds.core.registered.DatasetNotFoundError as e:
    raise ValueError(f"TFDS has no dataset named {name!r} (expected e.g. 'cifar10' or "
                     f"'imagenet_resized/64x64')") from e
  features = builder.info.features
  if image_key not in features:
    raise ValueError(f"TFDS {name}: no image feature {image_key!r}; features are "
                     f"{sorted(features.keys())}")
  shape = tuple(features[image_key].shape)
  if len(shape) != 3 or any(s is None for s in shape):
    raise ValueError(f"TFDS {name}: images must have a fixed [H, W, C] shape, got {shape}; "
                     f"use a resized variant (e.g. 'imagenet_resized/64x64')")
  label_dim = 0
  if use_labels and label_key is not None:
    if label_key not in features or not hasattr(features[label_key], "num_classes"):
      raise ValueError(f"TFDS {name}: no class-label feature {label_key!r}; features are "
                       f"{sorted(features.keys())} (set label_key=None for unconditional data)")
    label_dim = int(features[label_key].num_classes)
  key = label_key if label_dim else None
  if reader in ("auto", "data_source"):
    try:
      ds = builder.as_data_source(split=split)
      return TfdsSource(ds, name, split, image_key, key, shape, label_dim)
    except NotImplementedError as e:
      # Raised for TFRECORD-prepared (or unprepared) data: no random access.
      if reader == "data_source":
        raise ValueError(f"TFDS {name} in {builder.data_dir} has no random-access (array_record) "
                         f"files: {_tfds_prepare_hint(name, data_dir)}") from e
  return _tfds_into_memory(builder, name, split, image_key, key, shape, label_dim, data_dir,
                           max_in_memory_bytes)


def _tfds_into_memory(builder: Any, name: str, split: str, image_key: str, label_key: str | None,
                      shape: tuple[int, ...], label_dim: int, data_dir: str | None,
                      max_bytes: int) -> ArraySource:
  """Reads a TFRECORD-prepared split through tf.data into an ArraySource."""
  import tensorflow_datasets as tfds
  try:
    num = builder.info.splits[split].num_examples
  except (KeyError, ValueError):
    num = None  # Unknown (unprepared, or under tfds.testing.mock_data).
  if num is not None and num * int(np.prod(shape)) > max_bytes:
    raise ValueError(f"TFDS {name}[{split}] is {num * int(np.prod(shape)) / 2**30:.1f} GiB, above "
                     f"max_in_memory_bytes={max_bytes}, and its files are TFRECORD (no random "
                     f"access): {_tfds_prepare_hint(name, data_dir)}")
  try:
    ds = builder.as_dataset(split=split, shuffle_files=False)
  except AssertionError as e:  # TFDS's "could not find data" error.
    raise FileNotFoundError(f"TFDS {name} is not prepared in {builder.data_dir}: "
                            f"{_tfds_prepare_hint(name, data_dir)}") from e
  images, labels = [], []
  for ex in tfds.as_numpy(ds):
    images.append(np.asarray(ex[image_key], np.uint8).reshape(shape))
    labels.append(int(ex[label_key]) if label_key else 0)
  if not images:
    raise ValueError(f"TFDS {name}[{split}] is empty")
  return ArraySource(np.stack(images), np.asarray(labels) if label_key else None,
                     label_dim if label_key else None, name=f"tfds-{name}-{split}")
