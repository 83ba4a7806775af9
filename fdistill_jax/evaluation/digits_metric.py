"""A CPU-scale sample-quality metric for the digits dataset (the offline stand-in for FID).

A small Flax CNN is trained on the digits train split (1,500 images, data/sources.py) at the
generator's resolution, with a fixed recipe and seed (~10 s on a 2-core CPU). Its 64-d penultimate
activations (before the ReLU) play the role of Inception features:
* fd: Fréchet distance (evaluation/fid.py) between the features of the given images and of the
  real train split;
* class_histogram_tv: total variation between the predicted-class histogram and uniform (the
  digits classes are each 9.7-10.2% of the data), 0 = balanced, 0.9 = a single class;
* class_coverage: fraction of the 10 classes that are covered, a class being covered when it
  receives at least `cover_frac` (0.25) of its uniform share, i.e. >= 2.5% of the predictions (the
  same rule as toy_metrics.mode_stats);
* mean_confidence: mean max-softmax probability (low for unrecognisable images);
* precision / recall: k-NN (k = 3) manifold precision and recall of the features against the
  train split's (evaluation/precision_recall.py);
* class_diversity: within-class feature variance (trace of the covariance within each predicted
  class, averaged over classes) relative to the train split's, 1 = as diverse as the data; a
  generator that draws one digit per class scores near 0.
* fd_n297: fd of the first 297 images only, the size of the held-out split, so that it reads
  beside `evaluate_heldout()` (the real held-out digits scored the same way: FD "as good as real
  data" at that N; FD is biased upward at small N, so fd at N = 500 and fd_n297 differ).
The classifier's held-out accuracy (297 test images) is `DigitsMetric.test_accuracy`.

Trained weights are cached in `cache_dir` (if given) under a name that encodes the resolution and
the recipe, so a change of recipe never reads stale weights; the file is a fileio.write_cache
envelope (the weights with their sha256 and settings), so a damaged or foreign file is retrained
with a warning rather than scoring samples with wrong weights.
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
from typing import Any

import flax.linen as nn
import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging
from etils import epath

from fdistill_jax import fileio
from fdistill_jax.data.sources import load_digits_arrays
from fdistill_jax.evaluation.fid import compute_statistics, frechet_distance

NUM_CLASSES = 10
HELDOUT_N = 297  # The digits test split (data/sources.py: the last 297 of 1,797).


@dataclasses.dataclass(frozen=True)
class Recipe:
  """Training recipe of the classifier; part of the cache file name."""
  seed: int = 0
  epochs: int = 20
  batch_size: int = 64
  learning_rate: float = 3e-3
  feature_dim: int = 64
  channels: tuple[int, ...] = (16, 32)
  max_shift: int = 1  # Random translation (pixels at 16x16, scaled with resolution) for robustness.
  version: int = 2  # Bump when DigitsClassifier changes, so cached weights are not reused.

  def tag(self) -> str:
    return hashlib.sha1(repr(self).encode()).hexdigest()[:10]


class DigitsClassifier(nn.Module):
  """CNN on [N, R, R, 1] images in [-1, 1] -> (logits [N, 10], features [N, feature_dim])."""
  feature_dim: int = 64
  channels: tuple[int, ...] = (16, 32)

  @nn.compact
  def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    for channels in self.channels:
      x = nn.relu(nn.Conv(channels, (3, 3))(x))
      x = nn.avg_pool(x, (2, 2), (2, 2))
    x = x.reshape(x.shape[0], -1)
    # Features are taken before the ReLU: after it, many units are dead (always 0) on digits,
    # which leaves the feature covariance singular.
    features = nn.Dense(self.feature_dim)(x)
    return nn.Dense(NUM_CLASSES)(nn.relu(features)), features


def _to_model_input(images_uint8: np.ndarray) -> np.ndarray:
  return images_uint8.astype(np.float32) / 127.5 - 1.0


def _random_shift(x: np.ndarray, max_shift: int, rng: np.random.Generator) -> np.ndarray:
  """Translates each image by up to ±max_shift pixels, filling with background (-1)."""
  if max_shift == 0:
    return x
  n, h, w, _ = x.shape
  padded = np.pad(x, ((0, 0), (max_shift,) * 2, (max_shift,) * 2, (0, 0)), constant_values=-1.0)
  dy, dx = rng.integers(0, 2 * max_shift + 1, size=(2, n))
  return np.stack([padded[i, dy[i]:dy[i] + h, dx[i]:dx[i] + w] for i in range(n)])


def train_classifier(resolution: int, recipe: Recipe = Recipe()) -> tuple[Any, float]:
  """Trains the classifier on the digits train split; returns (params, test accuracy)."""
  train_x, train_y = load_digits_arrays(resolution, "train")
  test_x, test_y = load_digits_arrays(resolution, "test")
  train_x, test_x = _to_model_input(train_x), _to_model_input(test_x)
  model = DigitsClassifier(recipe.feature_dim, recipe.channels)
  params = model.init(jax.random.PRNGKey(recipe.seed), train_x[:1])
  tx = optax.adam(optax.cosine_decay_schedule(
      recipe.learning_rate, recipe.epochs * (len(train_x) // recipe.batch_size)))
  opt_state = tx.init(params)

  @jax.jit
  def step(params, opt_state, x, y):
    def loss_fn(p):
      logits, _ = model.apply(p, x)
      return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
    grads = jax.grad(loss_fn)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state

  rng = np.random.default_rng(recipe.seed)
  shift = max(0, round(recipe.max_shift * resolution / 16))
  for _ in range(recipe.epochs):
    order = rng.permutation(len(train_x))
    for i in range(len(train_x) // recipe.batch_size):
      idx = order[i * recipe.batch_size:(i + 1) * recipe.batch_size]
      x = _random_shift(train_x[idx], shift, rng)
      params, opt_state = step(params, opt_state, jnp.asarray(x), jnp.asarray(train_y[idx]))
  logits, _ = jax.jit(model.apply)(params, test_x)
  accuracy = float(np.mean(np.argmax(np.asarray(logits), -1) == test_y))
  return params, accuracy


@dataclasses.dataclass
class DigitsMetric:
  """The trained classifier plus the real train split's feature statistics."""
  resolution: int
  params: Any
  test_accuracy: float
  ref_mu: np.ndarray
  ref_sigma: np.ndarray
  recipe: Recipe = Recipe()
  batch_size: int = 500
  ref_features: np.ndarray | None = None  # [N_train, feature_dim]
  ref_class_var: float = 1.0  # The train split's within-class variance (class_diversity's unit).

  @classmethod
  def create(cls, resolution: int = 16, cache_dir: str | os.PathLike | None = None,
             recipe: Recipe = Recipe()) -> "DigitsMetric":
    """Trains the classifier (or loads it from `cache_dir`) and computes reference statistics."""
    path = None
    params = accuracy = None
    template = DigitsClassifier(recipe.feature_dim, recipe.channels).init(
        jax.random.PRNGKey(0), jnp.zeros((1, resolution, resolution, 1)))
    key = {"resolution": int(resolution), "recipe": recipe.tag()}
    if cache_dir is not None:
      path = str(epath.Path(cache_dir) / f"digits_classifier_r{resolution}_{recipe.tag()}"
                 f".msgpack")  # Local or gs://.
      if epath.Path(path).is_file():
        try:
          blob = flax.serialization.msgpack_restore(fileio.read_cache(path, key))
          params = flax.serialization.from_state_dict(template, blob["params"])
          accuracy = float(blob["test_accuracy"])
        except Exception as e:  # pylint: disable=broad-except  (damaged, foreign or old format)
          params = None
          logging.warning("%s: not a valid cached digits classifier (%s); training it again",
                          path, str(e)[:300])
    if params is None:
      params, accuracy = train_classifier(resolution, recipe)
      if path is not None:
        blob = {"params": flax.serialization.to_state_dict(params), "test_accuracy": accuracy}
        # All-or-nothing (fileio.write_bytes): a concurrent reader never sees half a file.
        fileio.write_cache(path, flax.serialization.msgpack_serialize(blob), key)
    metric = cls(resolution, params, accuracy, np.zeros(0), np.zeros((0, 0)), recipe)
    real, _ = load_digits_arrays(resolution, "train")
    logits, feats = metric._apply(_to_model_input(real))
    metric.ref_mu, metric.ref_sigma = compute_statistics(feats)
    metric.ref_features = feats
    metric.ref_class_var = _within_class_variance(feats, np.argmax(logits, -1))
    return metric

  def _check(self, images: Any) -> np.ndarray:
    x = np.asarray(images, np.float32)
    if x.ndim != 4 or x.shape[1:] != (self.resolution, self.resolution, 1):
      raise ValueError(f"DigitsMetric({self.resolution}): images must be [N, {self.resolution}, "
                       f"{self.resolution}, 1] in [-1, 1], got shape {x.shape}")
    if x.shape[0] < 2 or not np.all(np.isfinite(x)):
      raise ValueError(f"DigitsMetric: need >= 2 finite images, got {x.shape[0]} "
                       f"({np.sum(~np.isfinite(x))} non-finite values)")
    # Quantise like a saved PNG, the way the real digits reach the classifier.
    return np.rint((np.clip(x, -1, 1) + 1) * 127.5) / 127.5 - 1.0

  def _apply(self, images: Any) -> tuple[np.ndarray, np.ndarray]:
    x = self._check(images)
    model = DigitsClassifier(self.recipe.feature_dim, self.recipe.channels)
    apply = jax.jit(model.apply)
    outs = [apply(self.params, x[i:i + self.batch_size]) for i in range(0, len(x), self.batch_size)]
    return (np.concatenate([np.asarray(o[0]) for o in outs]),
            np.concatenate([np.asarray(o[1]) for o in outs]))

  def logits(self, images: Any) -> np.ndarray:
    """images float [N, R, R, 1] in [-1, 1] -> class logits float32 [N, 10]."""
    return self._apply(images)[0]

  def features(self, images: Any) -> np.ndarray:
    """images float [N, R, R, 1] in [-1, 1] -> features float32 [N, feature_dim]."""
    return self._apply(images)[1]

  def evaluate(self, images: Any, cover_frac: float = 0.25) -> dict[str, float]:
    """Scores images float [N, R, R, 1] in [-1, 1] (N >= 2; a few hundred+ for a stable fd)."""
    logits, feats = self._apply(images)
    probs = np.asarray(jax.nn.softmax(logits, axis=-1), np.float64)
    hist = np.bincount(np.argmax(probs, -1), minlength=NUM_CLASSES) / len(probs)
    small_n = {}
    if len(feats) > HELDOUT_N:
      small_n[f"fd_n{HELDOUT_N}"] = self._fd(feats[:HELDOUT_N])
    return {
        "fd": self._fd(feats), **small_n,
        "class_coverage": float(np.mean(hist >= cover_frac / NUM_CLASSES)),
        "mean_confidence": float(np.mean(np.max(probs, -1))),
        "class_histogram_tv": float(0.5 * np.sum(np.abs(hist - 1.0 / NUM_CLASSES))),
        "num_samples": float(len(probs)),
        **self._diversity(feats, np.argmax(probs, -1)),
    }

  def _fd(self, feats: np.ndarray) -> float:
    mu, sigma = compute_statistics(feats)
    return frechet_distance(mu, sigma, self.ref_mu, self.ref_sigma)

  def fd_between(self, images: Any, other: Any) -> float:
    """Fréchet distance between the features of two image sets (e.g. a student's samples and
    its teacher's on the same prompts), each float [N, R, R, 1] in [-1, 1]."""
    a, b = self.features(images), self.features(other)
    return frechet_distance(*compute_statistics(a), *compute_statistics(b))

  def evaluate_heldout(self) -> dict[str, float]:
    """The same metrics for the real held-out digits (the 297-image test split): the reference
    line a sampler's fd_n297 is read against."""
    real, _ = load_digits_arrays(self.resolution, "test")
    return self.evaluate(_to_model_input(real))

  def _diversity(self, feats: np.ndarray, classes: np.ndarray) -> dict[str, float]:
    if self.ref_features is None or len(feats) < 2 * NUM_CLASSES:
      return {}
    from fdistill_jax.evaluation.precision_recall import precision_recall
    precision, recall = precision_recall(self.ref_features, feats, k=3)
    return {"precision": float(precision), "recall": float(recall),
            "class_diversity": _within_class_variance(feats, classes) / self.ref_class_var}


def _within_class_variance(feats: np.ndarray, classes: np.ndarray) -> float:
  """Mean over classes with ≥ 2 members of the trace of their feature covariance."""
  v = [np.var(feats[classes == c], axis=0).sum() for c in range(NUM_CLASSES)
       if np.sum(classes == c) >= 2]
  return float(np.mean(v)) if v else 0.0


def for_run(cfg, ctx) -> DigitsMetric:
  """The 'digits' metric family's factory (evaluation/registry.py): the metric at the decoded
  images' resolution, its classifier cached in eval.cache_dir or else the run's workdir."""
  return DigitsMetric.create(resolution=ctx.image_shape[0],
                             cache_dir=cfg.eval.get("cache_dir") or ctx.workdir)
