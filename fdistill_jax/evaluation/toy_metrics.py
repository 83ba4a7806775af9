"""Metrics against exact truth for the analytic (Gaussian-mixture) problems.

* sliced_wasserstein: SW₂ between two point clouds, averaged over random unit directions
  (sorted 1-D projections; equal sample counts).
* mode_stats: assign each sample to its most probable mixture component (exact posterior at σ=0),
  giving per-mode mass, its total-variation error against the true weights, and the number of
  modes covered (a mode is covered when it holds at least `cover_frac` of its true weight).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from fdistill_jax.teachers.analytic import GaussianMixture


def sliced_wasserstein(x: jax.Array, y: jax.Array, key: jax.Array, num_proj: int = 256) -> float:
  """SW₂(x, y) for x, y [N, d] (same N): sqrt(mean over directions of W₂² of projections)."""
  if x.shape != y.shape:
    raise ValueError(f"sliced_wasserstein needs equal shapes, got {x.shape} and {y.shape}")
  dirs = jax.random.normal(key, (x.shape[1], num_proj))
  dirs = dirs / jnp.linalg.norm(dirs, axis=0, keepdims=True)
  px = jnp.sort(x @ dirs, axis=0)
  py = jnp.sort(y @ dirs, axis=0)
  return float(jnp.sqrt(jnp.mean((px - py) ** 2)))


def mode_stats(gmm: GaussianMixture, x: jax.Array, cover_frac: float = 0.25) -> dict:
  """Per-mode mass of samples x [N, d]; TV error vs true weights; modes covered."""
  comp = np.asarray(jnp.argmax(gmm.component_log_probs(x, 0.0), axis=-1))
  mass = np.bincount(comp, minlength=gmm.num_components) / len(comp)
  w = np.asarray(gmm.weights, np.float64)
  return {
      "mode_mass": mass.tolist(),
      "mode_tv": float(0.5 * np.abs(mass - w).sum()),
      "modes_covered": int((mass >= cover_frac * w).sum()),
      "num_modes": int(gmm.num_components),
  }


def evaluate(gmm: GaussianMixture, x: jax.Array, key: jax.Array) -> dict:
  """All toy metrics of samples x [N, d] against N exact samples drawn with `key`."""
  k1, k2 = jax.random.split(key)
  ref, _ = gmm.sample(k1, x.shape[0])
  out = mode_stats(gmm, x)
  out["sw"] = sliced_wasserstein(x, ref, k2)
  out["mean_log_prob"] = float(jnp.mean(gmm.log_prob(x)))
  return out
