"""EDM PyTorch state_dict <-> Flax variables of `fdistill_jax.models.edm`, and EDM's metadata.

Name mapping (PyTorch `EDMPrecond.state_dict()` key <-> Flax variable path):
* `model.enc.16x16_block0.conv0.weight` <-> params/model/enc_16x16_block0/conv0/kernel
  (the `enc`/`dec` ModuleDicts are flattened into `enc_<name>`/`dec_<name>` submodules);
* Conv2d `weight` [O, I, kh, kw] <-> `kernel` [kh, kw, I, O]; Linear `weight` [out, in] <->
  `kernel` [in, out]; GroupNorm `weight` <-> `scale`; `bias` <-> `bias`;
* NCSN++'s buffer `model.map_noise.freqs` <-> buffers/model/map_noise/freqs;
* `*.resample_filter` buffers are constants of the architecture, not variables: on import they
  are checked against the filter the config implies, on export they are regenerated.
The expected names and shapes come from the module itself (`jax.eval_shape` of its init), so
every mismatch is reported by name with expected and found shapes. Reading and writing state
dicts is generic: `fdistill_jax.convert.state_dict_io`; here `write_state_dict` adds the
precond_kwargs metadata that `read_precond_kwargs` reads back.
"""
from __future__ import annotations

import json
import os
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from etils import epath
from flax import traverse_util

from fdistill_jax import fileio, untrusted
from fdistill_jax.convert import state_dict_io as sdio
from fdistill_jax.convert.state_dict_io import StateDict, StateDictMismatchError
from fdistill_jax.models.edm.layers import resample_filter_2d
from fdistill_jax.models.edm.precond import EDMPrecond

_LEAF_TO_TORCH = {"kernel": "weight", "scale": "weight", "bias": "bias", "freqs": "freqs",
                  "resample_filter": "resample_filter"}


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
    lines += sdio.listing("missing keys", missing)
    lines += sdio.listing("unexpected keys", unexpected)
    lines += sdio.listing("mis-shaped keys", misshaped)
    lines += sdio.listing("resample_filter buffers differing from the config", wrong_values)
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


# ----------------------------------------------------------- files with precond_kwargs metadata


def write_state_dict(path: str | os.PathLike, state_dict: Mapping[str, np.ndarray],
                     precond_kwargs: Mapping[str, Any] | None = None) -> None:
  """Write an EDM state_dict as `.safetensors` (precond_kwargs stored as JSON metadata, which
  read_precond_kwargs reads back) or `.pt`, to a local or gs:// path."""
  meta = {"precond_kwargs": json.dumps(_jsonable(precond_kwargs))} if precond_kwargs else None
  sdio.write_state_dict(path, state_dict, meta)


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
