"""Generic PyTorch state_dict I/O and matching, shared by every converter in this package.

* `read_state_dict` / `read_sharded_state_dict` / `write_state_dict`: flat {PyTorch name: numpy
  array} from and to `.safetensors` (no torch needed) or `.pt`/`.pth`/`.bin` (torch imported only
  there; files are checked before `torch.load(weights_only=True)`, docs/safety.md), local or
  gs://; `read_torch_file` + `tensors_to_numpy` for torch files holding more than a state_dict.
* `match_state_dict`: a torch-named state_dict -> {Flax path: array} against the names and shapes
  a module expects, every mismatch listed (`StateDictMismatchError`, `listing`).
The name mappings themselves live in each model's converter (edm_state_dict, pixart, vae, t5).
"""
from __future__ import annotations

import collections
import io
import os
import pickle
import zipfile
from typing import Any, Callable, Mapping

import numpy as np
from etils import epath

from fdistill_jax import fileio, untrusted
from fdistill_jax.convert import edm_unpickler

StateDict = dict[str, np.ndarray]
MAX_LISTED = 40


class StateDictMismatchError(ValueError):
  """The state_dict does not match the architecture (missing/unexpected/mis-shaped keys)."""


def listing(title: str, lines: list[str]) -> list[str]:
  """One section of a mismatch report: '  title (n):' then at most MAX_LISTED entries."""
  if not lines:
    return []
  shown = lines[:MAX_LISTED]
  more = [f"    ... and {len(lines) - len(shown)} more"] if len(lines) > len(shown) else []
  return [f"  {title} ({len(lines)}):"] + [f"    {s}" for s in shown] + more


def match_state_dict(state_dict: Mapping[str, Any],
                     expected: Mapping[str, tuple[tuple[str, ...], tuple[int, ...]]], *,
                     header: str, to_flax: Callable[[tuple[str, ...], np.ndarray], np.ndarray],
                     param_dtype=np.float32,
                     adapt: Callable[[np.ndarray, tuple[int, ...]], np.ndarray] | None = None,
                     source: str = "state_dict") -> dict[tuple[str, ...], np.ndarray]:
  """{Flax path: array} from a torch-named state_dict, for the diffusers-style converters.

  expected: torch key -> (Flax path, torch shape). `adapt(a, shape)` may reshape a legacy array
  before the shape check; `to_flax(path, a)` moves a torch layout to Flax's. Raises
  StateDictMismatchError (headed by `header`) listing every missing, unexpected and mis-shaped
  key with the expected shape. Every expected tensor must be real floating point and finite
  (else ValueError naming `source` and the key).
  """
  missing = [f"{k}: expected {list(s)}" for k, (_, s) in expected.items() if k not in state_dict]
  unexpected = [f"{k}: shape {list(np.shape(v))}" for k, v in state_dict.items()
                if k not in expected]
  misshaped, flat = [], {}
  for key, (path, shape) in expected.items():
    if key not in state_dict:
      continue
    a = untrusted.check_float_array(state_dict[key], key, source)
    a = adapt(a, shape) if adapt is not None else a
    if tuple(a.shape) != shape:
      misshaped.append(f"{key}: expected {list(shape)}, found {list(a.shape)}")
      continue
    if param_dtype is not None:
      a = a.astype(param_dtype)
    flat[path] = np.ascontiguousarray(to_flax(path, a))
  if missing or unexpected or misshaped:
    lines = [header] + listing("missing keys", missing) + listing("unexpected keys", unexpected)
    raise StateDictMismatchError("\n".join(lines + listing("mis-shaped keys", misshaped)))
  return flat



# ------------------------------------------------------------------------------------- file I/O


def _import_torch(path: str):
  try:
    import torch  # pylint: disable=import-outside-toplevel
  except ImportError:
    raise ImportError(f"reading/writing {path} needs PyTorch (pip install torch==2.13.0); "
                      "use .safetensors to avoid it") from None
  return torch


class _TorchBudget:
  """Bytes the numpy copies of a torch file's tensors may take: the file's size. Views of one
  storage (or one tensor under many names) are each counted, before they are copied."""

  def __init__(self, path: str, nbytes: int):
    self.path, self.size, self.left = path, nbytes, nbytes

  def take(self, nbytes: int) -> None:
    if nbytes > self.left:
      raise ValueError(f"{self.path}: its tensors hold more than the {self.size}-byte file "
                       "(views sharing one storage, or one tensor under many names); expected "
                       "one storage per tensor")
    self.left -= nbytes


def _torch_to_numpy(torch, t, key: str, path: str, budget: _TorchBudget) -> np.ndarray:
  if not isinstance(t, torch.Tensor):
    raise ValueError(f"{path}: entry {key!r} is a {type(t).__name__}, not a tensor")
  if t.layout != torch.strided or t.is_meta or t.is_quantized:
    raise ValueError(f"{path}: tensor {key!r} is {'meta' if t.is_meta else t.layout}; expected "
                     "a dense (strided) tensor with data")
  storage_bytes = t.untyped_storage().nbytes()
  if t.numel() * t.element_size() > storage_bytes or t.storage_offset() < 0 or any(
      s < 0 for s in t.stride()):
    raise ValueError(f"{path}: tensor {key!r} of size {list(t.shape)} (stride {list(t.stride())}) "
                     f"views more elements than its {storage_bytes}-byte storage holds "
                     "(stride-0 or overlapping view)")
  budget.take(t.numel() * t.element_size())  # Before the copy below.
  t = t.detach().cpu()
  if t.dtype == torch.bfloat16:
    import ml_dtypes  # pylint: disable=import-outside-toplevel
    return t.contiguous().view(torch.int16).numpy().view(ml_dtypes.bfloat16)
  return t.contiguous().numpy()


class _LegacyScan(pickle.Unpickler):
  """Walks the object pickle of a legacy (pre-zip) torch.save file without building anything,
  summing the storage sizes it declares: torch allocates those before reading any data."""

  def __init__(self, f):
    super().__init__(f)
    self.declared = 0

  def find_class(self, module, name):
    if module == "torch" and name.endswith("Storage"):
      if name not in _LEGACY_ITEMSIZE:
        raise edm_unpickler.UnsafePickleError(f"unsupported storage type torch.{name}")
      return _LEGACY_ITEMSIZE[name]
    if (module, name) == ("collections", "OrderedDict"):
      return collections.OrderedDict
    if module == "torch._utils" and name.startswith("_rebuild_"):
      return lambda *args, **kwargs: None
    raise edm_unpickler.UnsafePickleError(f"global {module}.{name} is not expected in a "
                                          "state_dict")

  def persistent_load(self, pid):
    if not (isinstance(pid, tuple) and len(pid) >= 5 and isinstance(pid[1], int)
            and isinstance(pid[4], int) and pid[4] >= 0):
      raise pickle.UnpicklingError(f"malformed storage id {pid!r:.200}")
    self.declared += pid[1] * pid[4]


_LEGACY_ITEMSIZE = {"HalfStorage": 2, "BFloat16Storage": 2, "FloatStorage": 4,
                    "DoubleStorage": 8, "LongStorage": 8, "IntStorage": 4, "ShortStorage": 2,
                    "CharStorage": 1, "ByteStorage": 1, "BoolStorage": 1}


def _check_torch_container(path: str, data: bytes) -> None:
  """Storages torch.load would allocate must fit in the file, checked before it runs: zip files
  (torch >= 1.6) may hold only uncompressed members (torch.save never compresses; a deflated
  one could inflate to gigabytes); legacy files are scanned for their declared storage sizes."""
  if data[:4] == b"PK\x03\x04":
    try:
      with zipfile.ZipFile(io.BytesIO(data)) as zf:
        infos = zf.infolist()
    except zipfile.BadZipFile as e:
      raise ValueError(f"{path}: malformed torch zip file ({e})") from None
    for info in infos:
      if info.compress_type != zipfile.ZIP_STORED or info.file_size > len(data):
        raise ValueError(f"{path}: member {info.filename!r} is compressed ({info.file_size} "
                         "bytes declared); torch.save stores members uncompressed")
    return
  f = io.BytesIO(data)
  try:
    for _ in range(3):  # Magic number, protocol version, system info.
      _LegacyScan(f).load()
    scan = _LegacyScan(f)
    scan.load()
  except Exception as e:  # pylint: disable=broad-except
    raise ValueError(f"{path}: not a readable torch.save file ({type(e).__name__}: "
                     f"{str(e)[:200]})") from None
  if scan.declared > len(data):
    raise ValueError(f"{path}: its storages declare {scan.declared} bytes, more than the "
                     f"{len(data)}-byte file (legacy torch.save format)")


def read_torch_file(path: str) -> tuple[Any, Any, _TorchBudget]:
  """(torch, the object torch.load(weights_only=True) returns, a budget of the file's size for
  tensors_to_numpy) of a .pt/.pth/.bin, local or gs://, checked as _check_torch_container says."""
  torch = _import_torch(path)
  data = epath.Path(path).read_bytes()
  _check_torch_container(path, data)
  try:
    obj = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
  except Exception as e:
    raise ValueError(f"{path}: cannot be read by torch.load(weights_only=True) "
                     f"({type(e).__name__}: {e}); truncated or not a state_dict file?") from e
  return torch, obj, _TorchBudget(path, len(data))


def tensors_to_numpy(torch, tensors: Mapping, path: str, budget: _TorchBudget) -> StateDict:
  """{name: numpy array} of a state_dict from read_torch_file; sparse, meta, quantized and
  stride-0 tensors are refused, and the copies may not exceed the budget."""
  return {str(k): _torch_to_numpy(torch, v, k, path, budget) for k, v in tensors.items()}


def read_state_dict(path: str | os.PathLike) -> StateDict:
  """Read a flat state_dict from `.safetensors` or `.pt`/`.pth`/`.bin` (torch.load with
  weights_only=True; torch is imported only here), local or gs://. Returns numpy arrays by
  PyTorch name."""
  path = os.fspath(path)
  if not epath.Path(path).is_file():
    raise FileNotFoundError(f"no such file: {path}")
  ext = epath.Path(path).suffix.lower()
  if ext == ".safetensors":
    try:  # safetensors itself refuses offsets outside the file and overlapping tensors.
      return fileio.load_safetensors(path)[0]
    except Exception as e:  # safetensors raises its own error types.
      raise ValueError(f"{path}: truncated or corrupt .safetensors file ({type(e).__name__}: "
                       f"{e})") from e
  if ext in (".pt", ".pth", ".bin"):
    torch, obj, budget = read_torch_file(path)
    if not isinstance(obj, Mapping):
      raise ValueError(f"{path}: expected a state_dict (name -> tensor), got {type(obj).__name__}")
    return tensors_to_numpy(torch, obj, path, budget)
  raise ValueError(f"{path}: unsupported extension {ext!r} (expected .safetensors, .pt, .pth, "
                   ".bin; EDM snapshots .pkl go through fdistill_jax.convert.edm_pickle)")


MAX_INDEX_JSON_BYTES = 16 << 20  # A shard index lists tensor names: ~100 KiB for an 8B model.


def read_sharded_state_dict(folder: str | os.PathLike, index: str | os.PathLike) -> StateDict:
  """The state_dict of the shards listed by a safetensors `*.index.json` ({"weight_map":
  {tensor: shard file}}) in `folder`. Shard names must stay inside the folder (absolute paths
  and '..' are refused by name), and each shard must hold exactly the tensors the index lists."""
  folder, index = os.fspath(folder), os.fspath(index)
  cfg = untrusted.read_json(index, MAX_INDEX_JSON_BYTES)
  weight_map = cfg.get("weight_map") if isinstance(cfg, dict) else None
  if not isinstance(weight_map, dict) or not all(
      isinstance(k, str) and isinstance(v, str) for k, v in weight_map.items()):
    raise ValueError(f"{index}: not a safetensors index (needs 'weight_map': {{tensor name: "
                     "shard file name}})")
  shards = {shard: untrusted.inside(folder, shard, index) for shard in set(weight_map.values())}
  out: StateDict = {}
  for shard in sorted(shards):
    part = read_state_dict(shards[shard])
    listed = {k for k, s in weight_map.items() if s == shard}
    if set(part) != listed:
      raise ValueError(f"{index}: shard {shard} holds {sorted(set(part) ^ listed)[:10]} "
                       "differently from the index")
    out.update(part)
  return out


def write_state_dict(path: str | os.PathLike, state_dict: Mapping[str, np.ndarray],
                     metadata: Mapping[str, str] | None = None) -> None:
  """Write a state_dict as `.safetensors` (with optional string `metadata`) or `.pt`, to a local
  or gs:// path. `.pt` stores no metadata."""
  path = os.fspath(path)
  ext = epath.Path(path).suffix.lower()
  arrays = {k: np.ascontiguousarray(v) for k, v in state_dict.items()}
  if ext == ".safetensors":
    fileio.save_safetensors(path, arrays, metadata=dict(metadata) if metadata else None)
  elif ext in (".pt", ".pth"):
    torch = _import_torch(path)
    buf = io.BytesIO()
    torch.save({k: torch.from_numpy(v.copy()) for k, v in arrays.items()}, buf)
    fileio.write_bytes(path, buf.getvalue())
  else:
    raise ValueError(f"{path}: unsupported extension {ext!r} (expected .safetensors or .pt)")
