"""DhariwalUNet: EDM's re-implementation of ADM (Dhariwal & Nichol 2021), NHWC.

Submodule names follow EDM's state_dict with the `enc`/`dec` ModuleDicts flattened
(`enc.64x64_block0` -> `enc_64x64_block0`); `map_*`, `out_norm`, `out_conv` as in EDM.

Features (`return_features=True`), exactly as for SongUNet:
* `features['encoder'][res]` (int res): encoder activation after
  `enc_{res}x{res}_block{num_blocks-1}`, [B, res, res, model_channels·channel_mult[level]].
* `features['bottleneck']`: output of `dec_{r}x{r}_in0` (attention) then `dec_{r}x{r}_in1` at the
  lowest resolution r, before the first skip concatenation (8x8 for ImageNet 64x64).
"""
from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from fdistill_jax.models.edm.layers import (Conv2d, Dtype, GroupNorm, Linear, PositionalEmbedding,
                                            Precision, UNetBlock)

_INIT = (("init_mode", "kaiming_uniform"), ("init_weight", math.sqrt(1 / 3)),
         ("init_bias", math.sqrt(1 / 3)))
_INIT_ZERO = (("init_mode", "kaiming_uniform"), ("init_weight", 0.0), ("init_bias", 0.0))


class DhariwalUNet(nn.Module):
  """ADM UNet with EDM's arguments; attention heads = out_channels // 64.

  __call__(x [B,H,W,in], noise_labels [B or 1], class_labels [B or 1, label_dim] or None,
  augment_labels [B, augment_dim] or None) -> F [B,H,W,out] in `dtype`
  (or (F, features) with return_features=True; see the module docstring).
  """
  img_resolution: int
  in_channels: int
  out_channels: int
  label_dim: int = 0
  augment_dim: int = 0
  model_channels: int = 192
  channel_mult: tuple[int, ...] = (1, 2, 3, 4)
  channel_mult_emb: int = 4
  num_blocks: int = 3
  attn_resolutions: tuple[int, ...] = (32, 16, 8)
  dropout: float = 0.10
  label_dropout: float = 0.0
  channels_per_head: int = 64
  dtype: Dtype = jnp.float32
  precision: Precision = None
  remat: bool = False

  @nn.compact
  def __call__(self, x, noise_labels, class_labels=None, augment_labels=None, *,
               deterministic: bool = True, return_features: bool = False):
    dt = self.dtype
    common = dict(dtype=dt, precision=self.precision)
    init, init_zero = dict(_INIT), dict(_INIT_ZERO)
    emb_channels = self.model_channels * self.channel_mult_emb
    block_cls = nn.remat(UNetBlock) if self.remat else UNetBlock

    def block(name, cout, attention=False, **kw):
      heads = cout // self.channels_per_head if attention else 0
      return block_cls(out_channels=cout, attention=attention, num_heads=heads,
                       dropout=self.dropout, skip_scale=1.0, eps=1e-5, resample_proj=False,
                       adaptive_scale=True, init=_INIT, init_zero=_INIT_ZERO,
                       deterministic=deterministic, name=name, **common, **kw)

    # Mapping network.
    emb = PositionalEmbedding(self.model_channels, endpoint=False, name="map_noise")(noise_labels)
    if self.augment_dim:
      map_augment = Linear(self.model_channels, use_bias=False, name="map_augment", **init_zero,
                           **common)
      if augment_labels is not None:
        emb = emb + map_augment(augment_labels)
      elif self.is_initializing():
        map_augment(jnp.zeros((1, self.augment_dim), dt))  # Create the params only.
    emb = nn.silu(Linear(emb_channels, name="map_layer0", **init, **common)(emb))
    emb = Linear(emb_channels, name="map_layer1", **init, **common)(emb)
    if self.label_dim:
      labels = class_labels
      if labels is None:
        labels = jnp.zeros((1, self.label_dim), emb.dtype)
      if not deterministic and self.label_dropout:
        keep = jax.random.uniform(self.make_rng("dropout"), (x.shape[0], 1)) >= self.label_dropout
        labels = labels * keep.astype(labels.dtype)
      emb = emb + Linear(emb_channels, use_bias=False, init_mode="kaiming_normal",
                         init_weight=math.sqrt(self.label_dim), name="map_label", **common)(labels)
    emb = nn.silu(emb)

    # Encoder.
    x = x.astype(dt)
    skips, enc_features = [], {}
    cout = self.in_channels
    for level, mult in enumerate(self.channel_mult):
      res = self.img_resolution >> level
      tag = f"enc_{res}x{res}"
      if level == 0:
        cout = self.model_channels * mult
        x = Conv2d(cout, 3, name=f"{tag}_conv", **init, **common)(x)
      else:
        x = block(f"{tag}_down", cout, down=True)(x, emb)
      skips.append(x)
      for idx in range(self.num_blocks):
        cout = self.model_channels * mult
        x = block(f"{tag}_block{idx}", cout, attention=res in self.attn_resolutions)(x, emb)
        skips.append(x)
      enc_features[res] = x

    # Decoder.
    last = len(self.channel_mult) - 1
    for level, mult in reversed(list(enumerate(self.channel_mult))):
      res = self.img_resolution >> level
      tag = f"dec_{res}x{res}"
      if level == last:
        x = block(f"{tag}_in0", cout, attention=True)(x, emb)
        x = block(f"{tag}_in1", cout)(x, emb)
        bottleneck = x
      else:
        x = block(f"{tag}_up", cout, up=True)(x, emb)
      for idx in range(self.num_blocks + 1):
        x = jnp.concatenate([x, skips.pop().astype(dt)], axis=-1)
        cout = self.model_channels * mult
        x = block(f"{tag}_block{idx}", cout, attention=res in self.attn_resolutions)(x, emb)
    x = GroupNorm(eps=1e-5, dtype=dt, name="out_norm")(x)
    x = Conv2d(self.out_channels, 3, name="out_conv", **init_zero, **common)(nn.silu(x))
    if return_features:
      return x, {"encoder": enc_features, "bottleneck": bottleneck}
    return x
