"""TFDS glue: a dataset prepared in the user's TFDS data directory (`cifar10`,
`imagenet_resized/64x64`, ...) as a random-access source (the `ImageSource` protocol of
sources.py): `TfdsSource` over `builder.as_data_source` (array_record/parquet), or, for
TFRECORD-prepared data, an `ArraySource` read once through tf.data. Errors say how to prepare
or convert the data.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from fdistill_jax.data.sources import ArraySource, ImageSource, _check_index


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
