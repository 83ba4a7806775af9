"""The one path layer: every workdir file and input path goes through etils `epath` (as orbax does),
so `gs://bucket/run` works wherever `/local/run` does.

epath picks the backend by prefix (local: os; gs://: TensorFlow's gfile when TF is installed,
else fsspec/gcsfs). Libraries that want a file name (np.savez, PIL, safetensors) get a file
object from `Path.open` or bytes instead.

Atomicity. `write_bytes` never leaves a half-written file under the final name:
* local paths: write `<name>.tmp`, then os-level rename (atomic on POSIX);
* object stores (gs://): an object becomes visible only when its upload completes, so writing the
  final name directly is already all-or-nothing for one file. A "rename" there is copy + delete
  (two operations, not atomic) and so is avoided. Moving a *directory* (`move`) on GCS copies
  every object then deletes the source: a crash in between leaves both copies, never neither.

Caches (`write_cache` / `read_cache`): a file this code rebuilds whenever it is missing (the toy's
pretrained denoiser, the digits classifier) is one self-contained msgpack envelope holding the
payload, the settings it was made for and the payload's sha256, so a copy of the one file carries
its check and a flipped byte, a foreign file or other settings are detected (`CacheError`) and
the caller rebuilds instead of using it.
"""
from __future__ import annotations

import hashlib
import io
import json
import zipfile
import zlib
from typing import Any

import numpy as np
from etils import epath

PathLike = epath.PathLike


def path(p: PathLike) -> epath.Path:
  """epath.Path of a local path or URI (gs://, s3://)."""
  return epath.Path(p)


def is_local(p: PathLike) -> bool:
  """True for a local filesystem path, False for gs:// and other object stores."""
  return "://" not in str(p)


def makedirs(p: PathLike) -> epath.Path:
  """Creates folder p (and parents); a no-op on object stores, where folders are key prefixes."""
  p = path(p)
  p.mkdir(parents=True, exist_ok=True)
  return p


def write_bytes(p: PathLike, data: bytes) -> None:
  """Writes `data` to p all-or-nothing (see module docstring); creates the parent folder."""
  p = path(p)
  makedirs(p.parent)
  if not is_local(p):
    p.write_bytes(data)  # One object upload: visible only once complete.
    return
  tmp = p.parent / (p.name + ".tmp")
  tmp.write_bytes(data)
  tmp.replace(p)  # os.replace: atomic on POSIX.


def write_text(p: PathLike, text: str) -> None:
  write_bytes(p, text.encode("utf-8"))


def write_json(p: PathLike, obj: Any, indent: int | None = 1) -> None:
  write_text(p, json.dumps(obj, indent=indent))


def read_json(p: PathLike) -> Any:
  return json.loads(path(p).read_text(encoding="utf-8"))


def save_npz(p: PathLike, **arrays: np.ndarray) -> None:
  """np.savez into p (the exact name: no '.npz' is appended), all-or-nothing."""
  buf = io.BytesIO()
  np.savez(buf, **arrays)
  write_bytes(p, buf.getvalue())


def load_npz(p: PathLike, max_bytes: int | None = None) -> dict[str, np.ndarray]:
  """{name: array} of an .npz (or {'arr_0': a} of an .npy) at p; never unpickles. Every member's
  declared size is checked against what it holds, and their sum against max_bytes (default
  untrusted.NPZ_MAX_BYTES), before numpy allocates it; errors name p and the member."""
  from fdistill_jax import untrusted  # pylint: disable=import-outside-toplevel
  buf = io.BytesIO(path(p).read_bytes())
  untrusted.npz_members(buf, str(p), untrusted.NPZ_MAX_BYTES if max_bytes is None else max_bytes)
  try:  # zipfile checks each member's CRC-32 as np.load reads it to the end: a flipped byte.
    with np.load(buf, allow_pickle=False) as z:
      return {k: z[k] for k in z.files} if hasattr(z, "files") else {"arr_0": np.asarray(z)}
  except (ValueError, OSError, EOFError, KeyError, zipfile.BadZipFile, zlib.error) as e:
    raise ValueError(f"{p}: cannot read as .npz/.npy ({type(e).__name__}: {e})") from e


# ------------------------------------------------------------------------------------- caches
CACHE_FORMAT = "fdistill_jax.cache/1"
MAX_CACHE_BYTES = 16 << 30  # Read bound of a cache file (the ones written here are megabytes).


class CacheError(ValueError):
  """A cache file that must not be used (damaged, foreign, or made for other settings); the
  message names the file and why, and the caller rebuilds it."""


def _cache_key_text(key: Any) -> str:
  return json.dumps(key, sort_keys=True)  # Tuples and lists alike, as read back from JSON.


def write_cache(p: PathLike, payload: bytes, key: Any) -> None:
  """Writes cache file p (all-or-nothing): `payload` with the JSON-able settings `key` it was
  made for and its sha256 (see module docstring)."""
  import msgpack  # pylint: disable=import-outside-toplevel  (flax's dependency)
  write_bytes(p, msgpack.packb({"format": CACHE_FORMAT, "key": _cache_key_text(key),
                                "sha256": hashlib.sha256(payload).hexdigest(),
                                "payload": bytes(payload)}))


def read_cache(p: PathLike, key: Any, max_bytes: int = MAX_CACHE_BYTES) -> bytes:
  """The payload of cache file p if it is an envelope of write_cache for settings `key` whose
  payload matches its sha256; otherwise CacheError naming p and what differs."""
  import msgpack  # pylint: disable=import-outside-toplevel
  from fdistill_jax import untrusted  # pylint: disable=import-outside-toplevel
  data = untrusted.read_bounded(p, max_bytes, error=CacheError)
  try:
    env = msgpack.unpackb(data, raw=False, strict_map_key=True)
  except Exception as e:  # pylint: disable=broad-except  (msgpack's errors vary by damage)
    raise CacheError(f"{p}: not a cache file of this code ({type(e).__name__}: "
                     f"{str(e)[:120]})") from None
  if not isinstance(env, dict) or env.get("format") != CACHE_FORMAT:
    raise CacheError(f"{p}: not a {CACHE_FORMAT} cache file (written by an older version, or "
                     "damaged)")
  payload, digest = env.get("payload"), env.get("sha256")
  if not isinstance(payload, bytes) or not isinstance(digest, str):
    raise CacheError(f"{p}: damaged cache file (no payload bytes or sha256 string)")
  if hashlib.sha256(payload).hexdigest() != digest:
    raise CacheError(f"{p}: payload fails its sha256 (the file changed after it was written)")
  if env.get("key") != _cache_key_text(key):
    raise CacheError(f"{p}: made for other settings ({str(env.get('key'))[:200]}; this run "
                     f"wants {_cache_key_text(key)[:200]})")
  return payload


def save_safetensors(p: PathLike, arrays: dict[str, np.ndarray],
                     metadata: dict[str, str] | None = None) -> None:
  from safetensors.numpy import save  # pylint: disable=import-outside-toplevel
  write_bytes(p, save(arrays, metadata=metadata))


def _safetensors_dtype(name: str) -> np.dtype:
  import ml_dtypes  # pylint: disable=import-outside-toplevel
  types = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": ml_dtypes.bfloat16,
           "F8_E4M3": ml_dtypes.float8_e4m3fn, "F8_E5M2": ml_dtypes.float8_e5m2,
           "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8, "U64": np.uint64,
           "U32": np.uint32, "U16": np.uint16, "U8": np.uint8, "BOOL": np.bool_,
           "C64": np.complex64}
  if name not in types:
    raise ValueError(f"unsupported safetensors dtype {name!r}")
  return np.dtype(types[name]).newbyteorder("<")  # safetensors stores little-endian.


def load_safetensors(p: PathLike) -> tuple[dict[str, np.ndarray], dict[str, str]]:
  """({name: array}, header metadata) of a .safetensors file at p (local or gs://), bfloat16
  included (safetensors.numpy.load refuses it). The bytes are read once; safetensors itself
  validates the header (offsets inside the file, no overlapping tensors)."""
  from safetensors import deserialize  # pylint: disable=import-outside-toplevel
  data = path(p).read_bytes()
  arrays = {name: np.frombuffer(t["data"], _safetensors_dtype(t["dtype"])).reshape(t["shape"])
            for name, t in deserialize(data)}
  return arrays, safetensors_metadata(data)


MAX_SAFETENSORS_HEADER = 100 << 20  # safetensors' own limit on the JSON header.


def safetensors_metadata(data: bytes) -> dict[str, str]:
  """The `__metadata__` of a safetensors file's bytes (or its first bytes: 8-byte little-endian
  header length, then the JSON header)."""
  if len(data) < 8:
    raise ValueError(f"{len(data)} bytes is too short for a safetensors header")
  n = int.from_bytes(data[:8], "little")
  if n > min(len(data) - 8, MAX_SAFETENSORS_HEADER):
    raise ValueError(f"safetensors header of {n} bytes exceeds the {len(data)} bytes read")
  header = json.loads(data[8:8 + n])
  if not isinstance(header, dict):
    raise ValueError(f"safetensors header is a JSON {type(header).__name__}, not an object")
  meta = header.get("__metadata__") or {}
  return {str(k): str(v) for k, v in meta.items()}


def read_safetensors_metadata(p: PathLike) -> dict[str, str]:
  """The `__metadata__` of the .safetensors at p, reading only its header (not the tensors)."""
  with path(p).open("rb") as f:
    head = f.read(8)
    n = int.from_bytes(head, "little") if len(head) == 8 else 0
    return safetensors_metadata(head + f.read(min(n, MAX_SAFETENSORS_HEADER)))


def save_image(img, p: PathLike, format: str = "PNG") -> None:  # pylint: disable=redefined-builtin
  """Saves a PIL image to p (local or gs://)."""
  buf = io.BytesIO()
  img.save(buf, format=format)
  write_bytes(p, buf.getvalue())


def move(src: PathLike, dst: PathLike) -> None:
  """Moves a file or folder tree. Local: one rename (atomic). Object stores: copy each object,
  then delete the source (not atomic: a crash in between leaves both copies)."""
  src, dst = path(src), path(dst)
  makedirs(dst.parent)
  if is_local(src) and is_local(dst):
    src.rename(dst)
    return
  _copy_tree(src, dst)
  if src.is_dir():
    src.rmtree()
  else:
    src.unlink()


def _copy_tree(src: epath.Path, dst: epath.Path) -> None:
  # iterdir, not walk: fsspec's walk yields roots without their gs:// prefix.
  if not src.is_dir():
    src.copy(dst)
    return
  makedirs(dst)
  for child in src.iterdir():
    _copy_tree(child, dst / child.name)
