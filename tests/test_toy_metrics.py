"""Toy metrics measure what they claim: in-mode counting, mixture specs, the pretrain cache key."""
import json
import os

import jax
import numpy as np
import pytest

from fdistill_jax import config_checks, defaults
from fdistill_jax.benchmarks import toy as toy_bench
from fdistill_jax.benchmarks.common import set_key
from fdistill_jax.evaluation import toy_metrics
from fdistill_jax.experiments import toy
from fdistill_jax.models.mlp import MLPDenoiser
from fdistill_jax.teachers import analytic
from fdistill_jax.validation import ConfigError

GRID = analytic.grid_mixture(5, 1.0, 0.1, np.tile([1., 2., 3., 4., 5.], 5) / 75.0)


def test_exact_samples_are_in_mode_and_uniform_noise_is_not():
  x, _ = GRID.sample(jax.random.PRNGKey(0), 20000)
  exact = toy_metrics.mode_stats(GRID, x)
  assert abs(exact["in_mode_fraction"] - 0.999) < 0.001, exact["in_mode_fraction"]
  assert exact["mode_tv"] < 0.02 and exact["modes_covered"] == 25
  np.testing.assert_allclose(np.sum(exact["mode_mass"]), exact["in_mode_fraction"], atol=1e-9)
  # Uniform noise over the square holding the grid: nearest-mode credit used to call this
  # "25/25 covered"; each 99.9 % disc (radius 0.37) holds ~0.43/25 of the square's area.
  u = jax.random.uniform(jax.random.PRNGKey(1), (20000, 2), minval=-2.5, maxval=2.5)
  noise = toy_metrics.mode_stats(GRID, u)
  assert 0.35 < noise["in_mode_fraction"] < 0.52, noise["in_mode_fraction"]
  assert noise["modes_covered"] < 25  # The light modes hold less than ¼ of their weight.


def test_in_mode_uses_the_mahalanobis_radius():
  gmm = analytic.GaussianMixture.create([[0., 0., 0.], [6., 0., 0.]],
                                        [[0.1, 1.0, 0.3], [0.5, 0.2, 0.2]], [0.3, 0.7])
  x, _ = gmm.sample(jax.random.PRNGKey(2), 20000)
  assert abs(toy_metrics.mode_stats(gmm, x)["in_mode_fraction"] - 0.999) < 0.001
  # A point 1 unit along mode 0's first axis (10 of its σ) is out, along its second (1 σ) is in.
  _, inside = toy_metrics.in_mode_mask(gmm, np.array([[1., 0., 0.], [0., 1., 0.]], np.float32))
  assert inside.tolist() == [False, True]
  m = toy_metrics.evaluate(gmm, x[:2048], jax.random.PRNGKey(3))
  off = toy_metrics.evaluate(gmm, x[:2048] + 0.5, jax.random.PRNGKey(3))
  assert off["median_log_prob"] < m["median_log_prob"] - 5 and off["sw"] > 2 * m["sw"]


def test_mixture_specs_grid_explicit_file_and_sigma_data(tmp_path):
  t = defaults.toy().teacher
  t.update(dict(mixture="grid", grid_size=5, spacing=1.0, scale=0.1, weights=(1., 2., 3., 4., 5.)))
  g = toy.make_mixture(t)
  np.testing.assert_allclose(g.means, GRID.means)
  np.testing.assert_allclose(g.weights, GRID.weights, rtol=1e-6)
  t.weights = (1., 2., 3.)
  with pytest.raises(ValueError, match="teacher.weights has 3 values for 25 modes"):
    toy.make_mixture(t)
  t.update(dict(mixture="explicit", means=((0., 1.), (2., 3.)), scales=(0.2, 0.4), weights=()))
  e = toy.make_mixture(t)
  np.testing.assert_allclose(e.scales, [[0.2, 0.2], [0.4, 0.4]])
  np.testing.assert_allclose(e.weights, [0.5, 0.5])
  path = tmp_path / "mix.json"
  path.write_text(json.dumps({"means": [[0, 0], [3, 0], [0, 3]], "scales": [0.1, 0.2, 0.3],
                              "weights": [1, 1, 2]}))
  t.update(dict(mixture="file", file=str(path)))
  f = toy.make_mixture(t)
  np.testing.assert_allclose(f.weights, [0.25, 0.25, 0.5])
  x, _ = f.sample(jax.random.PRNGKey(4), 200000)
  assert abs(analytic.data_std(f) - np.sqrt(np.mean(np.var(np.asarray(x), 0)))) < 0.01
  # Every benchmark problem is plain config overrides, σ_data included (one rule).
  over = toy_bench.problem_overrides("grid25")
  assert over["diffusion.sigma_data"] == round(analytic.data_std(GRID), 2)
  assert "--config.teacher.mixture=grid" in toy_bench.command_line("grid25")


def test_every_benchmark_problem_passes_config_validation():
  """The benchmark's problems (tiled weights, grid) validate; weights that cannot tile are named."""
  for name in toy_bench.PROBLEMS:
    cfg = defaults.toy()
    for k, v in toy_bench.problem_overrides(name).items():
      set_key(cfg, k, v)
    config_checks.check(cfg)
  cfg = defaults.toy()
  cfg.teacher.weights = (1.0, 2.0, 3.0)
  with pytest.raises(ConfigError, match="teacher.weights"):
    config_checks.check(cfg)


def test_pretrain_cache_is_keyed_by_its_settings(tmp_path):
  cfg = defaults.toy()
  cfg.pretrain.update(dict(steps=3, batch=16))
  cfg.student.update(dict(hidden=16, depth=1))
  gmm = toy.make_mixture(cfg.teacher)
  module = lambda c: MLPDenoiser(dim=2, hidden=16, depth=1, sigma_data=c.diffusion.sigma_data)
  first = toy.load_or_pretrain(module(cfg), gmm, cfg, str(tmp_path))
  same = toy.load_or_pretrain(module(cfg), gmm, cfg, str(tmp_path))
  jax.tree.map(np.testing.assert_array_equal, first, same)
  for field, value in (("diffusion.sigma_data", 1.2), ("teacher.scale", 0.2)):
    c = defaults.toy()
    c.pretrain.update(dict(steps=3, batch=16))
    c.student.update(dict(hidden=16, depth=1))
    node, leaf = field.split(".")
    c[node][leaf] = value
    mtime = os.path.getmtime(tmp_path / "pretrained_denoiser.msgpack")
    other = toy.load_or_pretrain(module(c), toy.make_mixture(c.teacher), c, str(tmp_path))
    assert not all(jax.tree.leaves(jax.tree.map(np.array_equal, first, other))), field
    key = json.loads((tmp_path / "pretrained_denoiser.json").read_text())
    assert key == json.loads(json.dumps(toy.cache_key(c))), field
    assert os.path.getmtime(tmp_path / "pretrained_denoiser.msgpack") >= mtime


def test_pretrain_cache_with_a_flipped_byte_is_rebuilt(tmp_path, caplog):
  cfg = defaults.toy()
  cfg.pretrain.update(dict(steps=3, batch=16))
  cfg.student.update(dict(hidden=16, depth=1))
  gmm = toy.make_mixture(cfg.teacher)
  module = MLPDenoiser(dim=2, hidden=16, depth=1, sigma_data=cfg.diffusion.sigma_data)
  first = toy.load_or_pretrain(module, gmm, cfg, str(tmp_path))
  path = tmp_path / "pretrained_denoiser.msgpack"
  good = path.read_bytes()
  # Bytes of a float32 weight near the end of the payload: still valid msgpack, other numbers.
  for where, bad in ((len(good) - 8, bytes([good[-8] ^ 0x40])), (None, b"foreign file")):
    path.write_bytes(bad if where is None else good[:where] + bad + good[where + 1:])
    caplog.clear()
    again = toy.load_or_pretrain(module, gmm, cfg, str(tmp_path))
    assert "pretraining again" in caplog.text and str(path) in caplog.text
    assert ("sha256" in caplog.text) == (where is not None), caplog.text
    jax.tree.map(np.testing.assert_array_equal, first, again)  # Same seed: the same init.
    assert path.read_bytes() == good  # Rewritten whole; the next load verifies.
