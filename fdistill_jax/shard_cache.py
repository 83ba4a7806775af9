"""One sharded on-disk cache: arrays split into shards 0..n-1 of one folder (local or gs://) with a
JSON manifest of the settings they were made for. Its users: the knowledge-distillation teacher
pairs (methods/kd.py: `shard_00000.npz`, `manifest.json`) and the text-prompt embedding cache
(data/prompt_cache.py: `shard-00000-of-00007.safetensors`, `index.json`).

* Names come from (i, n) by a Layout's pattern; the manifest names no files, so it cannot point
  outside the folder.
* Writes go through fileio.write_bytes (all-or-nothing: a temporary name and a rename locally, one
  object upload on gs://): a shard under its final name is complete, and a killed build resumes
  by making only the missing shards (`build`).
* Checks: the manifest is read bounded, must be a JSON object and match this run's settings
  (`resume`: a mismatch names the file and the field); a shard passes its format's checks (npz:
  member sizes before allocating, each member's CRC-32; safetensors: header offsets) and its float
  arrays must be finite (`read`). An unusable file raises the layout's error naming it, or
  (`build`, `load` given make) is set aside as `<name>.corrupt` and rebuilt.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Collection, Sequence, TypeVar

import numpy as np
from absl import logging
from etils import epath

from fdistill_jax import fileio, untrusted

T = TypeVar("T")
Arrays = dict[str, np.ndarray]
MakeShard = Callable[[int, str], None]  # make(i, path): writes shard i to path via Layout.write.


class ShardError(ValueError):
  """A manifest or shard that cannot be used; the message names the file and why."""


@dataclasses.dataclass(frozen=True)
class Layout:
  """The files of one kind of sharded cache.

  pattern: a shard's file name, with str.format fields i (its index) and n (the shard count);
    ending in .npz the shards are npz files (no metadata), otherwise safetensors.
  manifest: the file name of the JSON settings, read at most max_manifest_bytes.
  what: how errors name the manifest. error: the class raised for an unusable file (ShardError
  or a subclass).
  """
  pattern: str
  manifest: str
  what: str = "shard-cache manifest"
  error: type[ShardError] = ShardError
  max_manifest_bytes: int = untrusted.MAX_CONFIG_JSON_BYTES

  def name(self, i: int, n: int) -> str:
    return self.pattern.format(i=i, n=n)

  def paths(self, folder: epath.PathLike, n: int) -> list[str]:
    return [str(epath.Path(folder) / self.name(i, n)) for i in range(n)]

  def manifest_path(self, folder: epath.PathLike) -> epath.Path:
    return epath.Path(folder) / self.manifest

  # ------------------------------------------------------------------------------ manifest
  def read_manifest(self, folder: epath.PathLike, *, fix: str) -> dict:
    """The manifest of folder; missing, too large, invalid JSON or not an object raises naming the
    file, with `fix` (what the user can do) appended."""
    path = self.manifest_path(folder)
    if not path.is_file():
      raise self.error(f"{path}: missing; {fix}")
    try:
      have = untrusted.read_json(path, self.max_manifest_bytes, error=self.error)
    except self.error as e:
      raise self.error(f"{e}; {fix}") from None
    if not isinstance(have, dict):
      raise self.error(f"{path}: not a {self.what} (a JSON {type(have).__name__}); {fix}")
    return have

  def resume(self, folder: epath.PathLike, want: dict, *, fix: str,
             keys: Collection[str] | None = None,
             read: Callable[[str], dict] | None = None) -> bool:
    """Makes folder; True when it already holds a manifest (read by `read`, default
    read_manifest), which must then equal `want` on `keys` (default: all of want), so that the
    shards there are those this run would write; else an error naming the file and the first
    field that differs. The caller writes its manifest (fileio.write_json) when it likes."""
    fileio.makedirs(folder)  # Local or gs://.
    path = self.manifest_path(folder)
    if not path.exists():
      return False
    have = read(str(folder)) if read else self.read_manifest(folder, fix=fix)
    for k in want if keys is None else keys:
      if have.get(k) != want[k]:
        raise self.error(f"{path}: {k}={have.get(k)!r} but this run expects {k}={want[k]!r}; "
                         f"{fix}")
    return True

  # -------------------------------------------------------------------------------- shards
  def write(self, path: str, arrays: Arrays, metadata: dict[str, str] | None = None) -> None:
    """Writes one shard all-or-nothing (fileio.write_bytes), to a local or gs:// path."""
    if self.pattern.endswith(".npz"):
      if metadata:
        raise ValueError(f"{path}: npz shards hold no metadata ({sorted(metadata)})")
      fileio.save_npz(path, **arrays)
    else:
      fileio.save_safetensors(path, arrays, metadata)

  def read(self, path: str, *, required: Sequence[str] = (),
           floats: Sequence[str] = ()) -> tuple[Arrays, dict[str, str]]:
    """(arrays, metadata) of one shard ({} for npz), checked: the format's own checks, the
    `required` arrays present, `floats` floating point and every float array finite. Raises
    self.error naming the file."""
    if not epath.Path(path).is_file():
      raise self.error(f"{path}: missing cache file")
    npz = self.pattern.endswith(".npz")
    try:
      arrays, meta = (fileio.load_npz(path), {}) if npz else fileio.load_safetensors(path)
    except Exception as e:  # pylint: disable=broad-except  (safetensors raises its own types)
      # load_npz's ValueErrors already name the file and member (e.g. a bad CRC-32).
      raise self.error(str(e) if npz and isinstance(e, ValueError) else
                       f"{path}: truncated or corrupt {'.npz' if npz else '.safetensors'} "
                       f"file ({type(e).__name__}: {e})") from e
    if set(required) - set(arrays):
      raise self.error(f"{path}: holds arrays {sorted(arrays)}; expected {sorted(required)}")
    untrusted.check_float_arrays(arrays, path, [k for k in arrays if k in floats or (
        untrusted.is_float_dtype(arrays[k].dtype))], error=self.error)
    return arrays, meta

  def set_aside(self, path: str, i: int, why: Exception) -> None:
    """Moves an unusable shard i to `<path>.corrupt` (replacing an older one), with a warning."""
    logging.warning("%s; moving it to %s.corrupt and rebuilding shard %d", why, path, i)
    try:
      fileio.move(path, path + ".corrupt")  # Kept for inspection, never read.
    except FileNotFoundError:  # Another process of this run moved it first.
      pass

  def build(self, paths: Sequence[str], make: MakeShard, *,
            check: Callable[[int, str], object] | None = None,
            max_new: int | None = None) -> list[str]:
    """Writes the missing shards of `paths` by make(i, path); returns all paths (complete or not).

    make must be a function of i alone, so a resumed build writes what a one-shot one would.
    check(i, path): raises self.error for an existing shard that is unusable, which is then set
    aside and rebuilt (None: an existing shard is complete, being written all-or-nothing).
    max_new: stop after that many new shards (a bounded build step; how tests kill a build).
    """
    new = 0
    for i, path in enumerate(paths):
      if epath.Path(path).exists():
        try:
          if check is not None:
            check(i, path)
          continue
        except self.error as e:
          self.set_aside(path, i, e)
      if max_new is not None and new >= max_new:
        continue
      make(i, path)
      new += 1
    return list(paths)

  def load(self, paths: Sequence[str], read: Callable[[int, str, T | None], T], *,
           make: MakeShard | None = None) -> list[T]:
    """[read(i, path, first)] of every shard, first being shard 0's result (None for shard 0) so
    that later shards can be checked against it. With make, a shard that read refuses (self.error)
    is set aside, rebuilt and read again (a second failure raises); without, the error raises."""
    out: list[T] = []
    for i, path in enumerate(paths):
      first = out[0] if out else None
      try:
        out.append(read(i, path, first))
      except self.error as e:
        if make is None:
          raise
        self.set_aside(path, i, e)
        make(i, path)
        out.append(read(i, path, first))
    return out
