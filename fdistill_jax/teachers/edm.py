"""EDM teachers: load NVIDIA's EDM networks (.pkl / .safetensors / .pt) as Flax modules.

    module, variables = load_edm("edm-cifar10-32x32-cond-vp.pkl")
    D = denoiser(module, variables)
    x0_hat = D(x_nhwc, sigma, class_labels_onehot)

`variables` is a Flax variables dict: {'params': ...} (plus {'buffers': ...} holding the fixed
Fourier frequencies of NCSN++ networks); pass it whole to `module.apply`.
"""
from __future__ import annotations

import math
import os
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
from etils import epath

from fdistill_jax.convert import edm_pickle
from fdistill_jax.convert import edm_state_dict as esd
from fdistill_jax.convert import state_dict_io as sdio
from fdistill_jax.models.edm import EDMPrecond, build_edm_precond


def _find_precond_kwargs(path: str) -> dict:
  """For a bare state_dict file: its safetensors metadata, else config.json beside it."""
  if path.lower().endswith(".safetensors"):
    kw = esd.read_precond_kwargs(path)
    if kw is not None:
      return kw
  cfg = epath.Path(path).parent / "config.json"  # Local or gs://.
  if cfg.is_file():
    return esd.read_precond_kwargs(cfg)
  raise ValueError(f"{path}: a state_dict file carries no architecture; pass precond_kwargs= "
                   f"(EDMPrecond's constructor kwargs) or put a config.json with "
                   f"'precond_kwargs' beside it")


# Ranges of EDMPrecond constructor kwargs read from a file, checked before any module is built
# (a hostile file could ask for negative channels or a 10^9-pixel network). EDM's released nets
# are far inside them (largest: 512x512, 256 base channels, channel_mult up to 4).
_INT_RANGES = {"img_resolution": (1, 4096), "img_channels": (1, 64), "label_dim": (0, 100_000),
               "augment_dim": (0, 64), "model_channels": (1, 4096), "channel_mult_emb": (1, 64),
               "num_blocks": (1, 64), "channel_mult_noise": (1, 64)}
_INT_LIST_RANGES = {"channel_mult": (1, 64), "attn_resolutions": (1, 4096),
                    "resample_filter": (0, 1024)}


def check_precond_kwargs(kw: Mapping[str, Any], source: str) -> None:
  """Raises ValueError naming `source` and the key if a constructor kwarg is out of range."""
  def bad(key, why):
    return ValueError(f"{source}: precond_kwargs[{key!r}]={kw[key]!r} is invalid: {why}")

  def is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)

  if not isinstance(kw, Mapping):
    raise ValueError(f"{source}: precond_kwargs is a {type(kw).__name__}, not a dict")
  for key, (lo, hi) in _INT_RANGES.items():
    if key in kw and not (is_int(kw[key]) and lo <= kw[key] <= hi):
      raise bad(key, f"expected an int in [{lo}, {hi}]")
  for key, (lo, hi) in _INT_LIST_RANGES.items():
    if key in kw:
      v = kw[key]
      if not (isinstance(v, (list, tuple)) and len(v) <= 16
              and all(is_int(x) and lo <= x <= hi for x in v)):
        raise bad(key, f"expected a list of at most 16 ints in [{lo}, {hi}]")
  if "channel_mult" in kw and not kw["channel_mult"]:
    raise bad("channel_mult", "expected at least one level")
  for key in ("dropout", "label_dropout"):
    if key in kw and not (isinstance(kw[key], (int, float)) and 0 <= kw[key] < 1):
      raise bad(key, "expected a probability in [0, 1)")
  for key in ("sigma_min", "sigma_data"):
    if key in kw and not (isinstance(kw[key], (int, float)) and math.isfinite(kw[key])
                          and kw[key] >= (0 if key == "sigma_min" else 1e-12)):
      raise bad(key, "expected a finite number" + (" >= 0" if key == "sigma_min" else " > 0"))
  for key in ("model_type", "embedding_type", "encoder_type", "decoder_type"):
    if key in kw and not isinstance(kw[key], str):
      raise bad(key, "expected a string")


def load_edm(path: str | os.PathLike, precond_kwargs: Mapping[str, Any] | None = None, *,
             dtype=jnp.float32, precision=None, remat: bool = False
             ) -> tuple[EDMPrecond, dict]:
  """Load an EDM network as (module, variables).

  path: NVIDIA `.pkl` (read without executing anything; precond kwargs from the file), or a
    state_dict `.safetensors` / `.pt` with EDM's key names.
  precond_kwargs: EDMPrecond constructor kwargs (incl. model_type). For .pkl they override the
    file's; for state_dict files they default to the safetensors metadata or ./config.json.
  dtype / precision / remat: passed to `build_edm_precond` (parameters stay float32).
  Raises StateDictMismatchError naming missing/unexpected/mis-shaped keys.
  """
  path = os.fspath(path)
  if path.lower().endswith(".pkl"):
    state_dict, file_kwargs = edm_pickle.load_edm_pickle(path)
    kwargs = dict(precond_kwargs) if precond_kwargs is not None else file_kwargs
  else:
    state_dict = sdio.read_state_dict(path)
    kwargs = dict(precond_kwargs) if precond_kwargs is not None else _find_precond_kwargs(path)
  check_precond_kwargs(kwargs, path)
  module = build_edm_precond(kwargs, dtype=dtype, precision=precision, remat=remat)
  variables = esd.state_dict_to_variables(state_dict, module, source=path)
  return module, jax.tree_util.tree_map(jnp.asarray, variables)


def denoiser(module: EDMPrecond, variables: Mapping[str, Any], *, jit: bool = True
             ) -> Callable[..., jax.Array]:
  """fn(x [B,H,W,C], sigma [] or [B], class_labels=None) -> D_x [B,H,W,C] (eval mode).

  class_labels: one-hot [B, label_dim], int [B], or None (zeros, i.e. EDM's unconditional
  input). The returned function closes over `variables`.
  """
  def apply(v, x, sigma, class_labels):
    return module.apply(v, x, sigma, class_labels)

  # Variables are an argument, not a closure constant, so big nets are not baked into the HLO.
  apply = jax.jit(apply) if jit else apply

  def fn(x, sigma, class_labels=None):
    return apply(variables, x, sigma, class_labels)
  return fn
