"""Building blocks of the EDM networks (Karras et al. 2022) in Flax linen, NHWC.

Clean-room implementation from the architecture description (see the package docstring); the
parameter layout mirrors EDM's modules so that `fdistill_jax.convert.edm_state_dict` can map
PyTorch names one to one:

* `Linear`: params `kernel` [in, out] and optional `bias` [out].
* `Conv2d`: params `kernel` [k, k, in, out] (HWIO) and optional `bias` [out]; optional 2x
  up/downsampling with a separable FIR filter that is a constant, not a parameter. During `init`
  the filter is also stored in the collection `resample_filters` so exporters can list EDM's
  `resample_filter` buffers; `apply` never needs that collection.
* `GroupNorm`: params `scale`, `bias`; groups = min(32, C // 4).
* `UNetBlock`: submodules named like EDM's (norm0, conv0, affine, norm1, conv1, skip, norm2, qkv,
  proj).
* `PositionalEmbedding`, `FourierEmbedding` (random frequencies in the collection `buffers`).

Dtypes: `dtype` is the compute dtype. Parameters are kept in their own dtype (float32 by default)
and cast at use. Normalisation statistics and the attention softmax run in
`promote_types(dtype, float32)`, i.e. float32 for bf16/fp16/fp32 compute and float64 for an x64
float64 model (which is how the float64 reference of the fixtures was made).
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

Dtype = Any
Precision = Any


def stat_dtype(dtype: Dtype) -> Dtype:
  """Dtype for norms/softmax: at least float32."""
  return jnp.promote_types(dtype, jnp.float32)


def resample_filter_2d(taps: Sequence[float]) -> np.ndarray:
  """EDM's 2-D resampling filter outer(f, f) / sum(f)^2, float32 [k, k]."""
  f = np.asarray(taps, dtype=np.float32)
  if f.ndim != 1 or f.size < 1:
    raise ValueError(f"resample_filter must be a non-empty 1-D list of taps, got {taps!r}")
  return (np.outer(f, f) / np.float32(f.sum()) ** 2).astype(np.float32)


def edm_weight_init(mode: str, fan_in: int, fan_out: int, scale: float = 1.0):
  """Initializer with EDM's init modes (xavier/kaiming, uniform/normal) times `scale`.

  The variance depends only on fan_in/fan_out given here, so it also serves biases (EDM draws
  biases with the layer's fans).
  """
  if mode == "xavier_uniform":
    bound, dist = math.sqrt(6.0 / (fan_in + fan_out)), "uniform"
  elif mode == "xavier_normal":
    bound, dist = math.sqrt(2.0 / (fan_in + fan_out)), "normal"
  elif mode == "kaiming_uniform":
    bound, dist = math.sqrt(3.0 / fan_in), "uniform"
  elif mode == "kaiming_normal":
    bound, dist = math.sqrt(1.0 / fan_in), "normal"
  else:
    raise ValueError(f"unknown init mode {mode!r}")

  def init(key, shape, dtype=jnp.float32):
    if scale == 0:
      return jnp.zeros(shape, dtype)
    if dist == "uniform":
      return (bound * scale) * jax.random.uniform(key, shape, dtype, -1.0, 1.0)
    return (bound * scale) * jax.random.normal(key, shape, dtype)

  return init


class Linear(nn.Module):
  """y = x @ kernel + bias. x [..., in] -> [..., features] in `dtype`."""
  features: int
  use_bias: bool = True
  init_mode: str = "kaiming_normal"
  init_weight: float = 1.0
  init_bias: float = 0.0
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  precision: Precision = None

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    fan_in, fan_out = x.shape[-1], self.features
    w_init = edm_weight_init(self.init_mode, fan_in, fan_out, self.init_weight)
    kernel = self.param("kernel", w_init, (fan_in, fan_out), self.param_dtype)
    y = jnp.matmul(x.astype(self.dtype), kernel.astype(self.dtype), precision=self.precision)
    if self.use_bias:
      bias = self.param("bias", edm_weight_init(self.init_mode, fan_in, fan_out, self.init_bias),
                        (fan_out,), self.param_dtype)
      y = y + bias.astype(self.dtype)
    return y


def _conv(x, w, padding: int, precision, stride: int = 1, lhs_dilation: int = 1, groups: int = 1):
  return jax.lax.conv_general_dilated(
      x, w, window_strides=(stride, stride), padding=[(padding, padding)] * 2,
      lhs_dilation=(lhs_dilation, lhs_dilation), dimension_numbers=("NHWC", "HWIO", "NHWC"),
      feature_group_count=groups, precision=precision)


def _downsample(x: jax.Array, f2d: np.ndarray, padding: int, precision) -> jax.Array:
  """Depthwise stride-2 correlation with f2d (EDM's down path). [B,H,W,C] -> [B,H/2,W/2,C]."""
  c = x.shape[-1]
  w = jnp.tile(jnp.asarray(f2d, x.dtype)[:, :, None, None], (1, 1, 1, c))
  return _conv(x, w, padding, precision, stride=2, groups=c)


def _upsample(x: jax.Array, f2d: np.ndarray, padding: int, precision) -> jax.Array:
  """Depthwise stride-2 transposed conv with 4·f2d (EDM's up path). [B,H,W,C] -> [B,2H,2W,C].

  A transposed conv equals a correlation of the 2x zero-dilated input with the flipped kernel
  and padding k-1-p.
  """
  c, k = x.shape[-1], f2d.shape[0]
  w = jnp.asarray(np.ascontiguousarray(f2d[::-1, ::-1] * 4), x.dtype)
  w = jnp.tile(w[:, :, None, None], (1, 1, 1, c))
  return _conv(x, w, k - 1 - padding, precision, lhs_dilation=2, groups=c)


class Conv2d(nn.Module):
  """EDM's conv: optional 2x up/down resampling, then a 'same' k x k conv (k=0: resample only).

  x [B, H, W, Cin] -> [B, H', W', out_channels] (out_channels must equal Cin when kernel=0).
  `fused_resample` applies the conv before the downsampling (or after the upsampling) with
  merged padding, as EDM does for NCSN++'s `aux_residual`.
  """
  out_channels: int
  kernel: int
  use_bias: bool = True
  up: bool = False
  down: bool = False
  resample_filter: tuple[float, ...] = (1, 1)
  fused_resample: bool = False
  init_mode: str = "kaiming_normal"
  init_weight: float = 1.0
  init_bias: float = 0.0
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  precision: Precision = None

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    if self.up and self.down:
      raise ValueError("Conv2d: up and down are exclusive")
    x = x.astype(self.dtype)
    cin, k = x.shape[-1], self.kernel
    w = b = None
    if k:
      fans = (cin * k * k, self.out_channels * k * k)
      w = self.param("kernel", edm_weight_init(self.init_mode, *fans, self.init_weight),
                     (k, k, cin, self.out_channels), self.param_dtype).astype(self.dtype)
      if self.use_bias:
        b = self.param("bias", edm_weight_init(self.init_mode, *fans, self.init_bias),
                       (self.out_channels,), self.param_dtype).astype(self.dtype)
    elif cin != self.out_channels:
      raise ValueError(f"Conv2d with kernel=0 keeps channels, got {cin} -> {self.out_channels}")
    f = None
    if self.up or self.down:
      f = resample_filter_2d(self.resample_filter)
      if self.is_initializing():
        # Only so that exporters can enumerate EDM's `resample_filter` buffers.
        self.variable("resample_filters", "resample_filter", lambda: jnp.asarray(f))
    w_pad = k // 2
    f_pad = (f.shape[0] - 1) // 2 if f is not None else 0
    p = self.precision
    if self.fused_resample and self.up and w is not None:
      x = _upsample(x, f, max(f_pad - w_pad, 0), p)
      x = _conv(x, w, max(w_pad - f_pad, 0), p)
    elif self.fused_resample and self.down and w is not None:
      x = _conv(x, w, w_pad + f_pad, p)
      x = _downsample(x, f, 0, p)
    else:
      if self.up:
        x = _upsample(x, f, f_pad, p)
      if self.down:
        x = _downsample(x, f, f_pad, p)
      if w is not None:
        x = _conv(x, w, w_pad, p)
    if b is not None:
      x = x + b
    return x


class GroupNorm(nn.Module):
  """EDM's GroupNorm: min(num_groups, C // min_channels_per_group) groups, affine.

  x [B, H, W, C] (or [B, C]); statistics in at least float32; output in `dtype`.
  """
  eps: float = 1e-5
  num_groups: int = 32
  min_channels_per_group: int = 4
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    c = x.shape[-1]
    groups = min(self.num_groups, c // self.min_channels_per_group)
    if groups < 1 or c % groups:
      raise ValueError(f"GroupNorm: {c} channels cannot form {groups} equal groups")
    scale = self.param("scale", nn.initializers.ones, (c,), self.param_dtype)
    bias = self.param("bias", nn.initializers.zeros, (c,), self.param_dtype)
    sdt = stat_dtype(self.dtype)
    xg = x.astype(sdt).reshape(x.shape[:-1] + (groups, c // groups))
    axes = tuple(range(1, xg.ndim - 2)) + (xg.ndim - 1,)
    mean = jnp.mean(xg, axis=axes, keepdims=True)
    var = jnp.mean(jnp.square(xg - mean), axis=axes, keepdims=True)
    y = ((xg - mean) * jax.lax.rsqrt(var + self.eps)).reshape(x.shape)
    y = y * scale.astype(sdt) + bias.astype(sdt)
    return y.astype(self.dtype)


def attention(qkv: jax.Array, num_heads: int, dtype: Dtype, precision=None) -> jax.Array:
  """EDM's multi-head self-attention core on a fused qkv map.

  qkv: [B, H, W, 3C] from a 1x1 conv, with EDM's interleaved channel layout: channel
  h·(3C/heads) + c·3 + j holds q/k/v (j = 0/1/2) of head h, channel c. Returns [B, H, W, C] with
  output channel h·(C/heads) + c. Logits and softmax are computed in at least float32.
  """
  b, hh, ww, c3 = qkv.shape
  c = c3 // 3
  ch = c // num_heads
  qkv = qkv.reshape(b, hh * ww, num_heads, ch, 3)
  q, k, v = qkv[..., 0], qkv[..., 1], qkv[..., 2]  # [B, L, heads, ch]
  sdt = stat_dtype(dtype)
  k = k / math.sqrt(ch)
  logits = jnp.einsum("bqhc,bkhc->bhqk", q.astype(sdt), k.astype(sdt), precision=precision)
  w = jax.nn.softmax(logits, axis=-1).astype(dtype)
  a = jnp.einsum("bhqk,bkhc->bqhc", w, v.astype(dtype), precision=precision)
  return a.reshape(b, hh, ww, c)


class UNetBlock(nn.Module):
  """EDM's residual block with optional 2x up/down and self-attention.

  __call__(x [B,H,W,Cin], emb [B or 1, E]) -> [B, H', W', out_channels].
  num_heads: attention heads when `attention` (0 heads = no attention, as in EDM when
  out_channels < channels_per_head). Skip path: a conv when Cin != out_channels or up/down, with
  a 1x1 kernel if resample_proj or Cin != out_channels, else a bare resample.
  """
  out_channels: int
  up: bool = False
  down: bool = False
  attention: bool = False
  num_heads: int = 1
  dropout: float = 0.0
  skip_scale: float = 1.0
  eps: float = 1e-5
  resample_filter: tuple[float, ...] = (1, 1)
  resample_proj: bool = False
  adaptive_scale: bool = True
  init: tuple = (("init_mode", "kaiming_normal"),)  # kwargs for conv0/affine/skip
  init_zero: tuple = (("init_weight", 0.0),)  # kwargs for conv1/proj
  init_attn: tuple | None = None  # kwargs for qkv (None: `init`)
  deterministic: bool = True
  dtype: Dtype = jnp.float32
  precision: Precision = None

  @nn.compact
  def __call__(self, x: jax.Array, emb: jax.Array) -> jax.Array:
    cin, cout = x.shape[-1], self.out_channels
    common = dict(dtype=self.dtype, precision=self.precision)
    init, init_zero = dict(self.init), dict(self.init_zero)
    init_attn = dict(self.init_attn) if self.init_attn is not None else init
    norm = lambda name: GroupNorm(eps=self.eps, dtype=self.dtype, name=name)

    orig = x
    x = Conv2d(cout, 3, up=self.up, down=self.down, resample_filter=self.resample_filter,
               name="conv0", **init, **common)(nn.silu(norm("norm0")(x)))
    params = Linear(cout * (2 if self.adaptive_scale else 1), name="affine", **init,
                    **common)(emb)
    params = params[:, None, None, :].astype(self.dtype)
    if self.adaptive_scale:
      scale, shift = jnp.split(params, 2, axis=-1)
      x = nn.silu(shift + norm("norm1")(x) * (scale + 1))
    else:
      x = nn.silu(norm("norm1")(x + params))
    x = nn.Dropout(self.dropout, deterministic=self.deterministic)(x)
    x = Conv2d(cout, 3, name="conv1", **init_zero, **common)(x)
    if cout != cin or self.up or self.down:
      kernel = 1 if (self.resample_proj or cout != cin) else 0
      orig = Conv2d(cout, kernel, up=self.up, down=self.down,
                    resample_filter=self.resample_filter, name="skip", **init, **common)(orig)
    x = (x + orig.astype(self.dtype)) * self.skip_scale

    if self.attention and self.num_heads:
      qkv = Conv2d(cout * 3, 1, name="qkv", **init_attn, **common)(norm("norm2")(x))
      a = attention(qkv, self.num_heads, self.dtype, self.precision)
      x = (Conv2d(cout, 1, name="proj", **init_zero, **common)(a) + x) * self.skip_scale
    return x


class PositionalEmbedding(nn.Module):
  """Sinusoidal embedding [cos(x f), sin(x f)], f_i = (1/max_positions)^(i / (N/2 - endpoint)).

  x [B] -> [B, num_channels]. The frequency table is built in at least float32 (EDM uses float32;
  a float64 input gives a float64 table).
  """
  num_channels: int
  max_positions: int = 10000
  endpoint: bool = False

  def __call__(self, x: jax.Array) -> jax.Array:
    half = self.num_channels // 2
    freqs = jnp.arange(half, dtype=stat_dtype(x.dtype)) / (half - (1 if self.endpoint else 0))
    freqs = (1.0 / self.max_positions) ** freqs
    x = jnp.outer(x, freqs.astype(x.dtype))
    return jnp.concatenate([jnp.cos(x), jnp.sin(x)], axis=1)


class FourierEmbedding(nn.Module):
  """Random Fourier features [cos(2π x f), sin(2π x f)], f ~ N(0, scale²) fixed at init.

  x [B] -> [B, num_channels]. `f` lives in the variable collection `buffers` (EDM's
  `map_noise.freqs` buffer); it is not a trainable parameter.
  """
  num_channels: int
  scale: float = 16.0

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    freqs = self.variable(
        "buffers", "freqs",
        lambda: jax.random.normal(self.make_rng("params"), (self.num_channels // 2,)) * self.scale)
    f = (2 * np.pi * freqs.value).astype(x.dtype)
    x = jnp.outer(x, f)
    return jnp.concatenate([jnp.cos(x), jnp.sin(x)], axis=1)
