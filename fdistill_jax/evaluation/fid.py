"""FID: Inception features on devices, float64 statistics, Fréchet distance, reference npz.

Protocol for numbers comparable with EDM-style papers (EDM, DMD2, SiD, f-distill):
* detector: the FID Inception-v3 (fdistill_jax.models.inception) with pytorch-fid's weight file,
  `preprocess="nvlabs"` (uint8 pixels, TF1 resize, (x-128)/128: NVlabs' detector semantics);
* samples: generator output in [-1, 1] quantised like EDM's generate.py,
  u = uint8(clip(x * 127.5 + 128, 0, 255)) (truncation), as if saved to PNG and read back;
* statistics: mu and sigma (normalised by N-1) accumulated in float64 over 50,000 samples;
* FID = |mu1 - mu2|^2 + Tr(S1 + S2 - 2 sqrtm(S1 S2)) with scipy.linalg.sqrtm;
* reference: EDM's `fid-refs/*.npz` (keys mu, sigma); report the minimum over 3 seed ranges.
"""
from __future__ import annotations

import dataclasses
import io
import os
from typing import Any, Callable, Iterable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import scipy.linalg
from absl import logging
from etils import epath
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from fdistill_jax import fileio, untrusted
from fdistill_jax.diffusion import few_step

from fdistill_jax.convert.inception_weights import load_inception_variables
from fdistill_jax.models.inception import FEATURE_DIM, INPUT_SIZE, FIDInceptionV3

EDM_REFS_URL = "https://nvlabs-fi-cdn.nvidia.com/edm/fid-refs/"


# ---------------------------------------------------------------------------------------------
# Statistics and distance.


@dataclasses.dataclass
class StatsAccumulator:
  """Running float64 sums of features, so 50k x 2048 features need not be held in memory."""
  dim: int = FEATURE_DIM
  num: int = 0
  total: np.ndarray | None = None  # [dim] float64
  total_outer: np.ndarray | None = None  # [dim, dim] float64

  def update(self, features: np.ndarray) -> None:
    """Adds features [n, dim] (any float dtype)."""
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != self.dim:
      raise ValueError(f"features must be [n, {self.dim}], got {x.shape}")
    if self.total is None:
      self.total = np.zeros(self.dim, np.float64)
      self.total_outer = np.zeros((self.dim, self.dim), np.float64)
    self.num += x.shape[0]
    self.total += x.sum(axis=0)
    self.total_outer += x.T @ x

  def finalize(self) -> tuple[np.ndarray, np.ndarray]:
    """(mu [dim], sigma [dim, dim]) in float64, sigma normalised by N - 1."""
    if self.num < 2:
      raise ValueError(f"need at least 2 feature vectors for a covariance, got {self.num}")
    mu = self.total / self.num
    sigma = (self.total_outer - self.num * np.outer(mu, mu)) / (self.num - 1)
    return mu, sigma


def compute_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """mu [d] and sigma [d, d] (N-1) of features [N, d], in float64."""
  x = np.asarray(features, dtype=np.float64)
  if x.ndim != 2 or x.shape[0] < 2:
    raise ValueError(f"features must be [N >= 2, d], got {x.shape}")
  return x.mean(axis=0), np.cov(x, rowvar=False, ddof=1)


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray,
                     eps: float = 1e-6) -> float:
  """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2), computed in float64.

  sqrtm(sigma1 sigma2) is taken with scipy.linalg.sqrtm, as EDM and pytorch-fid do; when it is
  not finite (singular product), eps * I is added to both covariances as pytorch-fid does.
  The tiny imaginary part sqrtm can return is dropped.
  """
  mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
  s1, s2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2,
                                                                                   np.float64))
  d = mu1.shape[0]
  for name, v, shape in (("mu1", mu1, (d,)), ("mu2", mu2, (d,)), ("sigma1", s1, (d, d)),
                         ("sigma2", s2, (d, d))):
    if v.shape != shape:
      raise ValueError(f"{name} has shape {v.shape}, expected {shape}")
  diff = mu1 - mu2
  covmean = scipy.linalg.sqrtm(s1 @ s2)
  if not np.isfinite(covmean).all():
    offset = np.eye(d) * eps
    covmean = scipy.linalg.sqrtm((s1 + offset) @ (s2 + offset))
  covmean = np.real(covmean)
  return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * np.trace(covmean))


# ---------------------------------------------------------------------------------------------
# Reference statistics files (EDM format: an npz with keys mu [d] and sigma [d, d]).


def save_reference_stats(path: str | os.PathLike, mu: np.ndarray, sigma: np.ndarray) -> None:
  """Writes mu/sigma to an EDM-format npz (float64) at path (local or gs://)."""
  mu, sigma = np.asarray(mu, np.float64), np.asarray(sigma, np.float64)
  if mu.ndim != 1 or sigma.shape != (mu.shape[0], mu.shape[0]):
    raise ValueError(f"mu must be [d] and sigma [d, d]; got {mu.shape} and {sigma.shape}")
  fileio.save_npz(path, mu=mu, sigma=sigma)


def load_reference_stats(path: str | os.PathLike, dim: int | None = FEATURE_DIM
                         ) -> tuple[np.ndarray, np.ndarray]:
  """Reads (mu, sigma) float64 from an EDM-format npz (local or gs://), checking keys, shapes and
  finiteness."""
  path = epath.Path(path)
  if not path.is_file():
    raise FileNotFoundError(f"FID reference statistics not found: {path} (EDM's are at "
                            f"{EDM_REFS_URL}, e.g. cifar10-32x32.npz)")
  buf = io.BytesIO(path.read_bytes())
  # Shapes and dtypes from the .npy headers, checked before numpy allocates anything.
  try:
    members = untrusted.npz_members(buf, str(path))
  except ValueError as e:
    raise ValueError(f"{path}: not a readable .npz file ({e})") from None
  missing = [k for k in ("mu", "sigma") if members.get(k) is None]
  if missing:
    raise KeyError(f"{path}: missing key(s) {missing}; expected arrays 'mu' and 'sigma', "
                   f"found {sorted(members)}")
  (mu_shape, _), (sigma_shape, _) = members["mu"], members["sigma"]
  d = mu_shape[0] if len(mu_shape) == 1 else None
  if d is None or (dim is not None and d != dim):
    raise ValueError(f"{path}: 'mu' has shape {mu_shape}, expected ({dim if dim else 'd'},)")
  if sigma_shape != (d, d):
    raise ValueError(f"{path}: 'sigma' has shape {sigma_shape}, expected ({d}, {d})")
  try:
    with np.load(buf, allow_pickle=False) as z:
      mu, sigma = z["mu"], z["sigma"]
  except Exception as e:  # np.load raises several types for a corrupt file.
    raise ValueError(f"{path}: not a readable .npz file ({e})") from e
  for name, a in (("mu", mu), ("sigma", sigma)):
    untrusted.check_float_array(a, name, str(path), what="array")
  return mu.astype(np.float64), sigma.astype(np.float64)


# ---------------------------------------------------------------------------------------------
# Feature extraction on devices.


def to_detector_input(images: jax.Array, preprocess: str) -> jax.Array:
  """Generator images -> FIDInceptionV3 input, quantised to 8 bits like saved PNGs.

  Args:
    images: [N, H, W, 3] float in [-1, 1], or uint8 pixels.
    preprocess: "nvlabs" (returns 0..255 floats) or "pytorch_fid" (returns u / 255 in [0, 1]).
  """
  if images.dtype == jnp.uint8:
    u = images.astype(jnp.float32)
  else:  # EDM generate.py: (x * 127.5 + 128).clip(0, 255).to(uint8), i.e. floor after clip.
    u = jnp.floor(jnp.clip(images.astype(jnp.float32) * 127.5 + 128.0, 0.0, 255.0))
  if preprocess == "nvlabs":
    return u
  if preprocess == "pytorch_fid":
    return u / 255.0
  raise ValueError(f"preprocess must be 'nvlabs' or 'pytorch_fid', got {preprocess!r}")


class FeatureExtractor:
  """Jitted pool3 features of fixed-size batches, sharded over devices along the batch.

  Every call runs on batches of exactly `batch_size` (one compiled program); a shorter tail is
  zero-padded and the padding rows are dropped. Single-process (host-local) use.
  """

  def __init__(self, variables: Any, batch_size: int, preprocess: str = "nvlabs",
               devices: Sequence[jax.Device] | None = None, input_size: int = INPUT_SIZE):
    """
    Args:
      variables: FIDInceptionV3 variables (from convert.inception_weights).
      batch_size: global batch, a multiple of the number of devices.
      preprocess: "nvlabs" (EDM-comparable) or "pytorch_fid".
      devices: devices to shard over (default: all local devices).
      input_size: the detector's resize target; 299 for FID (smaller only in tests).
    """
    devices = list(devices if devices is not None else jax.local_devices())
    if batch_size % len(devices):
      raise ValueError(f"batch_size {batch_size} must be a multiple of the {len(devices)} devices")
    if preprocess not in ("nvlabs", "pytorch_fid"):
      raise ValueError(f"preprocess must be 'nvlabs' or 'pytorch_fid', got {preprocess!r}")
    self.batch_size = batch_size
    self.preprocess = preprocess
    mesh = Mesh(np.asarray(devices), ("data",))
    self._batch_sharding = NamedSharding(mesh, P("data"))
    self._variables = jax.device_put(variables, NamedSharding(mesh, P()))
    model = FIDInceptionV3(preprocess=preprocess, input_size=input_size)

    def features(v, images):
      return model.apply(v, to_detector_input(images, preprocess))

    self._features = jax.jit(features, out_shardings=self._batch_sharding)

  @classmethod
  def from_weight_file(cls, path: str | os.PathLike, batch_size: int, preprocess: str = "nvlabs",
                       devices: Sequence[jax.Device] | None = None) -> "FeatureExtractor":
    """Extractor with weights read from pytorch-fid's .pth (or an .npz/.safetensors of it)."""
    return cls(load_inception_variables(path), batch_size, preprocess, devices)

  def extract_batch(self, images: np.ndarray | jax.Array) -> np.ndarray:
    """Features [batch_size, 2048] float32 of images [batch_size, H, W, 3] ([-1,1] or uint8)."""
    if images.ndim != 4 or images.shape[0] != self.batch_size or images.shape[-1] != 3:
      raise ValueError(f"expected images [{self.batch_size}, H, W, 3], got {images.shape}")
    images = jax.device_put(images, self._batch_sharding)
    return np.asarray(jax.device_get(self._features(self._variables, images)))

  def __call__(self, images: np.ndarray) -> np.ndarray:
    """Features [N, 2048] float32 of images [N, H, W, 3] for any N (padded to full batches)."""
    images = np.asarray(images)
    n, out = images.shape[0], []
    for start in range(0, n, self.batch_size):
      chunk = images[start:start + self.batch_size]
      pad = self.batch_size - chunk.shape[0]
      if pad:
        chunk = np.concatenate([chunk, np.zeros((pad,) + chunk.shape[1:], chunk.dtype)])
      out.append(self.extract_batch(chunk)[:self.batch_size - pad])
    return np.concatenate(out) if out else np.zeros((0, FEATURE_DIM), np.float32)


def image_statistics(batches: Iterable[np.ndarray], extractor: FeatureExtractor
                     ) -> tuple[np.ndarray, np.ndarray]:
  """(mu, sigma) of a dataset given as batches of images [n, H, W, 3] (uint8 or [-1, 1]).

  With `save_reference_stats` this makes a reference npz for a dataset EDM ships none for.
  """
  acc = StatsAccumulator()
  for batch in batches:
    acc.update(extractor(np.asarray(batch)))
  return acc.finalize()


# ---------------------------------------------------------------------------------------------
# Generator -> FID.

SampleFn = Callable[[np.ndarray], Any]  # seeds [batch] int64 -> images [batch, H, W, 3] in [-1,1]


def generator_statistics(sample_fn: SampleFn, extractor: FeatureExtractor, num_samples: int,
                         first_seed: int = 0, keep_features: bool = False
                         ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
  """Streams samples for seeds first_seed .. first_seed + num_samples - 1 through the detector.

  `sample_fn` always receives a full batch of `extractor.batch_size` seeds (static shapes); in
  the last batch the seeds past the end are extra and their images are dropped.
  Returns (mu, sigma, features [num_samples, 2048] float32 or None).
  """
  if num_samples < 2:
    raise ValueError(f"num_samples must be >= 2, got {num_samples}")
  bs = extractor.batch_size
  acc, kept = StatsAccumulator(), []
  for start in range(0, num_samples, bs):
    seeds = np.arange(first_seed + start, first_seed + start + bs, dtype=np.int64)
    images = sample_fn(seeds)
    feats = extractor.extract_batch(images)[:min(bs, num_samples - start)]
    acc.update(feats)
    if keep_features:
      kept.append(feats)
  mu, sigma = acc.finalize()
  return mu, sigma, (np.concatenate(kept) if keep_features else None)


def fid_from_generator(sample_fn: SampleFn, extractor: FeatureExtractor,
                       reference: str | os.PathLike | tuple[np.ndarray, np.ndarray],
                       num_samples: int = 50_000, first_seed: int = 0) -> float:
  """FID of `num_samples` generated images against a reference (npz path or (mu, sigma))."""
  if isinstance(reference, (str, os.PathLike)):
    reference = load_reference_stats(reference)
  mu_ref, sigma_ref = reference
  mu, sigma, _ = generator_statistics(sample_fn, extractor, num_samples, first_seed)
  return frechet_distance(mu, sigma, mu_ref, sigma_ref)


def best_fid_over_seeds(sample_fn: SampleFn, extractor: FeatureExtractor,
                        reference: str | os.PathLike | tuple[np.ndarray, np.ndarray],
                        num_samples: int = 50_000, repeats: int = 3
                        ) -> tuple[float, list[float]]:
  """EDM's reporting: the minimum FID over `repeats` disjoint seed ranges; returns (min, all)."""
  if isinstance(reference, (str, os.PathLike)):
    reference = load_reference_stats(reference)
  fids = [fid_from_generator(sample_fn, extractor, reference, num_samples, r * num_samples)
          for r in range(repeats)]
  return min(fids), fids


def streaming_metric(cfg, ctx):
  """The 'fid' metric family's factory (evaluation/registry.py): gen_params -> {'fid': ...} over
  eval.num_samples samples of ctx.nets' generator decoded by ctx.decode, seeds 0..N-1 (EDM's
  protocol; condition = the spec's from_index(seed)), or None (with a warning) without the two
  files. Needs eval.fid_weights (pytorch-fid's Inception .pth or its .npz) and eval.fid_reference
  (EDM-format mu/sigma .npz); both are checked up front."""
  ev, nets, decode = cfg.eval, ctx.nets, ctx.decode
  if not ev.get("fid_weights") or not ev.get("fid_reference"):
    logging.warning("config.eval.metric='fid' but eval.fid_weights / eval.fid_reference are not "
                    "set: FID is skipped (see docs/evaluation.md 'FID' for the two files)")
    return None
  for field in ("fid_weights", "fid_reference"):
    if not epath.Path(ev[field]).exists():  # Local or gs://.
      raise FileNotFoundError(f"config.eval.{field}={ev[field]!r} does not exist (see "
                              "docs/evaluation.md 'FID')")
  batch = int(ev.fid_batch)
  extractor = FeatureExtractor.from_weight_file(ev.fid_weights, batch)
  shape = tuple(nets.data_shape)

  @jax.jit
  def from_seeds(params, seeds):
    z = jax.vmap(lambda s: jax.random.normal(jax.random.PRNGKey(s), shape))(seeds)
    # A K-step student's re-noising noise comes from the chunk's first seed.
    noise_key = few_step.chain_key(jax.random.PRNGKey(seeds[0]))
    return nets.generate(params, z, nets.cond.from_index(seeds), noise_key=noise_key)

  def metric(params):
    fn = lambda seeds: np.asarray(decode(from_seeds(params, jnp.asarray(seeds, jnp.int32))))
    return {"fid": fid_from_generator(fn, extractor, ev.fid_reference, ev.num_samples)}

  return metric
