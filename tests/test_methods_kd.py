"""Knowledge distillation: the teacher-pair cache is resumable and deterministic; a run learns.

The cache is built with the exact mixture's Heun sampler. An interrupted build (one shard written,
a half-written temporary file left behind) must complete to exactly the arrays of a one-shot
build; a cache with other settings is refused naming the field. A short KD run on the toy must
lower the regression error and move the one-step student toward the exact teacher.
"""
import importlib.util
import os

import jax
import numpy as np
import pytest

from fdistill_jax.diffusion import samplers
from fdistill_jax.methods import kd
from fdistill_jax.teachers import analytic
from tests.test_methods_dmd import short_run
from tests.test_toy_engine import tiny_cfg

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GMM = analytic.ring_mixture(4, 2.0, 0.1)
STEPS = 12


def _sample_fn():
  fn = jax.jit(lambda z: samplers.edm_sampler(GMM.denoise, z, STEPS))
  return lambda z, labels: fn(z)


def _build(path, **kw):
  args = dict(num_pairs=10, shard_size=4, num_steps=STEPS, seed=3, sigma_min=0.002,
              sigma_max=80.0, data_shape=(2,))
  args.update(kw)
  return kd.build_pair_cache(_sample_fn(), str(path), **args)


def test_pair_cache_resumes_and_is_deterministic(tmp_path):
  full = kd.load_pairs(_build(tmp_path / "oneshot"))
  part = tmp_path / "killed"
  paths = _build(part, max_new_shards=1)
  assert [os.path.exists(p) for p in paths] == [True, False, False]
  with pytest.raises(FileNotFoundError, match="2 shards missing"):
    kd.load_pairs(paths)
  (part / "shard_00001.npz.tmp").write_bytes(b"half a shard")  # a build killed mid-write
  resumed = kd.load_pairs(_build(part))
  for k in ("z", "y", "labels"):
    np.testing.assert_array_equal(full[k], resumed[k], err_msg=k)
  assert full["z"].shape == (10, 2) and full["labels"].shape == (10, 0)
  # The pairs are the teacher's ODE map: y on the data manifold, and y = Heun(z) for a fresh z.
  assert float(np.mean(GMM.log_prob(full["y"]))) > -1.5
  np.testing.assert_allclose(full["y"][:3], np.asarray(
      samplers.edm_sampler(GMM.denoise, full["z"][:3], STEPS)), atol=1e-5)
  with pytest.raises(ValueError, match="num_steps=12"):
    _build(part, num_steps=13)


def _config(name):
  spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, "configs", f"{name}.py"))
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod.get_config()


def test_kd_short_run_lowers_regression_and_distance(tmp_path):
  cfg = _config("toy2d_kd")
  small = tiny_cfg(steps=300, batch_size=128, log_every=50, ckpt_every=0)
  small.pretrain.steps = 400
  small.method = cfg.method
  small.method.update(pairs_num=2048, pairs_shard_size=1024, pairs_steps=12)
  small.disc.enabled = False
  init, student, history, _ = short_run(small, tmp_path)
  assert sorted(os.listdir(tmp_path / "kd_pairs")) == ["manifest.json", "shard_00000.npz",
                                                      "shard_00001.npz"]
  reg = [float(h["generator/regression"]) for h in history]
  assert np.mean(reg[-20:]) < 0.3 * np.mean(reg[:20]), (reg[:20], reg[-20:])
  assert student["sw"] < 0.5 * init["sw"], (student["sw"], init["sw"])
