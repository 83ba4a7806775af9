"""SongUNet: EDM's DDPM++ / NCSN++ backbone (Song et al. 2021 as re-implemented in EDM), NHWC.

Submodule names follow EDM's state_dict with the `enc`/`dec` ModuleDicts flattened:
`enc.16x16_block0` is the Flax submodule `enc_16x16_block0`.

Features (`return_features=True`), a dict (a valid pytree: keys of one type per level):
* `features['encoder'][res]` for each encoder resolution `res` (int, e.g. 32, 16, 8): the
  encoder activation after the last block of that resolution
  (`enc_{res}x{res}_block{num_blocks-1}`, after the aux add for skip/residual encoders), i.e. the
  tensor pushed last onto the skip stack at that resolution,
  [B, res, res, model_channels·channel_mult[level]], compute dtype.
* `features['bottleneck']`: the output of the two middle blocks (`dec_{r}x{r}_in0` with
  attention, then `dec_{r}x{r}_in1`) at the lowest resolution r, i.e. the decoder's input before
  the first skip concatenation, [B, r, r, model_channels·channel_mult[-1]] (8x8 for CIFAR-10
  32x32 and for ImageNet 64x64).
"""
from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from fdistill_jax.models.edm.layers import (Conv2d, Dtype, FourierEmbedding, GroupNorm, Linear,
                                            PositionalEmbedding, Precision, UNetBlock)

_XAVIER = (("init_mode", "xavier_uniform"),)
_XAVIER_ZERO = (("init_mode", "xavier_uniform"), ("init_weight", 1e-5))
_XAVIER_ATTN = (("init_mode", "xavier_uniform"), ("init_weight", math.sqrt(0.2)))


class SongUNet(nn.Module):
  """DDPM++ (positional/standard) or NCSN++ (fourier/residual) UNet with EDM's arguments.

  __call__(x [B,H,W,in], noise_labels [B or 1], class_labels [B or 1, label_dim] or None,
  augment_labels [B, augment_dim] or None) -> F [B,H,W,out] in `dtype`
  (or (F, features) with return_features=True; see the module docstring).
  """
  img_resolution: int
  in_channels: int
  out_channels: int
  label_dim: int = 0
  augment_dim: int = 0
  model_channels: int = 128
  channel_mult: tuple[int, ...] = (1, 2, 2, 2)
  channel_mult_emb: int = 4
  num_blocks: int = 4
  attn_resolutions: tuple[int, ...] = (16,)
  dropout: float = 0.10
  label_dropout: float = 0.0
  embedding_type: str = "positional"
  channel_mult_noise: int = 1
  encoder_type: str = "standard"
  decoder_type: str = "standard"
  resample_filter: tuple[float, ...] = (1, 1)
  dtype: Dtype = jnp.float32
  precision: Precision = None
  remat: bool = False

  def _check(self):
    if self.embedding_type not in ("fourier", "positional"):
      raise ValueError(f"SongUNet: embedding_type must be 'fourier' or 'positional', "
                       f"got {self.embedding_type!r}")
    if self.encoder_type not in ("standard", "skip", "residual"):
      raise ValueError(f"SongUNet: encoder_type must be standard/skip/residual, "
                       f"got {self.encoder_type!r}")
    if self.decoder_type not in ("standard", "skip"):
      raise ValueError(f"SongUNet: decoder_type must be standard/skip, got {self.decoder_type!r}")

  @nn.compact
  def __call__(self, x, noise_labels, class_labels=None, augment_labels=None, *,
               deterministic: bool = True, return_features: bool = False):
    self._check()
    dt = self.dtype
    common = dict(dtype=dt, precision=self.precision)
    xav, xav_zero = dict(_XAVIER), dict(_XAVIER_ZERO)
    emb_channels = self.model_channels * self.channel_mult_emb
    noise_channels = self.model_channels * self.channel_mult_noise
    block_cls = nn.remat(UNetBlock) if self.remat else UNetBlock

    def block(name, cout, **kw):
      return block_cls(out_channels=cout, num_heads=1, dropout=self.dropout,
                       skip_scale=math.sqrt(0.5), eps=1e-6, resample_filter=self.resample_filter,
                       resample_proj=True, adaptive_scale=False, init=_XAVIER,
                       init_zero=_XAVIER_ZERO, init_attn=_XAVIER_ATTN,
                       deterministic=deterministic, name=name, **common, **kw)

    # Mapping network: noise embedding with its halves swapped to [sin, cos].
    if self.embedding_type == "positional":
      emb = PositionalEmbedding(noise_channels, endpoint=True, name="map_noise")(noise_labels)
    else:
      emb = FourierEmbedding(noise_channels, name="map_noise")(noise_labels)
    half = noise_channels // 2
    emb = jnp.concatenate([emb[:, half:], emb[:, :half]], axis=1)
    if self.label_dim:
      labels = class_labels
      if labels is None:
        labels = jnp.zeros((1, self.label_dim), emb.dtype)
      if not deterministic and self.label_dropout:
        keep = jax.random.uniform(self.make_rng("dropout"), (x.shape[0], 1)) >= self.label_dropout
        labels = labels * keep.astype(labels.dtype)
      emb = emb + Linear(noise_channels, name="map_label", **xav, **common)(
          labels * math.sqrt(self.label_dim))
    if self.augment_dim:
      map_augment = Linear(noise_channels, use_bias=False, name="map_augment", **xav, **common)
      if augment_labels is not None:
        emb = emb + map_augment(augment_labels)
      elif self.is_initializing():
        map_augment(jnp.zeros((1, self.augment_dim), dt))  # Create the params only.
    emb = nn.silu(Linear(emb_channels, name="map_layer0", **xav, **common)(emb))
    emb = nn.silu(Linear(emb_channels, name="map_layer1", **xav, **common)(emb))

    # Encoder.
    x = x.astype(dt)
    skips, enc_features = [], {}
    aux = x
    cout = self.in_channels
    for level, mult in enumerate(self.channel_mult):
      res = self.img_resolution >> level
      tag = f"enc_{res}x{res}"
      if level == 0:
        cout = self.model_channels
        x = Conv2d(cout, 3, name=f"{tag}_conv", **xav, **common)(x)
        skips.append(x)
      else:
        x = block(f"{tag}_down", cout, down=True)(x, emb)
        skips.append(x)
        if self.encoder_type == "skip":
          aux = Conv2d(aux.shape[-1], 0, down=True, resample_filter=self.resample_filter,
                       name=f"{tag}_aux_down", **common)(aux)
          x = skips[-1] = x + Conv2d(cout, 1, name=f"{tag}_aux_skip", **xav, **common)(aux)
        elif self.encoder_type == "residual":
          r = Conv2d(cout, 3, down=True, resample_filter=self.resample_filter,
                     fused_resample=True, name=f"{tag}_aux_residual", **xav, **common)(aux)
          x = skips[-1] = aux = (x + r) / math.sqrt(2)
      for idx in range(self.num_blocks):
        cout = self.model_channels * mult
        x = block(f"{tag}_block{idx}", cout, attention=res in self.attn_resolutions)(x, emb)
        skips.append(x)
      enc_features[res] = x

    # Decoder.
    aux = None
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
        attn = idx == self.num_blocks and res in self.attn_resolutions
        x = block(f"{tag}_block{idx}", cout, attention=attn)(x, emb)
      if self.decoder_type == "skip" or level == 0:
        if self.decoder_type == "skip" and level < last:
          aux = Conv2d(self.out_channels, 0, up=True, resample_filter=self.resample_filter,
                       name=f"{tag}_aux_up", **common)(aux)
        tmp = GroupNorm(eps=1e-6, dtype=dt, name=f"{tag}_aux_norm")(x)
        tmp = Conv2d(self.out_channels, 3, name=f"{tag}_aux_conv", **xav_zero, **common)(
            nn.silu(tmp))
        aux = tmp if aux is None else tmp + aux
    if return_features:
      return aux, {"encoder": enc_features, "bottleneck": bottleneck}
    return aux
