"""The sharded, resumable input pipeline: source records -> fixed-shape model batches.

`InputPipeline` wraps a grain `DataLoader` over a random-access source (see sources.py):
* sharding: each process reads a disjoint, equal-sized block of records
  (`ShardOptions(jax.process_index(), jax.process_count(), drop_remainder=True)`);
* shuffling: grain's `IndexSampler` reshuffles the shard every epoch, deterministically from the
  seed;
  epochs run on without end (num_epochs=None) unless given, and batches may straddle epochs;
* batches: per-process `batch_size`, remainder dropped, so shapes never change:
  {"images": float32 [B, H, W, C] in [-1, 1], "labels": int32 [B] class indices (−1 when
  unlabelled)}; optional random x-flip, seeded per record. Labels stay indices: the problem's
  condition spec encodes them (conditioning.ConditionSpec.encode), the one place that does;
* resume: `get_state()` is a small JSON-serialisable dict (position + what it was made with);
  `set_state()` continues exactly where it was saved. The state is per process.

The engine makes global jax.Arrays of the batches (engine/sharding.global_arrays).
`make_source` builds a source from a config.
"""
from __future__ import annotations

import json
from typing import Any, Iterator, Mapping

import grain
import jax
import numpy as np
from etils import epath

from fdistill_jax.data import image_folder, sources, tfds_reader

DATASETS = ("digits", "tfds", "edm_zip", "folder", "arrays")
STATE_VERSION = 1


class _ToModelInput(grain.transforms.Map):
  """Record {"image": uint8 HWC, "label": int} -> {"images": [-1,1] float32, "labels": int32}."""

  def __init__(self, image_shape: tuple[int, ...], label_dim: int, where: str):
    self.image_shape, self.label_dim, self.where = tuple(image_shape), label_dim, where

  def map(self, element: Mapping[str, Any]) -> dict[str, np.ndarray]:
    image = np.asarray(element["image"])
    if image.shape != self.image_shape or image.dtype != np.uint8:
      raise ValueError(f"{self.where}: record image is {image.dtype} {image.shape}, expected "
                       f"uint8 {self.image_shape}")
    label = -1
    if self.label_dim:
      label = int(element["label"])
      if not 0 <= label < self.label_dim:
        raise ValueError(f"{self.where}: label {label} outside [0, {self.label_dim})")
    return {"images": image.astype(np.float32) / 127.5 - 1.0, "labels": np.int32(label)}


class _RandomXFlip(grain.transforms.RandomMap):
  """Mirrors the image left-right with probability 1/2 (rng seeded by grain per record)."""

  def random_map(self, element: dict[str, np.ndarray], rng: np.random.Generator):
    if rng.random() < 0.5:
      element = dict(element, images=element["images"][:, ::-1, :].copy())
    return element


class InputPipeline:
  """Endless (or `num_epochs`) iterator of per-process batches; see the module docstring.

  Args:
    source: a random-access source with `image_shape` and `label_dim`.
    batch_size: per-process batch size (global batch / process count; see `local_batch_size`).
    seed: shuffling and flip seed.
    shuffle: reshuffle every epoch (False: records in shard order).
    xflip: random left-right flips.
    num_epochs: None for endless.
    use_labels: False gives labels −1 (label_dim 0) even for a labelled source.
    worker_count: grain worker processes; 0 reads in this process (use 0 in tests / 2-core CPUs;
      >0 needs absl flags parsed, i.e. run under absl.app.run). Each worker batches its own
      records, so the batches depend on worker_count, and a state resumes only with the same
      worker_count (checked).
    shard_index, shard_count: default jax.process_index() / jax.process_count().
    read_options: grain.ReadOptions (threads and prefetch of the in-process reader).
  """

  def __init__(self, source: sources.ImageSource, batch_size: int, *, seed: int = 0,
               shuffle: bool = True, xflip: bool = False, num_epochs: int | None = None,
               use_labels: bool = True, worker_count: int = 0,
               shard_index: int | None = None,
               shard_count: int | None = None, read_options: grain.ReadOptions | None = None):
    shard_index = jax.process_index() if shard_index is None else int(shard_index)
    shard_count = jax.process_count() if shard_count is None else int(shard_count)
    if not 0 <= shard_index < shard_count:
      raise ValueError(f"shard_index {shard_index} outside [0, shard_count={shard_count})")
    if batch_size <= 0:
      raise ValueError(f"batch_size must be positive, got {batch_size}")
    per_shard = len(source) // shard_count
    if per_shard < batch_size:
      raise ValueError(f"{source!r}: {len(source)} records over {shard_count} shard(s) give "
                       f"{per_shard} per shard, fewer than the per-process batch {batch_size}")
    self.source = source
    self.batch_size = int(batch_size)
    self.label_dim = int(source.label_dim) if use_labels else 0
    self.image_shape = tuple(int(s) for s in source.image_shape)
    self.steps_per_epoch = per_shard // self.batch_size
    self._config = {"batch_size": self.batch_size, "xflip": bool(xflip),
                    "label_dim": self.label_dim, "version": STATE_VERSION}
    # States saved while labels could be one-hot may carry a 'label_format' entry: it does not
    # move the reader, and set_state compares only the fields above, so they still load.
    sampler = grain.samplers.IndexSampler(
        num_records=len(source), shuffle=shuffle, seed=int(seed), num_epochs=num_epochs,
        shard_options=grain.sharding.ShardOptions(shard_index, shard_count, drop_remainder=True))
    ops: list[Any] = [_ToModelInput(self.image_shape, self.label_dim, repr(source))]
    if xflip:
      ops.append(_RandomXFlip())
    ops.append(grain.transforms.Batch(self.batch_size, drop_remainder=True))
    self._loader = grain.DataLoader(data_source=source, sampler=sampler, operations=ops,
                                    worker_count=worker_count, read_options=read_options)
    self._iter = iter(self._loader)

  @property
  def batch_shapes(self) -> dict[str, tuple[int, ...]]:
    """Shapes of every batch (images float32, labels int32)."""
    return {"images": (self.batch_size, *self.image_shape), "labels": (self.batch_size,)}

  def __iter__(self) -> "InputPipeline":
    return self

  def __next__(self) -> dict[str, np.ndarray]:
    return next(self._iter)

  def get_state(self) -> dict[str, Any]:
    """The position after the last batch returned, as a JSON-serialisable dict (~0.5 KB)."""
    return {**self._config, "grain": json.loads(self._iter.get_state().decode())}

  def set_state(self, state: Mapping[str, Any]) -> None:
    """Continues from a `get_state()` dict made by a pipeline of the same configuration."""
    if not isinstance(state, Mapping) or "grain" not in state:
      raise ValueError(f"pipeline state must be a dict from InputPipeline.get_state() with a "
                       f"'grain' entry; got {type(state).__name__}")
    diff = {k: (state.get(k), v) for k, v in self._config.items() if state.get(k) != v}
    if diff:
      raise ValueError(f"pipeline state was saved with a different configuration "
                       f"(field: (saved, current)): {diff}")
    self._iter.set_state(json.dumps(state["grain"]).encode())


def local_batch_size(global_batch_size: int, process_count: int | None = None) -> int:
  """Per-process share of a global batch; it must divide evenly."""
  process_count = jax.process_count() if process_count is None else process_count
  if global_batch_size % process_count:
    raise ValueError(f"global batch {global_batch_size} is not divisible by the "
                     f"{process_count} processes")
  return global_batch_size // process_count


def _get(config: Any, key: str, default: Any = None) -> Any:
  if isinstance(config, Mapping):
    return config.get(key, default)
  return getattr(config, key, default)


def make_source(config: Any) -> sources.ImageSource:
  """Builds a source from a dataset config (a ConfigDict/dict, or a config with `.dataset`).

  Fields by `name`:
    digits:   resolution=16, split='train'|'test'|'all', use_labels=True
    tfds:     tfds_name (e.g. 'cifar10', 'imagenet_resized/64x64'), split='train', data_dir=None,
              image_key='image', label_key='label', use_labels=True, reader='auto'
    edm_zip:  path (an EDM dataset_tool zip), use_labels=True
    folder:   path (a directory of images, optional dataset.json), use_labels=True
    arrays:   path (.npz with 'images' uint8 NHWC and optional 'labels') or images/labels arrays
  """
  dataset = _get(config, "dataset")
  cfg = config if dataset is None else dataset
  name = _get(cfg, "name")
  if name not in DATASETS:
    raise ValueError(f"dataset.name must be one of {DATASETS}, got {name!r}")
  use_labels = bool(_get(cfg, "use_labels", True))
  if name == "digits":
    return sources.DigitsSource(_get(cfg, "resolution", 16), _get(cfg, "split", "train"),
                                conditional=use_labels)
  if name == "tfds":
    tfds_name = _get(cfg, "tfds_name")
    if not tfds_name:
      raise ValueError("dataset.tfds_name is required for dataset.name='tfds' "
                       "(e.g. 'cifar10' or 'imagenet_resized/64x64')")
    return tfds_reader.tfds_source(tfds_name, _get(cfg, "split", "train"),
                                   _get(cfg, "data_dir") or None,
                                   _get(cfg, "image_key", "image"),
                                   _get(cfg, "label_key", "label"),
                                   use_labels=use_labels, reader=_get(cfg, "reader", "auto"))
  path = _get(cfg, "path")
  if name in ("edm_zip", "folder"):
    if not path:
      raise ValueError(f"dataset.path is required for dataset.name={name!r}")
    if name == "edm_zip" and epath.Path(path).is_dir():
      raise ValueError(f"dataset.path {path!r} is a directory; use dataset.name='folder' for it")
    if name == "folder" and epath.Path(path).is_file():
      raise ValueError(f"dataset.path {path!r} is a file; use dataset.name='edm_zip' for zips")
    return image_folder.ImageFolderSource(path, use_labels=use_labels)
  images, labels = _get(cfg, "images"), _get(cfg, "labels")
  if path:
    images, labels = sources.load_npz_arrays(path)
  if images is None:
    raise ValueError("dataset.name='arrays' needs dataset.path (.npz) or dataset.images")
  return sources.ArraySource(images, labels if use_labels else None, name=f"arrays-{len(images)}")
