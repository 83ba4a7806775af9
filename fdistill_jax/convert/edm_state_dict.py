"""EDM PyTorch state_dict <-> Flax variables of `fdistill_jax.models.edm`, and file I/O.

Name mapping (PyTorch `EDMPrecond.state_dict()` key <-> Flax variable path):
* `model.enc.16x16_block0.conv0.weight` <-> params/model/enc_16x16_block0/conv0/kernel
  (the `enc`/`dec` ModuleDicts are flattened into `enc_<name>`/`dec_<name>` submodules);
* Conv2d `weight` [O, I, kh, kw] <-> `kernel` [kh, kw, I, O]; Linear `weight` [out, in] <->
  `kernel` [in, out]; GroupNorm `weight` <-> `scale`; `bias` <-> `bias`;
* NCSN++'s buffer `model.map_noise.freqs` <-> buffers/model/map_noise/freqs;
* `*.resample_filter` buffers are constants of the architecture, not variables: on import they
  are checked against the filter the config implies, on export they are regenerated.
The expected names and shapes come from the module itself (`jax.eval_shape` of its init), so
every mismatch is reported by name with expected and found shapes.
"""
from __future__ import annotations

import collections
import io
import json
import os
import pickle
import zipfile
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from etils import epath
from flax import traverse_util

from fdistill_jax import fileio, untrusted
from fdistill_jax.convert import edm_unpickler
from fdistill_jax.models.edm.layers import resample_filter_2d
from fdistill_jax.models.edm.precond import EDMPrecond

StateDict = dict[str, np.ndarray]
_LEAF_TO_TORCH = {"kernel": "weight", "scale": "weight", "bias": "bias", "freqs": "freqs",
                  "resample_filter": "resample_filter"}
_MAX_LISTED = 40


class StateDictMismatchError(ValueError):
  """The state_dict does not match the architecture (missing/unexpected/mis-shaped keys)."""


def _dummy_inputs(module: EDMPrecond):
  r, c = module.img_resolution, module.img_channels
  args = [jnp.zeros((1, r, r, c), jnp.float32), jnp.ones((1,), jnp.float32)]
  args.append(jnp.zeros((1, module.label_dim), jnp.float32) if module.label_dim else None)
  aug = getattr(module.model, "augment_dim", 0)
  args.append(jnp.zeros((1, aug), jnp.float32) if aug else None)
  return args


def abstract_variables(module: EDMPrecond) -> dict:
  """ShapeDtypeStruct tree of module.init: collections 'params', maybe 'buffers' and
  'resample_filters' (the latter lists EDM's resample_filter buffers; apply() never needs it)."""
  def init():
    key = jax.random.PRNGKey(0)
    return module.init({"params": key, "dropout": key}, *_dummy_inputs(module))
  return jax.eval_shape(init)


def count_params(module: EDMPrecond) -> int:
  """Number of trainable scalars, as `sum(p.numel() for p in net.parameters())` in EDM."""
  params = abstract_variables(module)["params"]
  return int(sum(np.prod(p.shape) for p in jax.tree_util.tree_leaves(params)))


def torch_name(path: tuple[str, ...]) -> str:
  """Flax path (collection dropped) -> EDM state_dict key."""
  parts = []
  for p in path[:-1]:
    if p.startswith(("enc_", "dec_")):
      p = p[:3] + "." + p[4:]
    parts.append(p)
  parts.append(_LEAF_TO_TORCH.get(path[-1], path[-1]))
  return ".".join(parts)


def _to_torch_layout(path: tuple[str, ...], a: Any):
  """Flax array/shape -> PyTorch layout (works on np arrays; for shapes pass a ShapeDtypeStruct)."""
  if path[-1] == "kernel":
    perm = (3, 2, 0, 1) if len(a.shape) == 4 else (1, 0)
  elif path[-1] == "resample_filter":
    return tuple(a.shape) if isinstance(a, jax.ShapeDtypeStruct) else np.asarray(a)[None, None]
  else:
    perm = tuple(range(len(a.shape)))
  if isinstance(a, jax.ShapeDtypeStruct):
    return tuple(a.shape[i] for i in perm)
  return np.transpose(np.asarray(a), perm)


def _torch_shape(path, sds) -> tuple[int, ...]:
  shape = _to_torch_layout(path, sds)
  return (1, 1) + shape if path[-1] == "resample_filter" else shape


def _from_torch_layout(path: tuple[str, ...], a: np.ndarray) -> np.ndarray:
  if path[-1] == "kernel":
    return np.transpose(a, (2, 3, 1, 0) if a.ndim == 4 else (1, 0))
  return a


def _expected(module: EDMPrecond) -> dict[str, tuple[str, tuple[str, ...], tuple[int, ...]]]:
  """torch key -> (collection, flax path, torch shape)."""
  out = {}
  for col, tree in abstract_variables(module).items():
    for path, sds in traverse_util.flatten_dict(tree).items():
      out[torch_name(path)] = (col, path, _torch_shape(path, sds))
  return out


def _listing(title: str, lines: list[str]) -> list[str]:
  if not lines:
    return []
  shown = lines[:_MAX_LISTED]
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
    lines = [header] + _listing("missing keys", missing) + _listing("unexpected keys", unexpected)
    raise StateDictMismatchError("\n".join(lines + _listing("mis-shaped keys", misshaped)))
  return flat


def _resample_taps(module: EDMPrecond) -> tuple[float, ...]:
  return tuple(getattr(module.model, "resample_filter", (1, 1)))


def state_dict_to_variables(state_dict: Mapping[str, Any], module: EDMPrecond, *,
                            source: str = "state_dict", param_dtype=np.float32) -> dict:
  """EDM state_dict (numpy, PyTorch names/layouts) -> Flax variables for `module`.

  Returns {'params': ...} plus {'buffers': ...} for NCSN++'s Fourier frequencies. Arrays are
  numpy, cast to `param_dtype` (None keeps the file's dtype). Raises StateDictMismatchError
  listing every missing, unexpected and mis-shaped key (with expected and found shapes), and
  resample_filter buffers that differ from the architecture's filter. `source` names the file.
  """
  expected = _expected(module)
  filt = resample_filter_2d(_resample_taps(module))[None, None]
  missing = [f"{k}: expected {list(v[2])}" for k, v in expected.items() if k not in state_dict]
  unexpected = [f"{k}: shape {list(np.shape(v))}" for k, v in state_dict.items()
                if k not in expected]
  misshaped, wrong_values = [], []
  variables: dict[str, dict] = {}
  for key, (col, path, shape) in expected.items():
    if key not in state_dict:
      continue
    a = np.asarray(state_dict[key])
    check_weight(a, key, source)
    if tuple(a.shape) != shape:
      misshaped.append(f"{key}: expected {list(shape)}, found {list(a.shape)}")
      continue
    if col == "resample_filters":
      if not np.array_equal(a.astype(np.float32), filt):
        wrong_values.append(f"{key}: found {a.reshape(-1).tolist()}, the config's "
                            f"resample_filter {list(_resample_taps(module))} gives "
                            f"{filt.reshape(-1).tolist()}")
      continue
    if param_dtype is not None and (a.dtype.kind == "f" or a.dtype.name == "bfloat16"):
      a = a.astype(param_dtype)
    variables.setdefault(col, {})[path] = np.ascontiguousarray(_from_torch_layout(path, a))
  if missing or unexpected or misshaped or wrong_values:
    lines = [f"{source}: state_dict does not match EDMPrecond("
             f"{type(module.model).__name__}) built from the config:"]
    lines += _listing("missing keys", missing)
    lines += _listing("unexpected keys", unexpected)
    lines += _listing("mis-shaped keys", misshaped)
    lines += _listing("resample_filter buffers differing from the config", wrong_values)
    raise StateDictMismatchError("\n".join(lines))
  return {col: traverse_util.unflatten_dict(flat) for col, flat in variables.items()}


def check_weight(a: np.ndarray, key: str, source: str) -> None:
  """Refuses a weight that is not real floating point (int, bool, complex) or not finite."""
  untrusted.check_float_array(a, key, source)


def variables_to_state_dict(variables: Mapping[str, Any], module: EDMPrecond) -> StateDict:
  """Flax variables -> EDM state_dict (numpy float32 as stored, PyTorch names and layouts),
  including the regenerated `resample_filter` buffers, loadable with
  `EDMPrecond(**precond_kwargs).load_state_dict(..., strict=True)`."""
  expected = _expected(module)
  filt = resample_filter_2d(_resample_taps(module))[None, None]
  flat = {}
  for col in ("params", "buffers"):
    if col in variables:
      for path, a in traverse_util.flatten_dict(dict(variables[col])).items():
        flat[torch_name(path)] = (path, a)
  out: StateDict = {}
  for key, (col, path, shape) in expected.items():
    if col == "resample_filters":
      out[key] = filt.copy()
      continue
    if key not in flat:
      raise StateDictMismatchError(f"variables lack {col}/{'/'.join(path)} (EDM key {key})")
    arr = np.asarray(jax.device_get(flat.pop(key)[1]))
    out[key] = np.ascontiguousarray(_to_torch_layout(path, arr))
    if out[key].shape != shape:
      raise StateDictMismatchError(f"{col}/{'/'.join(path)}: expected torch shape {list(shape)}, "
                                   f"got {list(out[key].shape)}")
  if flat:
    raise StateDictMismatchError(f"variables have entries the architecture lacks: {sorted(flat)}")
  return out


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
                     precond_kwargs: Mapping[str, Any] | None = None) -> None:
  """Write a state_dict as `.safetensors` (precond_kwargs stored as JSON metadata) or `.pt`,
  to a local or gs:// path."""
  path = os.fspath(path)
  ext = epath.Path(path).suffix.lower()
  arrays = {k: np.ascontiguousarray(v) for k, v in state_dict.items()}
  if ext == ".safetensors":
    meta = {"precond_kwargs": json.dumps(_jsonable(precond_kwargs))} if precond_kwargs else None
    fileio.save_safetensors(path, arrays, metadata=meta)
  elif ext in (".pt", ".pth"):
    torch = _import_torch(path)
    buf = io.BytesIO()
    torch.save({k: torch.from_numpy(v.copy()) for k, v in arrays.items()}, buf)
    fileio.write_bytes(path, buf.getvalue())
  else:
    raise ValueError(f"{path}: unsupported extension {ext!r} (expected .safetensors or .pt)")


def _jsonable(kw: Mapping[str, Any]) -> dict:
  out = {}
  for k, v in kw.items():
    if isinstance(v, float) and np.isinf(v):
      v = "inf" if v > 0 else "-inf"
    elif isinstance(v, (np.generic,)):
      v = v.item()
    elif isinstance(v, tuple):
      v = list(v)
    out[k] = v
  return out


MAX_CONFIG_JSON_BYTES = 1 << 20  # A config.json of constructor kwargs is a few hundred bytes.


def _parse_kwargs_json(text: str | bytes, where: str) -> dict:
  expected = ('expected a JSON object {"precond_kwargs": {"img_resolution": ..., ...}} or the '
              'kwargs object itself')
  try:
    cfg = json.loads(text)
  except (ValueError, UnicodeDecodeError) as e:  # JSONDecodeError is a ValueError.
    raise ValueError(f"{where}: invalid JSON ({type(e).__name__}: {e}); {expected}") from None
  except RecursionError:
    raise ValueError(f"{where}: JSON nested too deeply; {expected}") from None
  kw = cfg.get("precond_kwargs", cfg) if isinstance(cfg, dict) else cfg
  if not isinstance(kw, dict) or "img_resolution" not in kw:
    raise ValueError(f"{where}: found a JSON {type(kw).__name__} without img_resolution; "
                     f"{expected}")
  return kw


def read_precond_kwargs(path: str | os.PathLike) -> dict | None:
  """precond_kwargs from a JSON config (`{"precond_kwargs": {...}}` or the kwargs themselves)
  or from a `.safetensors` written by `write_state_dict`. None if the safetensors has none.
  Invalid JSON, binary files, non-objects and files over 1 MiB raise ValueError naming `path`."""
  path = os.fspath(path)
  if path.lower().endswith(".safetensors"):
    try:
      meta = fileio.read_safetensors_metadata(path)
    except (ValueError, UnicodeDecodeError, RecursionError) as e:
      raise ValueError(f"{path}: not a valid .safetensors file ({e})") from e
    if "precond_kwargs" not in meta:
      return None
    return _parse_kwargs_json(meta["precond_kwargs"], f"{path} (metadata 'precond_kwargs')")
  with epath.Path(path).open("rb") as f:
    raw = f.read(MAX_CONFIG_JSON_BYTES + 1)
  if len(raw) > MAX_CONFIG_JSON_BYTES:
    raise ValueError(f"{path}: larger than {MAX_CONFIG_JSON_BYTES} bytes; not a config.json")
  return _parse_kwargs_json(raw, path)
