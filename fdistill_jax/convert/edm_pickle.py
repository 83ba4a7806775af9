"""Reader for NVIDIA EDM `.pkl` snapshots (`network-snapshot-*.pkl`, the released `edm-*.pkl`),
without torch and without EDM's source: the restricted unpickle (`edm_unpickler.py`, which
executes nothing from the file) and the walk of its inert module records into an EDM state_dict
(PyTorch names, numpy arrays) and the EDMPrecond constructor kwargs.
"""
from __future__ import annotations

import os

import numpy as np
from etils import epath

from fdistill_jax.convert.edm_unpickler import ContainerRecord, PersistentRecord, restricted_load

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
  size = epath.Path(path).stat().length
  with epath.Path(path).open("rb") as f:  # Local or gs://.
    # Tensors are copies of storage bytes in the file, so together they fit in its size.
    obj = restricted_load(f, source=path, max_tensor_bytes=size)
  try:
    if isinstance(obj, dict):
      if key not in obj:
        raise ValueError(f"no {key!r} entry (found keys {sorted(map(str, obj))[:20]})")
      obj = obj[key]
    kwargs = precond_kwargs_of(obj, source=path)
    state_dict = module_state_dict(obj)
    # Each entry is copied on conversion, so a memoised tensor named thousands of times counts
    # once per name: together they must still fit in the file.
    total = sum(a.nbytes for a in state_dict.values())
    if total > size:
      raise ValueError(f"its state_dict entries hold {total} bytes, more than the {size}-byte "
                       "file (one tensor referenced under many names); expected one tensor "
                       "per entry")
    return state_dict, kwargs
  except ValueError as e:
    msg = str(e)
    raise ValueError(msg if msg.startswith(path) else f"{path}: {msg}") from None
  except (RecursionError, TypeError, AttributeError, KeyError) as e:
    raise ValueError(f"{path}: malformed EDM snapshot records ({type(e).__name__}: "
                     f"{str(e)[:200]})") from None
