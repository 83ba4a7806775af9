"""Improved precision and recall (Kynkäänniemi et al., 2019) over feature arrays.

Each set of features defines a manifold: the union of balls around its points whose radius is
the distance to the point's k-th nearest neighbour in the same set (k=3; the point itself is the
0-th neighbour). Precision is the fraction of generated features inside the real manifold, recall
the fraction of real features inside the generated manifold. A point on a ball's boundary counts
as inside (distance <= radius), as in the reference implementations.

The features are whatever the caller supplies: the paper uses VGG-16 fc2 features, while ADM's
evaluator (the numbers quoted for ImageNet 64x64 by EDM-era papers) uses Inception pool3 features;
say which when reporting. Distances are computed on device in fixed-size blocks (squared
Euclidean, |a|^2 + |b|^2 - 2ab at HIGHEST precision), so 50k x 50k never materialises.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np


@jax.jit
def _sq_dists(a: jax.Array, b: jax.Array) -> jax.Array:
  """Squared distances [n, m] between a [n, d] and b [m, d] (clamped at 0)."""
  ab = jnp.matmul(a, b.T, precision=jax.lax.Precision.HIGHEST)
  d = jnp.sum(a * a, axis=1)[:, None] + jnp.sum(b * b, axis=1)[None, :] - 2.0 * ab
  return jnp.maximum(d, 0.0)


@functools.partial(jax.jit, static_argnames="k")
def _merge_smallest(best: jax.Array, rows: jax.Array, cols: jax.Array, col_valid: jax.Array,
                    k: int) -> jax.Array:
  """Keeps the k+1 smallest squared distances per row after seeing another block of columns."""
  d = jnp.where(col_valid[None, :], _sq_dists(rows, cols), jnp.inf)
  neg, _ = jax.lax.top_k(-jnp.concatenate([best, d], axis=1), k + 1)
  return -neg


@jax.jit
def _inside(queries: jax.Array, points: jax.Array, radii_sq: jax.Array) -> jax.Array:
  """[n] bool: query lies within some ball (points [m], squared radii [m]; -inf = no ball)."""
  return jnp.any(_sq_dists(queries, points) <= radii_sq[None, :], axis=1)


def _blocks(x: np.ndarray, block: int) -> list[tuple[np.ndarray, np.ndarray]]:
  """Splits x [n, d] into zero-padded [block, d] chunks with a validity mask each."""
  out = []
  for s in range(0, x.shape[0], block):
    chunk = x[s:s + block]
    valid = np.ones(block, bool)
    valid[chunk.shape[0]:] = False
    if chunk.shape[0] < block:
      chunk = np.concatenate([chunk, np.zeros((block - chunk.shape[0], x.shape[1]), x.dtype)])
    out.append((chunk, valid))
  return out


def manifold_radii_sq(features: np.ndarray, k: int = 3, block: int = 4096) -> np.ndarray:
  """Squared distance of each point [N, d] to its k-th nearest neighbour in the set: [N]."""
  x = np.asarray(features, np.float32)
  if x.ndim != 2 or x.shape[0] <= k:
    raise ValueError(f"features must be [N > k={k}, d], got {x.shape}")
  block = min(block, x.shape[0])
  blocks = _blocks(x, block)
  radii = []
  for rows, row_valid in blocks:
    best = jnp.full((block, k + 1), jnp.inf, jnp.float32)
    for cols, col_valid in blocks:
      best = _merge_smallest(best, rows, cols, col_valid, k)
    radii.append(np.asarray(best[:, k])[row_valid])
  return np.concatenate(radii)


def coverage_fraction(queries: np.ndarray, points: np.ndarray, radii_sq: np.ndarray,
                      block: int = 4096) -> float:
  """Fraction of queries [n, d] inside the manifold of points [m, d] with radii_sq [m]."""
  q, p = np.asarray(queries, np.float32), np.asarray(points, np.float32)
  if q.ndim != 2 or p.ndim != 2 or q.shape[1] != p.shape[1]:
    raise ValueError(f"queries {q.shape} and points {p.shape} must be [n, d] with the same d")
  if radii_sq.shape != (p.shape[0],):
    raise ValueError(f"radii_sq has shape {radii_sq.shape}, expected ({p.shape[0]},)")
  qb, pb = min(block, q.shape[0]), min(block, p.shape[0])
  chunks = _blocks(p, pb)
  r = np.full(len(chunks) * pb, -np.inf, np.float32)  # Padding points get no ball.
  r[:p.shape[0]] = radii_sq
  point_blocks = [(c, jnp.asarray(r[i * pb:(i + 1) * pb])) for i, (c, _) in enumerate(chunks)]
  hits = 0
  for rows, row_valid in _blocks(q, qb):
    inside = jnp.zeros(qb, bool)
    for cols, radii_block in point_blocks:
      inside = inside | _inside(rows, cols, radii_block)
    hits += int(np.sum(np.asarray(inside)[row_valid]))
  return hits / q.shape[0]


def precision_recall(real_features: np.ndarray, fake_features: np.ndarray, k: int = 3,
                     block: int = 4096) -> tuple[float, float]:
  """(precision, recall) of fake [M, d] against real [N, d] features, k-NN manifolds."""
  real = np.asarray(real_features, np.float32)
  fake = np.asarray(fake_features, np.float32)
  if real.ndim != 2 or fake.ndim != 2 or real.shape[1] != fake.shape[1]:
    raise ValueError(f"real {real.shape} and fake {fake.shape} features must be [n, d], same d")
  precision = coverage_fraction(fake, real, manifold_radii_sq(real, k, block), block)
  recall = coverage_fraction(real, fake, manifold_radii_sq(fake, k, block), block)
  return precision, recall
