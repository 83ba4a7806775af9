"""Restricted, execution-free unpickler for NVIDIA EDM `.pkl` snapshots: the safety boundary.

Everything a pickle may turn into is decided here; `edm_pickle.py` then walks the inert records
into a state_dict. EDM pickles its `@persistent_class` modules as
`_reconstruct_persistent_obj(meta)` where `meta` carries the defining module's whole source
(`module_src`), which EDM's own loader `exec`s. This unpickler instead resolves every global
through a fixed allowlist:

* `torch_utils.persistence._reconstruct_persistent_obj` -> `PersistentRecord` (class_name,
  state, init args/kwargs); `module_src` is dropped, never executed or compiled;
* `torch._utils._rebuild_tensor_v2` / `_rebuild_tensor` / `_rebuild_parameter(_with_state)` and
  `torch.storage._load_from_bytes` -> numpy arrays; the legacy `torch.save` stream inside each
  storage is decoded by hand (Half/BFloat16/Float/Double and integer/bool storages), and all
  tensors together may materialise at most a byte budget (the file's size);
* `collections.OrderedDict`, `builtins.set/frozenset`;
  `torch.nn.modules.container.ModuleDict/ModuleList/Sequential` -> inert records of their
  `__dict__`; `dnnlib.util.EasyDict` -> dict;
* `numpy.dtype` and `numpy.(_)core.multiarray.scalar` for numeric dtypes only.

Any other global (os.system, builtins.eval, subprocess.Popen, ...) raises `UnsafePickleError`
naming it, before anything is called.
"""
from __future__ import annotations

import collections
import dataclasses
import functools
import io
import pickle
from typing import Any, BinaryIO

import numpy as np


class UnsafePickleError(pickle.UnpicklingError):
  """The pickle references a global outside the allowlist."""


@dataclasses.dataclass
class PersistentRecord:
  """What an EDM `@persistent_class` object is reduced to: its class name and `__dict__`."""
  class_name: str
  state: dict
  version: int

  @property
  def init_kwargs(self) -> dict:
    return dict(self.state.get("_init_kwargs") or {})

  @property
  def init_args(self) -> tuple:
    return tuple(self.state.get("_init_args") or ())


class ContainerRecord:
  """Inert stand-in for torch.nn ModuleDict/ModuleList/Sequential (NEWOBJ + BUILD(__dict__))."""
  class_name = "Container"

  def __new__(cls, *args, **kwargs):
    del args, kwargs  # NEWOBJ passes the class only; nothing of torch runs.
    obj = super().__new__(cls)
    obj.state = {}
    return obj

  def __setstate__(self, state):
    if not isinstance(state, dict):
      raise pickle.UnpicklingError(f"{self.class_name}: state is a {type(state).__name__}")
    self.state = state


def _container(class_name: str) -> type:
  return type(class_name + "Record", (ContainerRecord,), {"class_name": class_name})


class _EasyDict(dict):
  """dnnlib.util.EasyDict stand-in: a plain dict that tolerates BUILD."""

  def __setstate__(self, state):
    if isinstance(state, dict):
      self.update(state)


def _reconstruct_persistent_obj(meta) -> PersistentRecord:
  if not isinstance(meta, dict):
    raise pickle.UnpicklingError(f"persistent object meta is a {type(meta).__name__}, not a dict")
  if meta.get("type") != "class":
    raise pickle.UnpicklingError(f"unsupported persistent object type {meta.get('type')!r}")
  name, state = meta.get("class_name"), meta.get("state")
  if not isinstance(name, str) or not isinstance(state, dict):
    raise pickle.UnpicklingError("persistent object meta lacks class_name (str) / state (dict)")
  # meta['module_src'] is deliberately ignored: it is code, and we never run it.
  return PersistentRecord(class_name=name, state=dict(state), version=meta.get("version"))


# ------------------------------------------------------------------------------------- tensors

_STORAGE_DTYPES = {
    "HalfStorage": np.dtype("<f2"), "FloatStorage": np.dtype("<f4"),
    "DoubleStorage": np.dtype("<f8"), "LongStorage": np.dtype("<i8"),
    "IntStorage": np.dtype("<i4"), "ShortStorage": np.dtype("<i2"),
    "CharStorage": np.dtype("i1"), "ByteStorage": np.dtype("u1"), "BoolStorage": np.dtype("?"),
    "BFloat16Storage": None,  # ml_dtypes.bfloat16, imported on use.
}
_LEGACY_MAGIC = 0x1950a86a20f9469cfc6c
_LEGACY_PROTOCOL = 1001


def _storage_dtype(name: str) -> np.dtype:
  if name == "BFloat16Storage":
    import ml_dtypes  # pylint: disable=import-outside-toplevel
    return np.dtype(ml_dtypes.bfloat16)
  return _STORAGE_DTYPES[name]


@dataclasses.dataclass(frozen=True)
class _StorageType:
  name: str


@dataclasses.dataclass
class _StorageRef:
  key: str
  dtype: np.dtype
  numel: int


class _StorageUnpickler(pickle.Unpickler):
  """Reads the object pickle of a legacy torch.save stream: only torch.<X>Storage globals."""

  def find_class(self, module, name):
    if module == "torch" and name in _STORAGE_DTYPES:
      return _StorageType(name)
    raise UnsafePickleError(f"refusing global {module}.{name} inside a tensor storage stream")

  def persistent_load(self, pid):
    if not (isinstance(pid, tuple) and len(pid) in (5, 6) and pid[0] == "storage"):
      raise pickle.UnpicklingError(f"unexpected persistent id {pid!r} in a storage stream")
    stype, key, _, numel = pid[1:5]
    if len(pid) == 6 and pid[5] is not None:
      raise pickle.UnpicklingError("storage views (legacy view_metadata) are not supported")
    if not isinstance(stype, _StorageType) or not isinstance(numel, int) or numel < 0:
      raise pickle.UnpicklingError(f"malformed storage id {pid!r}")
    return _StorageRef(str(key), _storage_dtype(stype.name), numel)


def _load_from_bytes(b: bytes) -> np.ndarray:
  """Decode torch's legacy (non-zip) torch.save stream of one storage into a 1-D numpy array."""
  if not isinstance(b, (bytes, bytearray)):
    raise pickle.UnpicklingError("storage payload is not bytes")
  f = io.BytesIO(b)
  magic = _StorageUnpickler(f).load()
  protocol = _StorageUnpickler(f).load()
  sys_info = _StorageUnpickler(f).load()
  if magic != _LEGACY_MAGIC or protocol != _LEGACY_PROTOCOL:
    raise pickle.UnpicklingError(f"not a legacy torch storage stream (magic {magic!r}, "
                                 f"protocol {protocol!r})")
  if not (isinstance(sys_info, dict) and sys_info.get("little_endian", False)):
    raise pickle.UnpicklingError(f"only little-endian storages are supported, got {sys_info!r}")
  ref = _StorageUnpickler(f).load()
  keys = _StorageUnpickler(f).load()
  if not isinstance(ref, _StorageRef) or not isinstance(keys, list):
    raise pickle.UnpicklingError("storage stream does not hold a single storage")
  arrays = {}
  for key in keys:
    header = f.read(8)
    if len(header) != 8:
      raise pickle.UnpicklingError("storage stream truncated (size header)")
    numel = int(np.frombuffer(header, "<i8")[0])
    nbytes, pos = numel * ref.dtype.itemsize, f.tell()
    if numel < 0 or pos + nbytes > len(b):
      raise pickle.UnpicklingError(f"storage {key} truncated: {max(0, len(b) - pos)} of {nbytes} "
                                   "bytes")
    # A read-only view of the payload, not a copy: a pickle may memoise one big payload and
    # decode it thousands of times, and only the tensors built from it count against the budget.
    arrays[str(key)] = np.frombuffer(b, ref.dtype, count=numel, offset=pos)
    f.seek(pos + nbytes)
  if ref.key not in arrays or arrays[ref.key].size != ref.numel:
    raise pickle.UnpicklingError(f"storage {ref.key} missing or of the wrong size")
  return arrays[ref.key]


class _Budget:
  """Bytes of tensors a load may still materialise: the file's size. A stride-0 or overlapping
  view (or one storage referenced many times) could otherwise turn a few bytes into gigabytes."""

  def __init__(self, nbytes: int):
    self.left = int(nbytes)

  def take(self, nbytes: int, what: str) -> None:
    if nbytes > self.left:
      raise pickle.UnpicklingError(f"{what} would materialise {nbytes} bytes, more than the file "
                                   f"holds ({self.left} bytes of budget left)")
    self.left -= nbytes


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False,
                       backward_hooks=None, metadata=None, *, budget: _Budget | None = None
                       ) -> np.ndarray:
  del requires_grad, backward_hooks, metadata
  if not isinstance(storage, np.ndarray) or storage.ndim != 1:
    raise pickle.UnpicklingError("tensor storage did not decode to an array")
  if not all(isinstance(v, (tuple, list)) for v in (size, stride)) or len(size) > 32:
    raise pickle.UnpicklingError("tensor size/stride must be tuples of at most 32 ints")
  if not all(isinstance(v, int) and not isinstance(v, bool)
             for v in (storage_offset, *size, *stride)):
    raise pickle.UnpicklingError("tensor offset/size/stride must be ints")
  size, stride, offset = tuple(size), tuple(stride), storage_offset
  if len(size) != len(stride) or offset < 0 or any(s < 0 for s in size + stride):
    raise pickle.UnpicklingError(f"bad tensor geometry size={size} stride={stride} "
                                 f"offset={offset}")
  numel = int(np.prod(size, dtype=object))
  # A view never holds more elements than its storage: stride-0 / overlapping views are refused.
  if numel > storage.size:
    raise pickle.UnpicklingError(f"tensor of size {size} has {numel} elements but its storage "
                                 f"only {storage.size} (stride-0 or overlapping view)")
  if budget is not None:
    budget.take(numel * storage.itemsize, f"tensor of size {size}")
  if numel == 0:
    return np.zeros(size, storage.dtype)
  last = offset + sum((n - 1) * s for n, s in zip(size, stride))
  if last >= storage.size:
    raise pickle.UnpicklingError(f"tensor of size {size} (offset {offset}, stride {stride}) "
                                 f"exceeds its storage ({storage.size} elements)")
  view = np.lib.stride_tricks.as_strided(
      storage[offset:], shape=size, strides=tuple(s * storage.itemsize for s in stride),
      writeable=False)
  return np.array(view)


def _rebuild_tensor(storage, storage_offset, size, stride, *, budget: _Budget | None = None
                    ) -> np.ndarray:
  return _rebuild_tensor_v2(storage, storage_offset, size, stride, budget=budget)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None) -> np.ndarray:
  del requires_grad, backward_hooks
  return data


def _rebuild_parameter_with_state(data, requires_grad, backward_hooks, state) -> np.ndarray:
  del requires_grad, backward_hooks, state
  return data


# --------------------------------------------------------------------------------------- numpy


def _numeric_dtype(d) -> np.dtype:
  dt = np.dtype(d) if isinstance(d, (str, np.dtype)) else None
  if dt is None or dt.kind not in "biufc":
    raise UnsafePickleError(f"refusing numpy dtype {d!r} (only numeric dtypes are allowed)")
  return dt


def _np_dtype(obj, align=False, copy=False):
  del align, copy
  return _numeric_dtype(obj)


def _np_scalar(dtype, data=None):
  dt = _numeric_dtype(dtype)
  if not isinstance(data, bytes) or len(data) != dt.itemsize:
    raise pickle.UnpicklingError(f"numpy scalar of {dt} needs {dt.itemsize} bytes")
  return np.frombuffer(data, dt)[0]


_ALLOWED = {
    ("torch_utils.persistence", "_reconstruct_persistent_obj"): _reconstruct_persistent_obj,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter_with_state,
    ("torch.storage", "_load_from_bytes"): _load_from_bytes,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch.nn.modules.container", "ModuleDict"): _container("ModuleDict"),
    ("torch.nn.modules.container", "ModuleList"): _container("ModuleList"),
    ("torch.nn.modules.container", "Sequential"): _container("Sequential"),
    ("dnnlib.util", "EasyDict"): _EasyDict,
    # Protocol-2 pickles spell sets (e.g. _non_persistent_buffers_set) as REDUCE(set, [list]).
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("numpy", "dtype"): _np_dtype,
    ("numpy._core.multiarray", "scalar"): _np_scalar,
    ("numpy.core.multiarray", "scalar"): _np_scalar,
}


class RestrictedUnpickler(pickle.Unpickler):
  """pickle.Unpickler whose globals come only from the EDM snapshot allowlist; tensors may
  materialise at most `max_tensor_bytes` in total (default: unbounded)."""

  def __init__(self, f: BinaryIO, max_tensor_bytes: int | None = None):
    super().__init__(f)
    self._budget = None if max_tensor_bytes is None else _Budget(max_tensor_bytes)

  def find_class(self, module, name):
    fn = _ALLOWED.get((module, name))
    if fn is None:
      raise UnsafePickleError(f"refusing to load global '{module}.{name}': not on the EDM "
                              "snapshot allowlist (the file may be malicious or not an EDM pkl)")
    # Hand out fresh objects: a BUILD opcode applied to a global can set attributes on it, and
    # that must not leak into this module (or into later loads).
    if fn in (collections.OrderedDict, set, frozenset):  # Builtin types refuse setattr.
      return fn
    if isinstance(fn, type):
      return type(fn.__name__, (fn,), {})
    if fn in (_rebuild_tensor_v2, _rebuild_tensor):
      return functools.partial(fn, budget=self._budget)
    return functools.partial(fn)


def restricted_load(f: BinaryIO, source: str = "<stream>", max_tensor_bytes: int | None = None
                    ) -> Any:
  """Unpickle with the allowlist. Truncated/corrupt data -> ValueError naming `source`;
  disallowed globals -> UnsafePickleError naming the global and `source`."""
  try:
    return RestrictedUnpickler(f, max_tensor_bytes).load()
  except UnsafePickleError as e:
    raise UnsafePickleError(f"{source}: {e}") from None
  except (EOFError, pickle.UnpicklingError, ValueError, TypeError, KeyError, IndexError,
          AttributeError, MemoryError, OverflowError, UnicodeDecodeError, RecursionError) as e:
    raise ValueError(f"{source}: truncated or corrupt pickle ({type(e).__name__}: {e})") from e
