"""The Stable Diffusion VAE (diffusers' `AutoencoderKL`) in Flax linen, NHWC.

Port of diffusers 0.42.1 `AutoencoderKL` with `DownEncoderBlock2D`/`UpDecoderBlock2D` blocks (the
SD 1.x/2.x, PixArt-α and sd-vae-ft-ema VAEs), written from the architecture:

* Encoder: conv_in 3x3 → per level `layers_per_block` ResnetBlocks, then (all but the last level)
  a stride-2 3x3 conv on the input padded by one zero row/column at the bottom/right only
  (diffusers' `Downsample2D(padding=0)`) → mid block (resnet, single-head self-attention with
  GroupNorm and a residual, resnet) → GroupNorm → SiLU → conv_out to 2·latent_channels
  (mean ‖ logvar) → quant_conv 1x1.
* Decoder: post_quant_conv 1x1 → conv_in → mid block → per level (reversed channels)
  `layers_per_block + 1` ResnetBlocks, then (all but the last level) nearest ×2 upsampling and a
  3x3 conv → GroupNorm → SiLU → conv_out.
* ResnetBlock: GN → SiLU → conv 3x3 → GN → SiLU → conv 3x3, plus a 1x1 `conv_shortcut` when the
  channel count changes. Every GroupNorm uses eps 1e-6 and `norm_num_groups` groups.

Submodule names follow diffusers' attribute paths with `.i` written `_i` (`down_blocks_0`,
`resnets_1`, `to_out_0`), so `fdistill_jax.convert.vae` maps state_dict names one to one.

Images are NHWC in [-1, 1]; latents are NHWC with `latent_channels` channels at 1/2^(levels-1)
of the image size. `dtype` is the compute dtype (parameters stay in `param_dtype`); GroupNorm
statistics and the attention softmax run in float32.
"""
from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp

Dtype = Any

LOGVAR_MIN, LOGVAR_MAX = -30.0, 20.0  # diffusers' DiagonalGaussianDistribution clamp.


@flax.struct.dataclass
class DiagonalGaussian:
  """The encoder's posterior N(mean, exp(logvar)), both [B, h, w, latent_channels].

  logvar is already clamped to [-30, 20] as in diffusers.
  """
  mean: jax.Array
  logvar: jax.Array

  @property
  def std(self) -> jax.Array:
    return jnp.exp(0.5 * self.logvar)

  def sample(self, key: jax.Array) -> jax.Array:
    """mean + std · ε with ε ~ N(0, I) drawn from `key`."""
    eps = jax.random.normal(key, self.mean.shape, self.mean.dtype)
    return self.mean + self.std * eps

  def mode(self) -> jax.Array:
    return self.mean

  def kl(self) -> jax.Array:
    """KL(q ‖ N(0, I)) per example, [B] (sum over latent positions and channels)."""
    return 0.5 * jnp.sum(self.mean ** 2 + jnp.exp(self.logvar) - 1.0 - self.logvar, axis=(1, 2, 3))


class _Common(nn.Module):
  """Fields shared by every layer; the helpers build Conv/GroupNorm/Dense with them."""
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  precision: Any = None

  def conv(self, features: int, k: int, name: str, stride: int = 1, padding=None) -> nn.Conv:
    pad = ((k // 2, k // 2),) * 2 if padding is None else padding
    return nn.Conv(features, (k, k), strides=(stride, stride), padding=pad, dtype=self.dtype,
                   param_dtype=self.param_dtype, precision=self.precision, name=name)

  def norm(self, groups: int, name: str) -> nn.GroupNorm:
    # Two-pass variance: E[x²]−E[x]² loses the 1e-5 parity on large activations.
    return nn.GroupNorm(num_groups=groups, epsilon=1e-6, use_fast_variance=False,
                        dtype=self.dtype, param_dtype=self.param_dtype, name=name)

  def dense(self, features: int, name: str) -> nn.Dense:
    return nn.Dense(features, dtype=self.dtype, param_dtype=self.param_dtype,
                    precision=self.precision, name=name)


class ResnetBlock(_Common):
  """diffusers' ResnetBlock2D without time embedding. [B,H,W,Cin] -> [B,H,W,out_channels]."""
  out_channels: int = 0
  groups: int = 32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    h = self.conv(self.out_channels, 3, "conv1")(nn.silu(self.norm(self.groups, "norm1")(x)))
    h = self.conv(self.out_channels, 3, "conv2")(nn.silu(self.norm(self.groups, "norm2")(h)))
    if x.shape[-1] != self.out_channels:
      x = self.conv(self.out_channels, 1, "conv_shortcut")(x)
    return x + h


class MidAttention(_Common):
  """Single-head self-attention over the H·W positions with pre-GroupNorm and a residual."""
  groups: int = 32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    b, hgt, wid, c = x.shape
    h = self.norm(self.groups, "group_norm")(x).reshape(b, hgt * wid, 1, c)
    q, k, v = (self.dense(c, n)(h) for n in ("to_q", "to_k", "to_v"))
    h = jax.nn.dot_product_attention(q, k, v)  # scale 1/sqrt(c); softmax in float32.
    h = self.dense(c, "to_out_0")(h.reshape(b, hgt * wid, c))
    return x + h.reshape(b, hgt, wid, c)


class MidBlock(_Common):
  """resnets_0 → attentions_0 → resnets_1 at constant channels."""
  groups: int = 32
  add_attention: bool = True

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype, precision=self.precision)
    c = x.shape[-1]
    x = ResnetBlock(out_channels=c, groups=self.groups, name="resnets_0", **kw)(x)
    if self.add_attention:
      x = MidAttention(groups=self.groups, name="attentions_0", **kw)(x)
    return ResnetBlock(out_channels=c, groups=self.groups, name="resnets_1", **kw)(x)


class _Resample(_Common):
  """`downsamplers_0`/`upsamplers_0`: a module holding the 3x3 `conv`."""
  up: bool = False

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    c = x.shape[-1]
    if self.up:
      x = jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)  # nearest-neighbour ×2.
      return self.conv(c, 3, "conv")(x)
    # Downsample2D(padding=0): one zero row/column at the bottom/right, stride-2 valid 3x3 conv.
    return self.conv(c, 3, "conv", stride=2, padding=((0, 1), (0, 1)))(x)


class ResampleBlock(_Common):
  """DownEncoderBlock2D (up=False) / UpDecoderBlock2D (up=True): resnets, then resampling."""
  out_channels: int = 0
  num_layers: int = 1
  groups: int = 32
  resample: bool = True
  up: bool = False

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype, precision=self.precision)
    for j in range(self.num_layers):
      x = ResnetBlock(out_channels=self.out_channels, groups=self.groups, name=f"resnets_{j}",
                      **kw)(x)
    if self.resample:
      name = "upsamplers_0" if self.up else "downsamplers_0"
      x = _Resample(up=self.up, name=name, **kw)(x)
    return x


class Encoder(_Common):
  """[B,H,W,in] -> moments [B,H/f,W/f,2·latent_channels] (before quant_conv), f = 2^(levels-1)."""
  latent_channels: int = 4
  block_out_channels: Sequence[int] = (64,)
  layers_per_block: int = 1
  groups: int = 32
  mid_block_add_attention: bool = True

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype, precision=self.precision)
    chans = tuple(self.block_out_channels)
    x = self.conv(chans[0], 3, "conv_in")(x)
    for i, c in enumerate(chans):
      x = ResampleBlock(out_channels=c, num_layers=self.layers_per_block, groups=self.groups,
                        resample=i < len(chans) - 1, name=f"down_blocks_{i}", **kw)(x)
    x = MidBlock(groups=self.groups, add_attention=self.mid_block_add_attention,
                 name="mid_block", **kw)(x)
    x = nn.silu(self.norm(self.groups, "conv_norm_out")(x))
    return self.conv(2 * self.latent_channels, 3, "conv_out")(x)


class Decoder(_Common):
  """[B,h,w,latent_channels] (after post_quant_conv) -> [B,h·f,w·f,out_channels]."""
  out_channels: int = 3
  block_out_channels: Sequence[int] = (64,)
  layers_per_block: int = 1
  groups: int = 32
  mid_block_add_attention: bool = True

  @nn.compact
  def __call__(self, z: jax.Array) -> jax.Array:
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype, precision=self.precision)
    chans = tuple(reversed(self.block_out_channels))
    x = self.conv(chans[0], 3, "conv_in")(z)
    x = MidBlock(groups=self.groups, add_attention=self.mid_block_add_attention,
                 name="mid_block", **kw)(x)
    for i, c in enumerate(chans):
      x = ResampleBlock(out_channels=c, num_layers=self.layers_per_block + 1, groups=self.groups,
                        resample=i < len(chans) - 1, up=True, name=f"up_blocks_{i}", **kw)(x)
    x = nn.silu(self.norm(self.groups, "conv_norm_out")(x))
    return self.conv(self.out_channels, 3, "conv_out")(x)


class AutoencoderKL(_Common):
  """diffusers' AutoencoderKL (DownEncoderBlock2D/UpDecoderBlock2D only).

  Fields mirror the diffusers config (`fdistill_jax.convert.vae.vae_from_config` builds one from a
  config.json). Methods (use with `module.apply(variables, x, method=...)`):
  * `encode(images [B,H,W,in]) -> DiagonalGaussian` (H, W divisible by 2^(levels-1));
  * `decode(z [B,h,w,latent]) -> images [B,h·f,w·f,out]`;
  * `encode_latents(images, key)`: scaling_factor · (sample − shift), the diffusion latents
    (key=None takes the posterior mean);
  * `decode_latents(latents)`: decode(latents / scaling_factor + shift);
  * `__call__(images, key=None)`: decode(encode(images).sample or mode) (also used for init).
  """
  in_channels: int = 3
  out_channels: int = 3
  latent_channels: int = 4
  block_out_channels: Sequence[int] = (64,)
  layers_per_block: int = 1
  norm_num_groups: int = 32
  use_quant_conv: bool = True
  use_post_quant_conv: bool = True
  mid_block_add_attention: bool = True
  scaling_factor: float = 0.18215
  shift_factor: float | None = None

  def setup(self):
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype, precision=self.precision,
              block_out_channels=tuple(self.block_out_channels),
              layers_per_block=self.layers_per_block, groups=self.norm_num_groups,
              mid_block_add_attention=self.mid_block_add_attention)
    self.encoder = Encoder(latent_channels=self.latent_channels, **kw)
    self.decoder = Decoder(out_channels=self.out_channels, **kw)
    if self.use_quant_conv:
      self.quant_conv = self.conv(2 * self.latent_channels, 1, "quant_conv")
    if self.use_post_quant_conv:
      self.post_quant_conv = self.conv(self.latent_channels, 1, "post_quant_conv")

  @property
  def downsample_factor(self) -> int:
    return 2 ** (len(self.block_out_channels) - 1)

  def encode(self, images: jax.Array) -> DiagonalGaussian:
    f = self.downsample_factor
    if images.ndim != 4 or images.shape[-1] != self.in_channels or images.shape[1] % f \
        or images.shape[2] % f:
      raise ValueError(f"AutoencoderKL.encode: expected NHWC images [B,H,W,{self.in_channels}] "
                       f"with H and W divisible by {f}, got shape {tuple(images.shape)}")
    h = self.encoder(images)
    if self.use_quant_conv:
      h = self.quant_conv(h)
    mean, logvar = jnp.split(h, 2, axis=-1)
    return DiagonalGaussian(mean, jnp.clip(logvar, LOGVAR_MIN, LOGVAR_MAX))

  def decode(self, z: jax.Array) -> jax.Array:
    if z.ndim != 4 or z.shape[-1] != self.latent_channels:
      raise ValueError(f"AutoencoderKL.decode: expected NHWC latents [B,h,w,"
                       f"{self.latent_channels}], got shape {tuple(z.shape)}")
    if self.use_post_quant_conv:
      z = self.post_quant_conv(z)
    return self.decoder(z)

  def encode_latents(self, images: jax.Array, key: jax.Array | None = None) -> jax.Array:
    post = self.encode(images)
    z = post.mode() if key is None else post.sample(key)
    return (z - (self.shift_factor or 0.0)) * self.scaling_factor

  def decode_latents(self, latents: jax.Array) -> jax.Array:
    return self.decode(latents / self.scaling_factor + (self.shift_factor or 0.0))

  def __call__(self, images: jax.Array, key: jax.Array | None = None) -> jax.Array:
    post = self.encode(images)
    return self.decode(post.mode() if key is None else post.sample(key))
