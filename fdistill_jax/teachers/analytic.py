"""Analytic teachers with exact denoisers: Gaussian mixtures and finite datasets.

Convention (EDM/VE): x_σ = x0 + σ ε. For a mixture Σ_k w_k N(μ_k, diag s_k²) the diffused density
is Σ_k w_k N(μ_k, diag(s_k² + σ²)) and the exact denoiser is
  E[x0 | x_σ] = Σ_k γ_k(x_σ) [μ_k + s_k²/(s_k² + σ²) (x_σ − μ_k)],   γ_k ∝ w_k N(x_σ; μ_k, s_k² + σ²).
For a finite set {x_i} (the optimal denoiser of the empirical distribution) the posterior over points
is softmax_i(−‖x_σ − x_i‖²/(2σ²)).
"""
from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np


@dataclasses.dataclass(frozen=True)
class GaussianMixture:
  """K-component Gaussian mixture in d dimensions with diagonal (or isotropic) scales.

  means: [K, d]; scales: [K, d] standard deviations (an isotropic scale is broadcast); weights: [K]
  summing to 1. Stored as numpy (static under jit).
  """
  means: np.ndarray
  scales: np.ndarray
  weights: np.ndarray

  @staticmethod
  def create(means, scales, weights=None) -> "GaussianMixture":
    means = np.asarray(means, np.float32)
    if means.ndim != 2:
      raise ValueError(f"means must be [K, d], got shape {means.shape}")
    k, d = means.shape
    scales = np.broadcast_to(np.asarray(scales, np.float32).reshape(
        (k, -1) if np.ndim(scales) else (1, 1)), (k, d)).astype(np.float32)
    if np.any(scales <= 0):
      raise ValueError("scales must be > 0")
    weights = np.full((k,), 1.0 / k) if weights is None else np.asarray(weights, np.float64)
    if weights.shape != (k,) or np.any(weights < 0) or not math.isclose(weights.sum(), 1.0,
                                                                        rel_tol=1e-6):
      raise ValueError(f"weights must be [K={k}] non-negative and sum to 1, got {weights}")
    return GaussianMixture(means, scales, weights.astype(np.float32))

  @property
  def dim(self) -> int:
    return self.means.shape[1]

  @property
  def num_components(self) -> int:
    return self.means.shape[0]

  # -- exact quantities ------------------------------------------------------------------------
  def component_log_probs(self, x: jax.Array, sigma=0.0) -> jax.Array:
    """log w_k + log N(x; μ_k, s_k² + σ²), [B, K] float32. x: [B, d]; sigma: scalar or [B]."""
    sigma = jnp.asarray(sigma, jnp.float32)
    s2 = jnp.asarray(self.scales) ** 2  # [K, d]
    var = s2[None] + (sigma.reshape(-1, 1, 1) ** 2 if sigma.ndim else sigma ** 2)  # [B|1, K, d]
    diff = x[:, None, :] - jnp.asarray(self.means)[None]
    logn = -0.5 * jnp.sum(diff ** 2 / var + jnp.log(2 * jnp.pi * var), axis=-1)
    return jnp.log(jnp.asarray(self.weights))[None] + logn

  def log_prob(self, x: jax.Array, sigma=0.0) -> jax.Array:
    """Exact log density of the σ-diffused mixture, [B]."""
    return jax.nn.logsumexp(self.component_log_probs(x, sigma), axis=-1)

  def responsibilities(self, x: jax.Array, sigma=0.0) -> jax.Array:
    """Posterior over components p(k | x_σ), [B, K]."""
    return jax.nn.softmax(self.component_log_probs(x, sigma), axis=-1)

  def denoise(self, x: jax.Array, sigma) -> jax.Array:
    """Exact E[x0 | x_σ], [B, d]. sigma: scalar or [B], > 0."""
    sigma = jnp.asarray(sigma, jnp.float32)
    s2 = jnp.asarray(self.scales) ** 2
    sig2 = sigma.reshape(-1, 1, 1) ** 2 if sigma.ndim else sigma ** 2
    mu = jnp.asarray(self.means)[None]
    cond = mu + s2[None] / (s2[None] + sig2) * (x[:, None, :] - mu)  # [B, K, d]
    g = self.responsibilities(x, sigma)
    return jnp.sum(g[..., None] * cond, axis=1)

  def score(self, x: jax.Array, sigma) -> jax.Array:
    """∇ log p_σ(x) = (E[x0|x] − x)/σ², [B, d]."""
    sigma = jnp.asarray(sigma, jnp.float32)
    s = sigma.reshape(-1, 1) if sigma.ndim else sigma
    return (self.denoise(x, sigma) - x) / s ** 2

  def sample(self, key: jax.Array, n: int) -> tuple[jax.Array, jax.Array]:
    """Exact samples: (x [n, d] float32, component index [n] int32)."""
    kc, kn = jax.random.split(key)
    comp = jax.random.choice(kc, self.num_components, (n,), p=jnp.asarray(self.weights))
    eps = jax.random.normal(kn, (n, self.dim))
    x = jnp.asarray(self.means)[comp] + jnp.asarray(self.scales)[comp] * eps
    return x, comp.astype(jnp.int32)


def ring_mixture(num_modes: int = 8, radius: float = 2.0, scale: float = 0.1,
                 weights=None) -> GaussianMixture:
  """Modes evenly spaced on a circle in 2-D (the classic mode-coverage toy)."""
  ang = 2 * np.pi * np.arange(num_modes) / num_modes
  means = radius * np.stack([np.cos(ang), np.sin(ang)], axis=1)
  return GaussianMixture.create(means, scale, weights)


def random_mixture(key_seed: int, num_modes: int, dim: int, spread: float = 2.0,
                   scale: float = 0.2, weights=None) -> GaussianMixture:
  """Modes at random positions N(0, spread²) in `dim` dimensions (numpy RNG, deterministic)."""
  rng = np.random.default_rng(key_seed)
  means = rng.normal(size=(num_modes, dim)) * spread
  return GaussianMixture.create(means, scale, weights)


def grid_mixture(size: int = 5, spacing: float = 1.0, scale: float = 0.1,
                 weights=None) -> GaussianMixture:
  """size × size modes on a square grid in 2-D centred at 0, row-major (mode k at row k // size,
  column k % size)."""
  c = (np.arange(size) - (size - 1) / 2) * spacing
  yy, xx = np.meshgrid(c, c, indexing="ij")
  return GaussianMixture.create(np.stack([xx.ravel(), yy.ravel()], axis=1), scale, weights)


MAX_MIXTURE_FILE_BYTES = 1 << 30  # means [K, d] of a toy problem: far less.


def load_mixture_file(path: str) -> dict:
  """{'means' [K, d], 'scales' [K] | [K, d] | scalar, 'weights' [K] (optional)} from a .npz or a
  .json file with those keys. Every value must be real (npz: a float dtype; JSON: numbers, not
  booleans or strings) and finite; errors name the file and key."""
  from fdistill_jax import fileio, untrusted  # pylint: disable=import-outside-toplevel
  if path.endswith(".npz"):  # Local or gs://.
    out = fileio.load_npz(path, max_bytes=MAX_MIXTURE_FILE_BYTES)
  elif path.endswith(".json"):
    raw = untrusted.read_json(path, MAX_MIXTURE_FILE_BYTES)
    if not isinstance(raw, dict):
      raise ValueError(f"mixture file {path!r}: a JSON {type(raw).__name__}, expected an object")
    out = {}
    for k, v in raw.items():
      try:
        a = np.asarray(v)
      except (ValueError, RecursionError) as e:  # Ragged or too deeply nested lists.
        raise ValueError(f"mixture file {path!r}: {k!r} is not a rectangular array ({e})") from None
      if a.dtype.kind not in "iuf":
        raise ValueError(f"mixture file {path!r}: {k!r} holds {a.dtype} values; expected numbers")
      out[k] = a.astype(np.float64)
  else:
    raise ValueError(f"mixture file {path!r}: expected a .npz or .json file")
  missing = {"means", "scales"} - set(out)
  extra = set(out) - {"means", "scales", "weights"}
  if missing or extra:
    raise ValueError(f"mixture file {path!r}: needs keys means, scales (and optional weights); "
                     f"missing {sorted(missing)}, unknown {sorted(extra)}")
  untrusted.check_float_arrays(out, path, what="array")
  return out


def data_std(gmm: GaussianMixture) -> float:
  """Exact standard deviation of the mixture's coordinates, RMS over dimensions: the EDM
  σ_data of the problem (sqrt(mean_d Var[x_d]))."""
  w = gmm.weights.astype(np.float64)[:, None]
  mean = np.sum(w * gmm.means, axis=0)
  second = np.sum(w * (gmm.means.astype(np.float64) ** 2 + gmm.scales.astype(np.float64) ** 2), 0)
  return float(np.sqrt(np.mean(second - mean ** 2)))


@dataclasses.dataclass(frozen=True)
class EmpiricalTeacher:
  """Optimal denoiser of a finite dataset (points [N, d]): the 'memorising' teacher."""
  points: np.ndarray

  def denoise(self, x: jax.Array, sigma) -> jax.Array:
    """E[x0 | x_σ] under the empirical distribution, [B, d]."""
    sigma = jnp.asarray(sigma, jnp.float32)
    s = sigma.reshape(-1, 1) if sigma.ndim else sigma
    pts = jnp.asarray(self.points, jnp.float32)
    d2 = (jnp.sum(x ** 2, -1, keepdims=True) - 2 * x @ pts.T + jnp.sum(pts ** 2, -1)[None])
    w = jax.nn.softmax(-d2 / (2 * s ** 2), axis=-1)
    return w @ pts

  def sample(self, key: jax.Array, n: int) -> jax.Array:
    idx = jax.random.randint(key, (n,), 0, self.points.shape[0])
    return jnp.asarray(self.points)[idx]
