"""Flax port of the FID Inception-v3 (TF graph `inception-2015-12-05`), NHWC.

This is the network that every published FID number is computed with: the TensorFlow graph of
2015-12-05, in the layout of pytorch-fid's `fid_inception_v3()` (torchvision's Inception3 with the
`FIDInceptionA/C/E_1/E_2` patches) and of NVlabs' `inception-2015-12-05.pkl` detector used by
StyleGAN/EDM. The differences from a plain Inception-v3 that matter for FID:
* 1008 output classes (the TF graph's label map), BatchNorm epsilon 1e-3, convolutions without bias;
* average pools inside Mixed_5*/6*/7b do not count the zero padding (TF 'SAME' semantics);
* Mixed_7c's pool branch is a 3x3 *max* pool (a quirk of that graph, kept for comparability).

The module returns the 2048-d pool3 features (global average of Mixed_7c), and optionally the
1008 logits. Parameter names follow the torch state_dict (`Mixed_5b/branch1x1/conv/kernel`,
`.../bn/{scale,bias}` and batch_stats `.../bn/{mean,var}`), so conversion is a key rename
(see fdistill_jax/convert/inception_weights.py).

Input conventions (`preprocess`):
* "pytorch_fid": float images in [0, 1]. Bilinear resize to 299x299 with half-pixel centres and
  edge clamping (torch `F.interpolate(mode="bilinear", align_corners=False)`, no antialias), then
  x -> 2x - 1. Matches `pytorch_fid.inception.InceptionV3(resize_input=True,
  normalize_input=True)`; a uint8 PNG u arrives there as u / 255.
* "nvlabs": images in [0, 255] (uint8 or float). Bilinear resize as in TF1's
  `resize_bilinear(align_corners=False)` (source pixel = j * in / out, no half-pixel offset,
  clamped to the border: what NVlabs' detector reproduces with affine_grid/grid_sample), then
  x -> (x - 128) / 128. This is the convention of the EDM/StyleGAN reference statistics
  (`fid-refs/*.npz`), so use it to compare with published EDM-style numbers.
* "none": images already 299x299 in the network range [-1, 1]; no resize.
The two resizes differ by a sub-pixel shift of (in/out - 1) / 2 input pixels (about -0.45 px
for 32 -> 299), and the two scalings by a factor 128/127.5; both move FID slightly, so features
and reference statistics must use the same convention.
"""
from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

INPUT_SIZE = 299
FEATURE_DIM = 2048
NUM_CLASSES = 1008
PREPROCESS_MODES = ("pytorch_fid", "nvlabs", "none")


def _interp_matrix(in_size: int, out_size: int, half_pixel: bool) -> np.ndarray:
  """Bilinear interpolation weights [out_size, in_size] (float64, rows sum to 1)."""
  scale = in_size / out_size
  j = np.arange(out_size, dtype=np.float64)
  if half_pixel:  # torch align_corners=False: src = (j + 0.5) * scale - 0.5, clamped below at 0.
    src = np.maximum((j + 0.5) * scale - 0.5, 0.0)
  else:  # TF1 resize_bilinear (align_corners=False, half_pixel_centers=False).
    src = j * scale
  src = np.minimum(src, in_size - 1)
  i0 = np.floor(src).astype(np.int64)
  i1 = np.minimum(i0 + 1, in_size - 1)
  w1 = src - i0
  m = np.zeros((out_size, in_size), np.float64)
  np.add.at(m, (np.arange(out_size), i0), 1.0 - w1)
  np.add.at(m, (np.arange(out_size), i1), w1)
  return m


def resize_bilinear(x: jax.Array, size: int, half_pixel: bool,
                    precision: jax.lax.Precision = jax.lax.Precision.HIGHEST) -> jax.Array:
  """Separable bilinear resize of x [N, H, W, C] float to [N, size, size, C] (no antialias).

  `half_pixel=True` is torch's align_corners=False; False is TF1's legacy (asymmetric) mapping.
  Shapes are static, so the weight matrices are constants folded into the jitted graph.
  """
  _, h, w, _ = x.shape
  mh = jnp.asarray(_interp_matrix(h, size, half_pixel), x.dtype)
  mw = jnp.asarray(_interp_matrix(w, size, half_pixel), x.dtype)
  x = jnp.einsum("oh,nhwc->nowc", mh, x, precision=precision)
  return jnp.einsum("pw,nowc->nopc", mw, x, precision=precision)


def _pair(v: int | Sequence[int]) -> tuple[int, int]:
  return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


class BasicConv(nn.Module):
  """Conv (no bias) + BatchNorm (inference statistics, eps 1e-3) + ReLU, as torchvision's."""
  features: int
  kernel: int | Sequence[int] = 1
  stride: int = 1
  padding: int | Sequence[int] = 0
  precision: jax.lax.Precision = jax.lax.Precision.HIGHEST

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    ph, pw = _pair(self.padding)
    x = nn.Conv(self.features, _pair(self.kernel), strides=(self.stride, self.stride),
                padding=((ph, ph), (pw, pw)), use_bias=False, precision=self.precision,
                name="conv")(x)
    x = nn.BatchNorm(use_running_average=True, epsilon=1e-3, name="bn")(x)
    return nn.relu(x)


def _avg_pool_same(x: jax.Array) -> jax.Array:
  # TF 'SAME' average pool: padded zeros are not counted (pytorch-fid's count_include_pad=False).
  return nn.avg_pool(x, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)), count_include_pad=False)


def _max_pool_3x3_s2(x: jax.Array) -> jax.Array:
  return nn.max_pool(x, (3, 3), strides=(2, 2), padding="VALID")


class InceptionA(nn.Module):
  """Mixed_5b/5c/5d: 1x1, 5x5, double 3x3 and average-pool branches."""
  pool_features: int
  precision: jax.lax.Precision = jax.lax.Precision.HIGHEST

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    c = lambda f, k=1, p=0, name=None: BasicConv(f, k, 1, p, self.precision, name=name)
    b1 = c(64, name="branch1x1")(x)
    b5 = c(64, 5, 2, name="branch5x5_2")(c(48, name="branch5x5_1")(x))
    b3 = c(64, name="branch3x3dbl_1")(x)
    b3 = c(96, 3, 1, name="branch3x3dbl_3")(c(96, 3, 1, name="branch3x3dbl_2")(b3))
    bp = c(self.pool_features, name="branch_pool")(_avg_pool_same(x))
    return jnp.concatenate([b1, b5, b3, bp], axis=-1)


class InceptionB(nn.Module):
  """Mixed_6a: grid reduction 35 -> 17."""
  precision: jax.lax.Precision = jax.lax.Precision.HIGHEST

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    b3 = BasicConv(384, 3, 2, 0, self.precision, name="branch3x3")(x)
    bd = BasicConv(64, 1, 1, 0, self.precision, name="branch3x3dbl_1")(x)
    bd = BasicConv(96, 3, 1, 1, self.precision, name="branch3x3dbl_2")(bd)
    bd = BasicConv(96, 3, 2, 0, self.precision, name="branch3x3dbl_3")(bd)
    return jnp.concatenate([b3, bd, _max_pool_3x3_s2(x)], axis=-1)


class InceptionC(nn.Module):
  """Mixed_6b..6e: factorised 7x7 branches."""
  channels_7x7: int
  precision: jax.lax.Precision = jax.lax.Precision.HIGHEST

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    c7, p = self.channels_7x7, self.precision
    row, col = ((1, 7), (0, 3)), ((7, 1), (3, 0))  # (kernel, padding) of 1x7 and 7x1 convs.
    b1 = BasicConv(192, 1, 1, 0, p, name="branch1x1")(x)
    b7 = BasicConv(c7, 1, 1, 0, p, name="branch7x7_1")(x)
    b7 = BasicConv(c7, row[0], 1, row[1], p, name="branch7x7_2")(b7)
    b7 = BasicConv(192, col[0], 1, col[1], p, name="branch7x7_3")(b7)
    bd = BasicConv(c7, 1, 1, 0, p, name="branch7x7dbl_1")(x)
    for i, (f, (k, pad)) in enumerate([(c7, col), (c7, row), (c7, col), (192, row)], start=2):
      bd = BasicConv(f, k, 1, pad, p, name=f"branch7x7dbl_{i}")(bd)
    bp = BasicConv(192, 1, 1, 0, p, name="branch_pool")(_avg_pool_same(x))
    return jnp.concatenate([b1, b7, bd, bp], axis=-1)


class InceptionD(nn.Module):
  """Mixed_7a: grid reduction 17 -> 8."""
  precision: jax.lax.Precision = jax.lax.Precision.HIGHEST

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    p = self.precision
    b3 = BasicConv(192, 1, 1, 0, p, name="branch3x3_1")(x)
    b3 = BasicConv(320, 3, 2, 0, p, name="branch3x3_2")(b3)
    b7 = BasicConv(192, 1, 1, 0, p, name="branch7x7x3_1")(x)
    b7 = BasicConv(192, (1, 7), 1, (0, 3), p, name="branch7x7x3_2")(b7)
    b7 = BasicConv(192, (7, 1), 1, (3, 0), p, name="branch7x7x3_3")(b7)
    b7 = BasicConv(192, 3, 2, 0, p, name="branch7x7x3_4")(b7)
    return jnp.concatenate([b3, b7, _max_pool_3x3_s2(x)], axis=-1)


class InceptionE(nn.Module):
  """Mixed_7b (average pool, no padding counted) and Mixed_7c (`max_pool=True`)."""
  max_pool: bool = False
  precision: jax.lax.Precision = jax.lax.Precision.HIGHEST

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    p = self.precision
    c = lambda f, k, pad, name: BasicConv(f, k, 1, pad, p, name=name)
    b1 = c(320, 1, 0, "branch1x1")(x)
    b3 = c(384, 1, 0, "branch3x3_1")(x)
    b3 = jnp.concatenate([c(384, (1, 3), (0, 1), "branch3x3_2a")(b3),
                          c(384, (3, 1), (1, 0), "branch3x3_2b")(b3)], axis=-1)
    bd = c(448, 1, 0, "branch3x3dbl_1")(x)
    bd = c(384, 3, 1, "branch3x3dbl_2")(bd)
    bd = jnp.concatenate([c(384, (1, 3), (0, 1), "branch3x3dbl_3a")(bd),
                          c(384, (3, 1), (1, 0), "branch3x3dbl_3b")(bd)], axis=-1)
    if self.max_pool:  # The FID graph's Mixed_7c quirk; max pool pads with -inf ('SAME').
      pooled = nn.max_pool(x, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)))
    else:
      pooled = _avg_pool_same(x)
    bp = c(192, 1, 0, "branch_pool")(pooled)
    return jnp.concatenate([b1, b3, bd, bp], axis=-1)


class FIDInceptionV3(nn.Module):
  """FID Inception-v3: images [N, H, W, 3] -> pool3 features [N, 2048] float32.

  Attributes:
    preprocess: input convention, one of PREPROCESS_MODES (see the module docstring).
    precision: conv/resize precision. HIGHEST by default so that accelerators do not silently
      use TF32/bf16 passes, which would shift the features (and FID) against the reference.
    input_size: resize target. 299 for FID; smaller (>= 75) only for fast tests.
  """
  preprocess: str = "pytorch_fid"
  precision: jax.lax.Precision = jax.lax.Precision.HIGHEST
  input_size: int = INPUT_SIZE

  @nn.compact
  def __call__(self, images: jax.Array, return_logits: bool = False
               ) -> jax.Array | tuple[jax.Array, jax.Array]:
    """Returns features [N, 2048] (and logits [N, 1008] if `return_logits`)."""
    if images.ndim != 4 or images.shape[-1] != 3:
      raise ValueError(f"FIDInceptionV3 expects NHWC images with 3 channels, got {images.shape}")
    x = images.astype(jnp.float32)
    if self.preprocess == "pytorch_fid":
      x = resize_bilinear(x, self.input_size, half_pixel=True, precision=self.precision)
      x = 2.0 * x - 1.0
    elif self.preprocess == "nvlabs":
      x = resize_bilinear(x, self.input_size, half_pixel=False, precision=self.precision)
      x = (x - 128.0) / 128.0
    elif self.preprocess != "none":
      raise ValueError(f"preprocess must be one of {PREPROCESS_MODES}, got {self.preprocess!r}")
    p = self.precision
    x = BasicConv(32, 3, 2, 0, p, name="Conv2d_1a_3x3")(x)
    x = BasicConv(32, 3, 1, 0, p, name="Conv2d_2a_3x3")(x)
    x = BasicConv(64, 3, 1, 1, p, name="Conv2d_2b_3x3")(x)
    x = _max_pool_3x3_s2(x)
    x = BasicConv(80, 1, 1, 0, p, name="Conv2d_3b_1x1")(x)
    x = BasicConv(192, 3, 1, 0, p, name="Conv2d_4a_3x3")(x)
    x = _max_pool_3x3_s2(x)
    for name, pool_features in (("Mixed_5b", 32), ("Mixed_5c", 64), ("Mixed_5d", 64)):
      x = InceptionA(pool_features, p, name=name)(x)
    x = InceptionB(p, name="Mixed_6a")(x)
    for name, c7 in (("Mixed_6b", 128), ("Mixed_6c", 160), ("Mixed_6d", 160), ("Mixed_6e", 192)):
      x = InceptionC(c7, p, name=name)(x)
    x = InceptionD(p, name="Mixed_7a")(x)
    x = InceptionE(False, p, name="Mixed_7b")(x)
    x = InceptionE(True, p, name="Mixed_7c")(x)
    features = jnp.mean(x, axis=(1, 2))
    # Declared unconditionally so that `init` always creates the fc weights of the weight file.
    logits = nn.Dense(NUM_CLASSES, precision=p, name="fc")(features)
    return (features, logits) if return_logits else features
