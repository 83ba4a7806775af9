"""Metrics against exact truth for the analytic (Gaussian-mixture) problems.

* sliced_wasserstein: SW₂ between two point clouds, averaged over random unit directions
  (sorted 1-D projections; equal sample counts).
* mode_stats: assign each sample to its most probable mixture component (exact posterior at σ=0)
  and count it *in* that mode only when it lies inside the component's 99.9 % ellipsoid
  (Mahalanobis distance² ≤ χ²_d quantile 0.999; for an isotropic scale s that is the radius
  s·sqrt(χ²_d(0.999))). A sample far from every mode is then credited to none: uniform noise over
  the domain scores a low `in_mode_fraction` instead of "every mode covered".
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from scipy import stats

from fdistill_jax.teachers.analytic import GaussianMixture

IN_MODE_QUANTILE = 0.999


def sliced_wasserstein(x: jax.Array, y: jax.Array, key: jax.Array, num_proj: int = 256) -> float:
  """SW₂(x, y) for x, y [N, d] (same N): sqrt(mean over directions of W₂² of projections)."""
  if x.shape != y.shape:
    raise ValueError(f"sliced_wasserstein needs equal shapes, got {x.shape} and {y.shape}")
  dirs = jax.random.normal(key, (x.shape[1], num_proj))
  dirs = dirs / jnp.linalg.norm(dirs, axis=0, keepdims=True)
  px = jnp.sort(x @ dirs, axis=0)
  py = jnp.sort(y @ dirs, axis=0)
  return float(jnp.sqrt(jnp.mean((px - py) ** 2)))


def in_mode_mask(gmm: GaussianMixture, x: jax.Array,
                 quantile: float = IN_MODE_QUANTILE) -> tuple[np.ndarray, np.ndarray]:
  """(assigned component [N] int, inside its `quantile` ellipsoid [N] bool) for x [N, d]."""
  comp = np.asarray(jnp.argmax(gmm.component_log_probs(x, 0.0), axis=-1))
  z = (np.asarray(x, np.float64) - gmm.means[comp]) / gmm.scales[comp]
  return comp, np.sum(z ** 2, axis=-1) <= stats.chi2.ppf(quantile, gmm.dim)


def mode_stats(gmm: GaussianMixture, x: jax.Array, cover_frac: float = 0.25) -> dict:
  """Mode statistics of samples x [N, d], counting in-mode samples only.

  in_mode_fraction: share of samples inside the 99.9 % ellipsoid of their assigned mode (exact
  samples: ≈ 0.999). mode_mass[k]: share of ALL samples inside mode k (sums to in_mode_fraction).
  mode_tv: total variation between the in-mode weights (mode_mass renormalised) and the true
  weights. modes_covered: modes with mode_mass ≥ cover_frac · true weight.
  """
  comp, inside = in_mode_mask(gmm, x)
  mass = np.bincount(comp[inside], minlength=gmm.num_components) / len(comp)
  frac = float(inside.mean())
  w = np.asarray(gmm.weights, np.float64)
  rel = mass / frac if frac > 0 else np.zeros_like(mass)
  return {
      "in_mode_fraction": frac,
      "mode_mass": mass.tolist(),
      "mode_tv": float(0.5 * np.abs(rel - w).sum()) if frac > 0 else 1.0,
      "modes_covered": int((mass >= cover_frac * w).sum()),
      "num_modes": int(gmm.num_components),
  }


def evaluate(gmm: GaussianMixture, x: jax.Array, key: jax.Array) -> dict:
  """All toy metrics of samples x [N, d] against N exact samples drawn with `key`: sliced
  Wasserstein `sw`, mode_stats, and the mean and median exact log-density of the samples."""
  k1, k2 = jax.random.split(key)
  ref, _ = gmm.sample(k1, x.shape[0])
  out = mode_stats(gmm, x)
  out["sw"] = sliced_wasserstein(x, ref, k2)
  lp = np.asarray(gmm.log_prob(x))
  out["mean_log_prob"] = float(lp.mean())
  out["median_log_prob"] = float(np.median(lp))
  return out


def for_run(cfg, ctx):
  """The 'toy' metric family's factory (evaluation/registry.py): (x, key) -> evaluate(target, x,
  key) against the run's exact mixture ctx.target."""
  del cfg
  return functools.partial(evaluate, ctx.target)
