"""EDMPrecond (Karras et al. 2022, Table 1) around a SongUNet/DhariwalUNet, and its builder.

D(x; σ) = c_skip(σ)·x + c_out(σ)·F(c_in(σ)·x, c_noise(σ), labels), NHWC.

As in EDM, the wrapper works in float32 whatever the network's compute dtype (bf16/fp16
networks get float32 c_* and a float32 D), except that a float64 network (JAX x64) makes the
wrapper float64 too; this is how the fixtures' float64 reference is defined.
"""
from __future__ import annotations

import math
from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp

from fdistill_jax.diffusion.edm import edm_precond_coeffs
from fdistill_jax.models.edm.dhariwal import DhariwalUNet
from fdistill_jax.models.edm.layers import stat_dtype
from fdistill_jax.models.edm.songunet import SongUNet

MODEL_TYPES = {"SongUNet": SongUNet, "DhariwalUNet": DhariwalUNet}

# EDMPrecond's own constructor arguments (the rest go to the inner model).
_PRECOND_KEYS = ("img_resolution", "img_channels", "label_dim", "use_fp16", "sigma_min",
                 "sigma_max", "sigma_data", "model_type")
_MODEL_KEYS = {
    "SongUNet": ("augment_dim", "model_channels", "channel_mult", "channel_mult_emb", "num_blocks",
                 "attn_resolutions", "dropout", "label_dropout", "embedding_type",
                 "channel_mult_noise", "encoder_type", "decoder_type", "resample_filter"),
    "DhariwalUNet": ("augment_dim", "model_channels", "channel_mult", "channel_mult_emb",
                     "num_blocks", "attn_resolutions", "dropout", "label_dropout"),
}
_TUPLE_KEYS = ("channel_mult", "attn_resolutions", "resample_filter")


class EDMPrecond(nn.Module):
  """EDM preconditioning around `model` (a SongUNet or DhariwalUNet, named 'model').

  __call__(x [B,H,W,C], sigma [] or [B] (or [B,1,1,1]), class_labels [B or 1, label_dim] one-hot
  (or int [B], or None -> zeros), augment_labels [B, augment_dim] or None;
  deterministic (False enables dropout/label dropout with rng 'dropout'), return_features)
  -> D_x [B,H,W,C] in float32 (float64 for a float64 model), or (D_x, features) with
  features = {'encoder': {res: [B,res,res,C_res]}, 'bottleneck': [B,r,r,C]} in the compute
  dtype (exact definition in songunet.py / dhariwal.py).
  A 0-d sigma gives a batch-1 noise embedding that broadcasts over the batch, as in EDM's sampler.
  """
  model: nn.Module
  img_resolution: int
  img_channels: int
  label_dim: int = 0
  use_fp16: bool = False  # Recorded only: the compute dtype is the inner model's `dtype`.
  sigma_min: float = 0.0
  sigma_max: float = float("inf")
  sigma_data: float = 0.5

  @nn.compact
  def __call__(self, x, sigma, class_labels=None, augment_labels=None, *,
               deterministic: bool = True, return_features: bool = False):
    pdt = stat_dtype(self.model.dtype)
    x = jnp.asarray(x).astype(pdt)
    sigma = jnp.asarray(sigma).astype(pdt).reshape(-1, 1, 1, 1)
    if self.label_dim == 0:
      class_labels = None
    elif class_labels is None:
      class_labels = jnp.zeros((1, self.label_dim), pdt)
    else:
      class_labels = jnp.asarray(class_labels)
      if jnp.issubdtype(class_labels.dtype, jnp.integer):
        class_labels = jax.nn.one_hot(class_labels.reshape(-1), self.label_dim, dtype=pdt)
      class_labels = class_labels.astype(pdt).reshape(-1, self.label_dim)
    c_skip, c_out, c_in, c_noise = edm_precond_coeffs(sigma, self.sigma_data)
    out = self.model((c_in * x).astype(self.model.dtype), c_noise.reshape(-1), class_labels,
                     augment_labels, deterministic=deterministic,
                     return_features=return_features)
    f_x, features = out if return_features else (out, None)
    d_x = c_skip * x + c_out * f_x.astype(pdt)
    return (d_x, features) if return_features else d_x


def _float(v: Any, key: str) -> float:
  if isinstance(v, str) and v.strip().lower() in ("inf", "+inf", "infinity"):
    return math.inf
  try:
    return float(v)
  except (TypeError, ValueError):
    raise ValueError(f"precond_kwargs[{key!r}] must be a number, got {v!r}") from None


def build_edm_precond(precond_kwargs: Mapping[str, Any], *, dtype=jnp.float32,
                      precision=None, remat: bool = False) -> EDMPrecond:
  """EDMPrecond(**precond_kwargs) as EDM's constructor takes them (incl. model_type).

  precond_kwargs: e.g. config.json's `precond_kwargs` or a snapshot's `ema._init_kwargs`;
  model_type defaults to 'DhariwalUNet' like EDM. in_channels/out_channels are set from
  img_channels as EDM does. Unknown or unsupported keys raise ValueError naming them.
  dtype: compute dtype of the UNet (params stay float32); precision: matmul/conv precision;
  remat: rematerialise every UNetBlock.
  """
  kw = dict(precond_kwargs)
  model_type = kw.pop("model_type", "DhariwalUNet")
  if model_type not in MODEL_TYPES:
    raise ValueError(f"precond_kwargs['model_type']={model_type!r} is not supported; "
                     f"expected one of {sorted(MODEL_TYPES)}")
  allowed = set(_PRECOND_KEYS) | set(_MODEL_KEYS[model_type])
  unknown = sorted(set(kw) - allowed)
  if unknown:
    raise ValueError(f"precond_kwargs: unsupported key(s) {unknown} for EDMPrecond with "
                     f"model_type={model_type!r}; allowed: {sorted(allowed)}")
  for key in ("img_resolution", "img_channels"):
    if key not in kw:
      raise ValueError(f"precond_kwargs: missing required key {key!r}")
  model_kw = {k: kw[k] for k in _MODEL_KEYS[model_type] if k in kw}
  for k in _TUPLE_KEYS:
    if k in model_kw:
      model_kw[k] = tuple(model_kw[k])
  img_res, img_ch = int(kw["img_resolution"]), int(kw["img_channels"])
  label_dim = int(kw.get("label_dim", 0))
  model = MODEL_TYPES[model_type](img_resolution=img_res, in_channels=img_ch,
                                  out_channels=img_ch, label_dim=label_dim, dtype=dtype,
                                  precision=precision, remat=remat, **model_kw)
  return EDMPrecond(model=model, img_resolution=img_res, img_channels=img_ch,
                    label_dim=label_dim, use_fp16=bool(kw.get("use_fp16", False)),
                    sigma_min=_float(kw.get("sigma_min", 0.0), "sigma_min"),
                    sigma_max=_float(kw.get("sigma_max", math.inf), "sigma_max"),
                    sigma_data=_float(kw.get("sigma_data", 0.5), "sigma_data"))
