"""Checks shared by every loader of files this code did not write (weights, embeddings, FID
statistics, caches, mixture files): the one float/finite check, bounded JSON, shard names that
stay inside their folder, and .npz members sized before numpy allocates them.

Every error names the file (`source`) and the tensor, key or member. Only numpy, zipfile and
etils are imported (no jax), so the memory-capped tests can load this file on its own.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import re
import zipfile
import zlib
from typing import Any, BinaryIO, Iterator, Mapping

import numpy as np
from etils import epath

# Largest array data an .npz may declare (all members together); numpy allocates the declared
# shape of a member before reading it.
NPZ_MAX_BYTES = 64 * 2 ** 30
# config.json / model_index.json / shard indexes are kilobytes; a larger one is not one.
MAX_CONFIG_JSON_BYTES = 1 << 20
_CHUNK = 1 << 22  # Elements per isfinite pass: bounds the float32 copy of a bf16/fp8 tensor.


def is_float_dtype(dtype: np.dtype) -> bool:
  """numpy floats and ml_dtypes' (bfloat16, float8_*), which numpy reports as kind 'V'."""
  dtype = np.dtype(dtype)
  return dtype.kind == "f" or dtype.name == "bfloat16" or dtype.name.startswith("float8")


def count_nonfinite(a: np.ndarray) -> int:
  """Number of NaN/inf entries of a float array, in chunks (no full-size temporary)."""
  flat = np.asarray(a).reshape(-1)
  bad = 0
  for i in range(0, flat.size, _CHUNK):
    part = flat[i:i + _CHUNK]
    if part.dtype.kind != "f":  # bfloat16 / float8: isfinite through float32.
      part = part.astype(np.float32)
    bad += int(part.size - np.count_nonzero(np.isfinite(part)))
  return bad


def check_float_array(a: Any, name: str, source: str, *, error: type[Exception] = ValueError,
                      what: str = "tensor") -> np.ndarray:
  """Returns `a` as an array if it is real floating point and finite; otherwise raises `error`
  naming `source` and `name` (int, bool and complex dtypes, NaN and inf are refused)."""
  a = np.asarray(a)
  if not is_float_dtype(a.dtype):
    raise error(f"{source}: {what} {name!r} has dtype {a.dtype}; expected floating point "
                "(float16/bfloat16/float32/float64)")
  bad = count_nonfinite(a)
  if bad:
    raise error(f"{source}: {what} {name!r} has {bad} non-finite value(s) (NaN/inf) of {a.size}; "
                "the file is corrupt or from a diverged run")
  return a


def check_float_arrays(arrays: Mapping[str, Any], source: str, names=None, *,
                       error: type[Exception] = ValueError, what: str = "tensor") -> None:
  """check_float_array on `names` of `arrays` (all of them by default)."""
  for k in (arrays if names is None else names):
    check_float_array(arrays[k], k, source, error=error, what=what)


def check_real(value: Any, key: str, source: str, *, positive: bool = False,
               error: type[Exception] = ValueError) -> float:
  """A finite real number from a config (bools, strings, NaN and inf refused) as a float."""
  if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer,
                                                                    np.floating)):
    raise error(f"{source}: {key} = {value!r} is a {type(value).__name__}; expected a number")
  if not math.isfinite(float(value)) or (positive and not float(value) > 0):
    raise error(f"{source}: {key} = {value!r}; expected a finite number"
                + (" > 0" if positive else ""))
  return float(value)


def check_int(value: Any, key: str, source: str, lo: int, hi: int, *,
              error: type[Exception] = ValueError) -> int:
  """An int within [lo, hi] from a config (bools and floats refused)."""
  if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or not (
      lo <= value <= hi):
    raise error(f"{source}: {key} = {value!r}; expected an int in [{lo}, {hi}]")
  return int(value)


# ------------------------------------------------------------------------------ bounded reads


def read_bounded(p: epath.PathLike, max_bytes: int, *, error: type[Exception] = ValueError
                 ) -> bytes:
  """The bytes of file p, refused above max_bytes without reading further."""
  chunks, n = [], 0
  with epath.Path(p).open("rb") as f:
    while n <= max_bytes:  # In chunks: read(max_bytes + 1) allocates that much up front.
      chunk = f.read(min(1 << 24, max_bytes + 1 - n))
      if not chunk:
        break
      chunks.append(chunk)
      n += len(chunk)
  if n > max_bytes:
    raise error(f"{p}: larger than the {max_bytes}-byte limit for this kind of file")
  return b"".join(chunks)


def read_json(p: epath.PathLike, max_bytes: int = MAX_CONFIG_JSON_BYTES, *,
              error: type[Exception] = ValueError) -> Any:
  """JSON of file p read with a size bound; invalid or too deeply nested JSON names p."""
  raw = read_bounded(p, max_bytes, error=error)
  try:
    return json.loads(raw)
  except (ValueError, UnicodeDecodeError) as e:  # JSONDecodeError is a ValueError.
    raise error(f"{p}: invalid JSON ({type(e).__name__}: {e})") from None
  except RecursionError:
    raise error(f"{p}: JSON nested too deeply") from None


_DRIVE = re.compile(r"^[A-Za-z]:")


def inside(folder: epath.PathLike, name: Any, index: epath.PathLike, *,
           error: type[Exception] = ValueError) -> epath.Path:
  """folder / name for a file name read from an index in `folder`; absolute names, '..',
  URLs and drive letters are refused, so an index cannot point outside its folder. (Symlinks
  are not resolved: the Hugging Face cache links snapshot files to blobs elsewhere.)"""
  parts = re.split(r"[\\/]", name) if isinstance(name, str) else []
  if (not isinstance(name, str) or not name or name.startswith(("/", "\\")) or "://" in name
      or _DRIVE.match(name) or "\0" in name or ".." in parts or os.path.isabs(name)):
    raise error(f"{index}: file name {name!r} points outside {folder}; expected a relative "
                "name inside the folder")
  return epath.Path(folder) / name


# ---------------------------------------------------------------------------------------- npz


def _npy_header(f: BinaryIO, what: str, data_bytes: int) -> tuple[tuple[int, ...], np.dtype]:
  """(shape, dtype) of the .npy stream f (at its start) holding data_bytes in all, checked:
  no object dtype, and the header declares exactly the bytes that follow it."""
  version = np.lib.format.read_magic(f)
  read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                 else np.lib.format.read_array_header_2_0)
  shape, _, dtype = read_header(f, max_header_size=1 << 16)
  if dtype.hasobject:
    raise ValueError(f"{what} holds Python objects (dtype {dtype}); pickles are never loaded")
  declared = int(np.prod(shape, dtype=object)) * dtype.itemsize
  if declared != data_bytes - f.tell():
    raise ValueError(f"{what} declares {shape} {dtype} ({declared} bytes) but holds "
                     f"{data_bytes - f.tell()} bytes of data")
  return tuple(shape), dtype


@contextlib.contextmanager
def _damaged_member(source: str, name: str) -> Iterator[None]:
  """A zip error while reading a member of an archive that opened (its CRC-32, its local
  header) is damage to that member, named as such rather than as 'not an archive'."""
  try:
    yield
  except zipfile.BadZipFile as e:
    raise _DamagedMember(f"{source}: member {name!r} is damaged ({e})") from None


class _DamagedMember(ValueError):
  """Already names the file and member: passed on by npz_members as is."""


def npz_members(f: BinaryIO, source: str, max_bytes: int = NPZ_MAX_BYTES
                ) -> dict[str, tuple[tuple[int, ...], np.dtype] | None]:
  """{key: (shape, dtype)} of the arrays of the .npz (or bare .npy, key 'arr_0') in file object
  f (key as np.load names it: '.npy' dropped); None for members np.load returns as raw bytes.
  Whatever its name, a member that starts like an .npy must declare exactly the bytes it holds,
  and all members together at most max_bytes, before numpy allocates anything (it allocates the
  declared shape first). ValueError names source and the member. (zipfile never inflates a
  member past its declared size: it stops there and checks the CRC.)"""
  out: dict[str, Any] = {}
  total = 0
  magic = np.lib.format.MAGIC_PREFIX
  start = f.tell()
  try:
    head = f.read(len(magic))
    f.seek(start)
    if head == magic:  # A bare .npy; positions below are absolute, as f.tell() in _npy_header.
      size = f.seek(0, os.SEEK_END)
      f.seek(start)
      out["arr_0"] = _npy_header(f, "the .npy array", size)
      total = int(np.prod(out["arr_0"][0], dtype=object)) * out["arr_0"][1].itemsize
    else:
      with zipfile.ZipFile(f) as zf:
        for info in zf.infolist():
          key = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
          with _damaged_member(source, info.filename), zf.open(info) as m:
            if m.read(len(magic)) != magic:
              out[key] = None  # np.load returns such a member as bytes.
              total += info.file_size
              continue
            m.seek(0)
            out[key] = shape, dtype = _npy_header(m, f"member {info.filename!r}", info.file_size)
          total += int(np.prod(shape, dtype=object)) * dtype.itemsize
  except _DamagedMember:
    raise
  except zipfile.BadZipFile as e:
    raise ValueError(f"{source}: cannot read: neither an .npz archive nor an .npy array "
                     f"({e})") from None
  except (ValueError, OSError, EOFError, zlib.error, SyntaxError, TypeError) as e:
    raise ValueError(f"{source}: cannot read ({type(e).__name__}: {e})") from None
  finally:
    f.seek(start)
  if total > max_bytes:
    raise ValueError(f"{source}: its arrays declare {total} bytes, over the {max_bytes}-byte limit "
                     "(untrusted.NPZ_MAX_BYTES)")
  return out
