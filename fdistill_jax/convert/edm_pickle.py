"""Execution-free reader for NVIDIA EDM `.pkl` snapshots (`network-snapshot-*.pkl`, the released
`edm-*.pkl`), without torch and without EDM's source.

EDM pickles its `@persistent_class` modules as `_reconstruct_persistent_obj(meta)` where `meta`
carries the defining module's whole source (`module_src`), which EDM's own loader `exec`s. This
reader instead resolves every global through a fixed allowlist:

* `torch_utils.persistence._reconstruct_persistent_obj` -> `PersistentRecord` (class_name,
  state, init args/kwargs); `module_src` is dropped, never executed or compiled;
* `torch._utils._rebuild_tensor_v2` / `_rebuild_tensor` / `_rebuild_parameter(_with_state)` and
  `torch.storage._load_from_bytes` -> numpy arrays; the legacy `torch.save` stream inside each
  storage is decoded by hand (Half/BFloat16/Float/Double and integer/bool storages);
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
import os
import pickle
from typing import Any, BinaryIO

import numpy as np
from etils import epath


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
    nbytes = numel * ref.dtype.itemsize
    raw = f.read(nbytes)
    if numel < 0 or len(raw) != nbytes:
      raise pickle.UnpicklingError(f"storage {key} truncated: {len(raw)} of {nbytes} bytes")
    arrays[str(key)] = np.frombuffer(raw, ref.dtype)
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


# ------------------------------------------------------------------------------------ walking


def _state(obj) -> dict:
  if isinstance(obj, (PersistentRecord, ContainerRecord)):
    return obj.state
  raise ValueError(f"expected a torch module record, found {type(obj).__name__}")


MAX_MODULE_DEPTH = 64  # EDM's deepest path (model.enc.<res>_block<i>.<layer>) is 4 deep.


def _mapping(state: dict, key: str, where: str) -> dict:
  v = state.get(key) or {}
  if not isinstance(v, dict):
    raise ValueError(f"{where or '<root>'}: {key} is a {type(v).__name__}, not a dict")
  return v


def module_state_dict(obj, prefix: str = "", _seen: tuple = ()) -> dict[str, np.ndarray]:
  """Flat state_dict of a record tree, with torch's names and order (params, buffers, children;
  None entries and non-persistent buffers skipped). Cycles and nesting deeper than
  MAX_MODULE_DEPTH raise ValueError."""
  if any(obj is o for o in _seen):
    raise ValueError(f"{prefix or '<root>'}: the module tree contains a cycle")
  if len(_seen) >= MAX_MODULE_DEPTH:
    raise ValueError(f"{prefix}: modules nested deeper than {MAX_MODULE_DEPTH}")
  state = _state(obj)
  out: dict[str, np.ndarray] = {}
  skip = state.get("_non_persistent_buffers_set") or ()
  if not isinstance(skip, (set, frozenset, list, tuple)):
    raise ValueError(f"{prefix or '<root>'}: _non_persistent_buffers_set is a "
                     f"{type(skip).__name__}")
  skip = {s for s in skip if isinstance(s, str)}
  for group in ("_parameters", "_buffers"):
    for name, t in _mapping(state, group, prefix).items():
      if t is None or (group == "_buffers" and name in skip):
        continue
      if not isinstance(name, str) or not isinstance(t, np.ndarray):
        raise ValueError(f"{prefix}{name!s:.80} is a {type(t).__name__}, not a tensor")
      out[prefix + name] = t
  for name, child in _mapping(state, "_modules", prefix).items():
    if not isinstance(name, str):
      raise ValueError(f"{prefix}: child module name is a {type(name).__name__}")
    if child is not None:
      out.update(module_state_dict(child, f"{prefix}{name}.", _seen + (obj,)))
  return out


def _plain(v, depth: int = 0):
  """numpy scalars -> Python numbers, EasyDict -> dict, recursively (constructor kwargs nest at
  most 2 deep; deeper, or cyclic, values raise ValueError)."""
  if depth > 8:
    raise ValueError("constructor kwargs nested deeper than 8 (or cyclic)")
  if isinstance(v, np.generic):
    return v.item()
  if isinstance(v, dict):
    return {k: _plain(x, depth + 1) for k, x in v.items()}
  if isinstance(v, (list, tuple)):
    return type(v)(_plain(x, depth + 1) for x in v)
  return v


_EDM_PRECOND_POSITIONAL = ("img_resolution", "img_channels", "label_dim", "use_fp16", "sigma_min",
                           "sigma_max", "sigma_data", "model_type")


def precond_kwargs_of(record: PersistentRecord, source: str = "<pkl>") -> dict:
  """EDMPrecond constructor kwargs (positional args named) of an EDMPrecond record."""
  if not isinstance(record, PersistentRecord) or record.class_name != "EDMPrecond":
    got = getattr(record, "class_name", type(record).__name__)
    raise ValueError(f"{source}: expected an EDMPrecond network, found {got!r} (VP/VE/iDDPM "
                     "preconditioners are not supported)")
  args = record.init_args
  if len(args) > len(_EDM_PRECOND_POSITIONAL):
    raise ValueError(f"{source}: EDMPrecond got {len(args)} positional args")
  kw = dict(zip(_EDM_PRECOND_POSITIONAL, args))
  kw.update(record.init_kwargs)
  kw = _plain(kw)
  model = (record.state.get("_modules") or {}).get("model")
  model_type = kw.get("model_type", "DhariwalUNet")
  if isinstance(model, PersistentRecord) and model.class_name != model_type:
    raise ValueError(f"{source}: init kwargs say model_type={model_type!r} but the inner "
                     f"network is a {model.class_name!r}")
  return kw


def load_edm_pickle(path: str | os.PathLike, key: str = "ema"
                    ) -> tuple[dict[str, np.ndarray], dict]:
  """Read an EDM snapshot/released `.pkl` without executing anything from it.

  Returns (state_dict, precond_kwargs): the `key` network's flat state_dict (numpy, PyTorch
  names such as `model.enc.64x64_conv.weight`, buffers included) and its EDMPrecond constructor
  kwargs (e.g. {'img_resolution': 64, ..., 'model_type': 'DhariwalUNet', ...}).
  """
  path = os.fspath(path)
  with epath.Path(path).open("rb") as f:  # Local or gs://.
    # Tensors are copies of storage bytes in the file, so together they fit in its size.
    obj = restricted_load(f, source=path, max_tensor_bytes=epath.Path(path).stat().length)
  try:
    if isinstance(obj, dict):
      if key not in obj:
        raise ValueError(f"no {key!r} entry (found keys {sorted(map(str, obj))[:20]})")
      obj = obj[key]
    kwargs = precond_kwargs_of(obj, source=path)
    return module_state_dict(obj), kwargs
  except ValueError as e:
    msg = str(e)
    raise ValueError(msg if msg.startswith(path) else f"{path}: {msg}") from None
  except (RecursionError, TypeError, AttributeError, KeyError) as e:
    raise ValueError(f"{path}: malformed EDM snapshot records ({type(e).__name__}: "
                     f"{str(e)[:200]})") from None
