"""EDM's geometric augmentation (Karras et al. 2022, App. F.2; built on ADA, Karras et al. 2020).

EDM trains its CIFAR-10 networks on augmented images and tells the network which augmentation it
sees through a 9-d label fed to map_augment (so that sampling with zero labels gives clean
images). EDM's CLI `--augment 0.12` enables, each with probability p = 0.12 per sample unless said:
  xflip (probability min(1, 1e8·p) = 1 of being eligible, then a fair coin), yflip (p, then a
  coin), isotropic scale 2^(0.2 w), rotation by θ ~ U(−π, π), anisotropic scale 2^(0.2 w) along
  a frame rotated by r (r ~ U(−π, π) with probability 1/2, else 0; drawn independently of p),
  translation by (0.125 W w_x, 0.125 H w_y) pixels (one decision for both axes); w ~ N(0, 1).
  A transform not applied has its parameters, hence its labels, at 0.
Augment labels [B, 9] float32, in this order:
  0 xflip ∈ {0, 1}   1 yflip ∈ {0, 1}   2 scale w   3 cos θ − 1   4 sin θ
  5 w_aniso cos r    6 w_aniso sin r    7 translate w_x   8 translate w_y
so no augmentation gives all zeros.
Execution: flips are pixel blits (applied first). The rest is one inverse matrix per sample,
  G⁻¹ = S(2^−0.2w) · R(θ) · R(−r) S(2^−0.2w_a, 2^0.2w_a) R(r) · T(−t),   R(a) = [[cos a, −sin a],
  [sin a, cos a]], mapping an output pixel's coordinates (x right, y down, origin at the image
centre) to where it is read in the input. The image is reflect-padded, upsampled 2× with the sym6
wavelet low-pass (synthesis), read at G⁻¹-mapped points with bilinear interpolation (zeros
outside the padded image), and downsampled 2× with the same filter (analysis), as in ADA. With
G⁻¹ = I (or an integer translation within the padding) this is the identity up to float rounding,
since sym6 is orthogonal. θ = π/2 turns the image like jnp.rot90(k=1) on the (H, W) axes.
`resample(..., supersample=False)` reads the image directly with bilinear interpolation (exact for
quarter turns and integer shifts); it is for tests and comparison, EDM uses the supersampled path.
EDM pads by a per-batch margin (clamped at H − 1, W − 1); padding always by the maximum reads the
same values, so outputs match EDM's (tests/test_augment.py: NVlabs/edm outputs within 3e-5).
Every sample goes through the resampling, also those with G⁻¹ = I (as in EDM).

Usage: images, labels = augment(key, images, p) with images NHWC float [B, H, W, C]; jit-able
(p and the multipliers are static Python floats). p = 0 returns the input and zero labels.
"""
from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from fdistill_jax.validation import need

AUGMENT_DIM = 9
# sym6 low-pass (reconstruction) filter; Σ h = √2 and Σ_m h[m] h[m + 2l] = δ_l (orthogonal).
SYM6 = np.array([
    0.015404109327027373, 0.0034907120842174702, -0.11799011114819057, -0.048311742585633,
    0.4910559419267466, 0.787641141030194, 0.3379294217276218, -0.07263752278646252,
    -0.021060292512300564, 0.04472490177066578, 0.0017677118642428036, -0.007800708325034148])
# EDM's --augment defaults (probability multipliers and spreads).
EDM_DEFAULTS = dict(xflip=1e8, yflip=1.0, scale=1.0, rotate_frac=1.0, aniso=1.0,
                    translate_frac=1.0, scale_std=0.2, rotate_frac_max=1.0, aniso_std=0.2,
                    aniso_rotate_prob=0.5, translate_frac_std=0.125)


class Draws(NamedTuple):
  """Per-sample augmentation parameters, each [B] float32 (0 = not applied)."""
  xflip: jax.Array      # 0 or 1
  yflip: jax.Array      # 0 or 1
  scale: jax.Array      # w: isotropic scale 2^(scale_std w)
  rotate: jax.Array     # θ in radians
  aniso: jax.Array      # w_a: anisotropic scale 2^(aniso_std w_a)
  aniso_angle: jax.Array  # r: frame of the anisotropic scaling
  tx: jax.Array         # w_x: translation w_x·translate_frac_std·W pixels
  ty: jax.Array         # w_y


def identity_draws(batch: int) -> Draws:
  z = jnp.zeros((batch,), jnp.float32)
  return Draws(*([z] * 8))


def sample_draws(key: jax.Array, batch: int, p: float, **mult) -> Draws:
  """Draws for `batch` samples with overall probability p (EDM_DEFAULTS overridden by `mult`)."""
  o = {**EDM_DEFAULTS, **mult}
  unknown = set(mult) - set(EDM_DEFAULTS)
  if unknown:
    raise ValueError(f"unknown augmentation options {sorted(unknown)}; known: {sorted(EDM_DEFAULTS)}")
  ks = iter(jax.random.split(key, 15))
  u = lambda: jax.random.uniform(next(ks), (batch,))
  on = lambda m: u() < m * p          # "apply this transform" with probability min(1, m·p)
  coin = lambda: jax.random.bernoulli(next(ks), 0.5, (batch,)).astype(jnp.float32)
  normal = lambda: jax.random.normal(next(ks), (batch,))
  sym = lambda scale: (u() * 2 - 1) * scale   # U(−scale, scale)
  xflip = jnp.where(on(o["xflip"]), coin(), 0.0)
  yflip = jnp.where(on(o["yflip"]), coin(), 0.0)
  scale = jnp.where(on(o["scale"]), normal(), 0.0)
  rotate = jnp.where(on(o["rotate_frac"]), sym(np.pi * o["rotate_frac_max"]), 0.0)
  aniso = jnp.where(on(o["aniso"]), normal(), 0.0)
  angle = jnp.where(u() < o["aniso_rotate_prob"], sym(np.pi), 0.0)
  t_on = on(o["translate_frac"])       # one decision for both axes
  tx, ty = (jnp.where(t_on, normal(), 0.0) for _ in range(2))
  return Draws(*(jnp.asarray(a, jnp.float32) for a in
                 (xflip, yflip, scale, rotate, aniso, angle, tx, ty)))


def labels(d: Draws) -> jax.Array:
  """The 9-d augment labels [B, 9] float32 of the draws (order in the module docstring)."""
  return jnp.stack([d.xflip, d.yflip, d.scale, jnp.cos(d.rotate) - 1, jnp.sin(d.rotate),
                    d.aniso * jnp.cos(d.aniso_angle), d.aniso * jnp.sin(d.aniso_angle),
                    d.tx, d.ty], axis=1).astype(jnp.float32)


def _rot(a):
  c, s = jnp.cos(a), jnp.sin(a)
  return jnp.stack([jnp.stack([c, -s], -1), jnp.stack([s, c], -1)], -2)


def _diag(sx, sy):
  z = jnp.zeros_like(sx)
  return jnp.stack([jnp.stack([sx, z], -1), jnp.stack([z, sy], -1)], -2)


def inverse_matrix(d: Draws, height: int, width: int, **mult) -> tuple[jax.Array, jax.Array]:
  """(A [B, 2, 2], b [B, 2]): input point = A·output point + b, centred pixel coordinates (x, y)."""
  o = {**EDM_DEFAULTS, **mult}
  s = jnp.exp2(-o["scale_std"] * d.scale)
  sa = jnp.exp2(o["aniso_std"] * d.aniso)
  r = d.aniso_angle
  a = (_diag(s, s) @ _rot(d.rotate) @ _rot(-r) @ _diag(1 / sa, sa) @ _rot(r))
  t = jnp.stack([d.tx * (width * o["translate_frac_std"]),
                 d.ty * (height * o["translate_frac_std"])], -1)
  return a, -jnp.einsum("bij,bj->bi", a, t)


def _bilinear(img: jax.Array, rows: jax.Array, cols: jax.Array) -> jax.Array:
  """img [H, W, C] read at fractional (rows, cols) [...]; zeros outside. -> [..., C]."""
  read = lambda ch: jax.scipy.ndimage.map_coordinates(ch, [rows, cols], order=1, mode="constant",
                                                      cval=0.0)
  return jax.vmap(read, in_axes=2, out_axes=-1)(img)


def _correlate(x: jax.Array, taps: np.ndarray, axis: int, pad: int, stride: int) -> jax.Array:
  """1-D correlation of x along `axis`, per channel: y[j] = Σ_i taps[i] x[stride·j + i − pad]
  (zeros outside). A sum of shifted slices: XLA's CPU depthwise convolution is much slower."""
  cfg = [(0, 0)] * x.ndim
  cfg[axis] = (pad, pad)
  xp = jnp.pad(x, cfg)
  n = (xp.shape[axis] - len(taps)) // stride + 1
  out = 0.0
  for i, t in enumerate(np.asarray(taps, np.float64)):
    out = out + float(t) * jax.lax.slice_in_dim(xp, i, i + stride * (n - 1) + 1, stride, axis)
  return out


def _filter(x: jax.Array, taps: np.ndarray, axis: int, *, up: bool) -> jax.Array:
  """Along axis 1 or 2 of NHWC x: 2× zero-stuffed full convolution (up: u[m] = Σ_k x[k] h[m − 2k],
  length 2N + len(h) − 2) or stride-2 correlation (down: z[n] = Σ_i h[i] v[2n + i])."""
  if not up:
    return _correlate(x, taps, axis, 0, 2)
  # Polyphase: u[2j + r] = Σ_k x[k] h[2(j − k) + r], a plain convolution with h[r::2] (no
  # multiplications by the stuffed zeros).
  half = len(taps) // 2
  phases = [_correlate(x, taps[r::2][::-1], axis, half - 1, 1) for r in (0, 1)]
  u = jnp.stack(phases, axis=axis + 1)
  shape = list(x.shape)
  shape[axis] = 2 * u.shape[axis]
  return u.reshape(shape)


@functools.partial(jax.jit, static_argnames="supersample")  # Also fast when called eagerly.
def resample(images: jax.Array, a: jax.Array, b: jax.Array, *, supersample: bool = True):
  """Warp images [B, H, W, C] by the inverse map (a [B, 2, 2], b [B, 2]); same shape and dtype.

  Reflect padding of H − 1 / W − 1 pixels (the most EDM uses), so every point read within that
  margin sees the mirrored image.
  """
  bsz, h, w, _ = images.shape
  x = jnp.pad(images.astype(jnp.float32), ((0, 0), (h - 1, h - 1), (w - 1, w - 1), (0, 0)),
              mode="reflect")
  cy, cx = (h - 1) / 2, (w - 1) / 2
  if not supersample:
    yy, xx = jnp.meshgrid(jnp.arange(h) - cy, jnp.arange(w) - cx, indexing="ij")
    out_pts = jnp.stack([xx, yy], -1)                      # [H, W, 2] (x, y)
    src = jnp.einsum("bij,hwj->bhwi", a, out_pts) + b[:, None, None]
    warp = lambda img, s: _bilinear(img, s[..., 1] + cy + h - 1, s[..., 0] + cx + w - 1)
    return jax.vmap(warp)(x, src).astype(images.dtype)
  n = len(SYM6)
  off = n // 2 - 1   # The filters' centre: padded pixel q sits at upsampled coordinate 2q + off.
  u = _filter(_filter(x, SYM6, 1, up=True), SYM6, 2, up=True)
  # Keep 2 samples per padded pixel (zeros beyond, like EDM), so sample 2q is pixel q.
  ph, pw = x.shape[1:3]
  u = u[:, off:off + 2 * ph, off:off + 2 * pw]
  # Output samples that the analysis filter needs for pixels 0..N-1: m = 2(q0 + n') + i.
  grid = lambda size: 2 * (size - 1) + jnp.arange(2 * size + n - 2)
  to_centred = lambda m, size, c: (m - off) / 2 - (size - 1) - c
  my, mx = jnp.meshgrid(to_centred(grid(h), h, cy), to_centred(grid(w), w, cx), indexing="ij")
  src = jnp.einsum("bij,hwj->bhwi", a, jnp.stack([mx, my], -1)) + b[:, None, None]
  to_up = lambda v, size, c: 2 * (v + c + size - 1)
  warp = lambda img, s: _bilinear(img, to_up(s[..., 1], h, cy), to_up(s[..., 0], w, cx))
  v = jax.vmap(warp)(u, src)
  return _filter(_filter(v, SYM6, 1, up=False), SYM6, 2, up=False).astype(images.dtype)


def apply(images: jax.Array, d: Draws, *, supersample: bool = True, **mult):
  """(augmented images [B, H, W, C], labels [B, 9]) for given draws: flips, then the warp."""
  _, h, w, _ = images.shape
  x = jnp.where(d.xflip[:, None, None, None] > 0, images[:, :, ::-1], images)
  x = jnp.where(d.yflip[:, None, None, None] > 0, x[:, ::-1], x)
  a, b = inverse_matrix(d, h, w, **mult)
  return resample(x, a, b, supersample=supersample), labels(d)


def augment(key: jax.Array, images: jax.Array, p: float, **mult):
  """EDM's augmentation with probability p: (images [B, H, W, C], labels [B, 9] float32).

  p = 0 returns `images` unchanged and zero labels (no resampling at all).
  """
  if images.ndim != 4:
    raise ValueError(f"augment expects NHWC images [B, H, W, C], got shape {images.shape}")
  if not 0 <= p <= 1:
    raise ValueError(f"augmentation probability p must be in [0, 1], got {p}")
  if p == 0:
    return images, jnp.zeros((images.shape[0], AUGMENT_DIM), jnp.float32)
  return apply(images, sample_draws(key, images.shape[0], p, **mult), **mult)


def for_denoiser(key: jax.Array, images: jax.Array, p: float):
  """(images, kwargs) for a denoiser trained on augmented data: p = 0 gives (images, {}) so
  students without augment labels are called as before; else the augmented images and
  {'augment_labels': [B, 9]} (config.method.augment_p in edm_training and SiD's fake score)."""
  if not p:
    return images, {}
  out, lab = augment(key, images, p)
  return out, {"augment_labels": lab}


def check_p(cfg) -> None:
  """config.method.augment_p must be in [0, 1], and > 0 only for a teacher with augment_dim 9."""
  p = cfg.method.get("augment_p", 0.0)
  need(0 <= p <= 1, "method.augment_p", p, "a probability in [0, 1] (EDM uses 0.12; 0 = off)")
  if p:
    kw = cfg.teacher.get("precond_kwargs", {})  # Only EDM teachers have one (config probe).
    need(kw.get("augment_dim", 0) == AUGMENT_DIM, "teacher.precond_kwargs.augment_dim",
         kw.get("augment_dim", 0), f"must be {AUGMENT_DIM} (an EDM network with map_augment) "
         "when method.augment_p > 0")
