"""The digits classifier metric: accuracy, separation of real vs. degenerate samples, caching."""
import os
import warnings

import numpy as np
import pytest
import scipy.linalg

from fdistill_jax.data import load_digits_arrays
from fdistill_jax.evaluation.digits_metric import DigitsMetric


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
  return tmp_path_factory.mktemp("digits_cache")


@pytest.fixture(scope="module")
def metric(cache_dir):
  return DigitsMetric.create(resolution=16, cache_dir=cache_dir)


@pytest.fixture(scope="module")
def held_out():
  images, labels = load_digits_arrays(16, "test")
  return images.astype(np.float32) / 127.5 - 1.0, labels


def test_classifier_accuracy_on_held_out_digits(metric, held_out):
  assert metric.test_accuracy > 0.95
  images, labels = held_out
  feats = metric.features(images)
  assert feats.shape == (len(images), metric.recipe.feature_dim) and feats.dtype == np.float32


def test_real_digits_score_well_and_degenerate_samples_badly(metric, held_out):
  images, labels = held_out
  rng = np.random.default_rng(0)
  real = metric.evaluate(images)
  noise = metric.evaluate(rng.uniform(-1, 1, images.shape).astype(np.float32))
  with warnings.catch_warnings():  # One repeated image has a zero (singular) covariance.
    warnings.simplefilter("ignore", scipy.linalg.LinAlgWarning)
    single = metric.evaluate(np.repeat(images[:1], len(images), axis=0))
  assert real["class_coverage"] == 1.0
  assert real["class_histogram_tv"] < 0.15  # The test split's own class imbalance is < 0.1.
  assert real["mean_confidence"] > 0.9
  # One repeated image is one predicted class: coverage 1/10, TV to uniform 0.9 by definition.
  assert single["class_coverage"] == pytest.approx(0.1)
  assert single["class_histogram_tv"] == pytest.approx(0.9)
  assert noise["mean_confidence"] < 0.8
  assert noise["class_histogram_tv"] > 0.3
  assert real["fd"] > 0
  assert noise["fd"] > 20 * real["fd"] and single["fd"] > 20 * real["fd"]
  # A mild corruption of the real digits lands in between.
  noisy = metric.evaluate(np.clip(images + 0.3 * rng.standard_normal(images.shape), -1, 1))
  assert real["fd"] < noisy["fd"] < noise["fd"]
  # Diversity within classes and k-NN precision/recall against the train split.
  assert 0.7 < real["class_diversity"] < 1.4 and single["class_diversity"] < 1e-6
  assert real["precision"] > 0.6 and real["recall"] > 0.6
  assert noise["precision"] < 0.1 and single["recall"] < 0.05


def test_heldout_reference_and_fd_at_its_size(metric, held_out):
  images, _ = held_out
  ref = metric.evaluate_heldout()
  assert ref == metric.evaluate(images) and ref["num_samples"] == len(images) == 297
  assert "fd_n297" not in ref  # Already at N = 297.
  # 500 train digits: fd_n297 is the FD of the first 297, biased up against the full-N fd.
  train, _ = load_digits_arrays(16, "train")
  x = train[:500] / 127.5 - 1.0
  out = metric.evaluate(x)
  assert out["fd_n297"] == pytest.approx(metric.evaluate(x[:297])["fd"], rel=1e-9)
  assert out["fd_n297"] > out["fd"]


def test_reference_set_scores_zero_fd(metric):
  train, _ = load_digits_arrays(16, "train")
  assert abs(metric.evaluate(train / 127.5 - 1.0)["fd"]) < 1e-3


def test_cache_reloads_the_same_classifier(metric, cache_dir, held_out):
  files = [f for f in os.listdir(cache_dir) if f.endswith(".msgpack")]
  assert len(files) == 1 and "r16" in files[0]
  again = DigitsMetric.create(resolution=16, cache_dir=cache_dir)
  assert again.test_accuracy == metric.test_accuracy
  np.testing.assert_array_equal(again.features(held_out[0][:50]), metric.features(held_out[0][:50]))



def test_damaged_classifier_cache_is_retrained(metric, cache_dir, tmp_path, monkeypatch, caplog):
  """A flipped byte in the weights (still valid msgpack) or a foreign file is never used: it is
  retrained (stubbed here: the cached weights under a marked accuracy) and rewritten."""
  from fdistill_jax.evaluation import digits_metric
  name = next(f for f in os.listdir(cache_dir) if f.endswith(".msgpack"))
  good = (cache_dir / name).read_bytes()
  trained = []
  monkeypatch.setattr(digits_metric, "train_classifier",
                      lambda res, recipe: trained.append(res) or (metric.params, 0.5))
  for i, bad in enumerate((good[:-100] + bytes([good[-100] ^ 0x40]) + good[-99:],
                           b"not msgpack")):
    (tmp_path / str(i)).mkdir()
    (tmp_path / str(i) / name).write_bytes(bad)
    caplog.clear()
    got = DigitsMetric.create(resolution=16, cache_dir=tmp_path / str(i))
    assert got.test_accuracy == 0.5 and len(trained) == i + 1
    assert "training it again" in caplog.text and name in caplog.text
    again = DigitsMetric.create(resolution=16, cache_dir=tmp_path / str(i))  # Verifies now.
    assert again.test_accuracy == 0.5 and len(trained) == i + 1


def test_bad_inputs_are_rejected(metric):
  with pytest.raises(ValueError, match=r"\[N, 16, 16, 1\]"):
    metric.evaluate(np.zeros((10, 8, 8, 1)))
  with pytest.raises(ValueError, match="finite"):
    metric.evaluate(np.full((10, 16, 16, 1), np.nan))
