"""Load the FID Inception-v3 weights into FIDInceptionV3 variables.

Accepted files (nothing is downloaded; the user places the file):
* pytorch-fid's `pt_inception-2015-12-05-6726825d.pth` (a torch state_dict; needs torch), from
  pytorch-fid's GitHub release `fid_weights` (the full address is WEIGHTS_URL below);
* an `.npz` or `.safetensors` holding the same keys and arrays (for users without torch;
  `save_npz` writes one from a `.pth`).

Key mapping (torch NCHW/OIHW -> Flax NHWC/HWIO):
  `<block>.conv.weight` [O, I, kh, kw] -> params `<block>/conv/kernel` [kh, kw, I, O]
  `<block>.bn.weight|bias`             -> params `<block>/bn/scale|bias`
  `<block>.bn.running_mean|var`        -> batch_stats `<block>/bn/mean|var`
  `fc.weight` [1008, 2048], `fc.bias`  -> params `fc/kernel` [2048, 1008], `fc/bias`
`*.num_batches_tracked` is ignored. Every expected key must be present with the expected shape;
unknown keys are an error (a different Inception, e.g. torchvision's ImageNet one, is refused).
"""
from __future__ import annotations

import functools
import os
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from etils import epath
from flax import traverse_util

from fdistill_jax import fileio, untrusted
from fdistill_jax.convert import state_dict_io
from fdistill_jax.models.inception import FIDInceptionV3

WEIGHTS_FILENAME = "pt_inception-2015-12-05-6726825d.pth"
WEIGHTS_URL = ("https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/"
               + WEIGHTS_FILENAME)
_IGNORED_SUFFIXES = ("num_batches_tracked",)


def read_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
  """Reads a `.pth`/`.pt` (torch), `.npz` or `.safetensors` file (local or gs://) into
  {torch key: float32 array}."""
  path = epath.Path(path)
  if not path.is_file():
    raise FileNotFoundError(
        f"Inception weight file not found: {path}. Download pytorch-fid's {WEIGHTS_FILENAME} "
        f"from {WEIGHTS_URL} (or an .npz/.safetensors of the same keys) and pass its path.")
  suffix = path.suffix.lower()
  if suffix in (".pth", ".pt"):
    # The shared .pt reader: storages sized before torch.load, views and copies bounded by the file.
    return state_dict_io.read_state_dict(str(path))
  if suffix == ".npz":
    return fileio.load_npz(path)
  if suffix == ".safetensors":
    return fileio.load_safetensors(path)[0]
  raise ValueError(f"{path}: unsupported weight file type {suffix!r}; "
                   "expected .pth/.pt, .npz or .safetensors")


def save_npz(state_dict_path: str | os.PathLike, out_path: str | os.PathLike) -> None:
  """Writes the arrays of a weight file (e.g. the .pth) to an .npz with the same keys."""
  sd = read_state_dict(state_dict_path)
  fileio.save_npz(out_path, **{k: v for k, v in sd.items() if not k.endswith(_IGNORED_SUFFIXES)})


@functools.lru_cache(maxsize=1)
def _expected_variables() -> dict[str, Any]:
  """Shapes of FIDInceptionV3's variables, without allocating them (traced once: ~3 s)."""
  model = FIDInceptionV3(preprocess="none")
  x = jax.ShapeDtypeStruct((1, 75, 75, 3), jnp.float32)  # Smallest size the graph accepts.
  return jax.eval_shape(model.init, jax.random.key(0), x)


def _torch_key(collection: str, flax_path: tuple[str, ...]) -> tuple[str, str]:
  """(torch key, transform) of one Flax leaf."""
  *module, leaf = flax_path
  prefix = ".".join(module)
  if collection == "batch_stats":
    return f"{prefix}.running_{leaf}", "copy"  # mean -> running_mean, var -> running_var
  if leaf == "kernel":
    return f"{prefix}.weight", "conv" if module[-1] == "conv" else "dense"
  if leaf == "scale":
    return f"{prefix}.weight", "copy"
  return f"{prefix}.bias", "copy"


def state_dict_to_variables(state_dict: Mapping[str, np.ndarray], source: str = "state_dict"
                            ) -> dict[str, Any]:
  """Converts a torch-layout FID Inception state_dict to {'params', 'batch_stats'} for Flax.

  Args:
    state_dict: torch key -> array (torch layouts, any float dtype).
    source: name used in error messages (e.g. the file path).
  Returns:
    Variables for `FIDInceptionV3().apply`, float32 numpy arrays.
  """
  expected = _expected_variables()
  remaining = {k for k in state_dict if not k.endswith(_IGNORED_SUFFIXES)}
  out: dict[str, dict[tuple[str, ...], np.ndarray]] = {}
  missing, bad_shapes = [], []
  for collection, tree in expected.items():
    flat = traverse_util.flatten_dict(tree)
    out[collection] = {}
    for path, leaf in flat.items():
      key, how = _torch_key(collection, path)
      if key not in state_dict:
        missing.append(key)
        continue
      remaining.discard(key)
      arr = untrusted.check_float_array(state_dict[key], key, source).astype(np.float32)
      if how == "conv" and arr.ndim == 4:
        arr = arr.transpose(2, 3, 1, 0)  # OIHW -> HWIO
      elif how == "dense" and arr.ndim == 2:
        arr = arr.T
      if arr.shape != tuple(leaf.shape):
        bad_shapes.append(f"{key}: got {tuple(np.shape(state_dict[key]))} (after layout change "
                          f"{arr.shape}), expected {tuple(leaf.shape)} for {'/'.join(path)}")
        continue
      out[collection][path] = arr
  problems = []
  if missing:
    problems.append(f"{len(missing)} missing keys (first: {sorted(missing)[:5]})")
  if bad_shapes:
    problems.append(f"{len(bad_shapes)} shape mismatches: " + "; ".join(bad_shapes[:5]))
  if remaining:
    problems.append(f"{len(remaining)} unexpected keys (first: {sorted(remaining)[:5]})")
  if problems:
    raise ValueError(f"{source} is not the FID Inception-v3 (2015-12-05) state_dict: "
                     + " | ".join(problems))
  return {c: traverse_util.unflatten_dict(v) for c, v in out.items()}


def load_inception_variables(path: str | os.PathLike) -> dict[str, Any]:
  """Reads a weight file (.pth/.npz/.safetensors) and returns FIDInceptionV3 variables."""
  return state_dict_to_variables(read_state_dict(path), source=str(path))
