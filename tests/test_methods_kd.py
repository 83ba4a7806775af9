"""Knowledge distillation: the teacher-pair cache is resumable and deterministic; a run learns.

The cache is built with the exact mixture's Heun sampler. An interrupted build (one shard written,
a half-written temporary file left behind) must complete to exactly the arrays of a one-shot
build; a cache with other settings is refused naming the field. A short KD run on the toy must
lower the regression error and move the one-step student toward the exact teacher.
"""
import os

import jax
import numpy as np
import pytest

from fdistill_jax import testing
from fdistill_jax.diffusion import samplers
from fdistill_jax.methods import kd
from fdistill_jax.teachers import analytic
from tests.test_methods_dmd import short_run
from tests.test_toy_engine import tiny_cfg

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


def test_damaged_shard_is_set_aside_and_rebuilt(tmp_path, caplog):
  args = dict(num_pairs=10, shard_size=4, num_steps=STEPS, seed=3, sigma_min=0.002,
              sigma_max=80.0, data_shape=(2,))
  paths = _build(tmp_path / "c")
  full = kd.load_pairs(paths)
  good = open(paths[1], "rb").read()
  mid = len(good) // 2  # Inside the arrays' bytes: only the zip CRC-32 can tell.
  with open(paths[1], "wb") as f:
    f.write(good[:mid] + bytes([good[mid] ^ 1]) + good[mid + 1:])
  with pytest.raises(ValueError, match=r"shard_00001\.npz.*CRC"):
    kd.load_pairs(paths)  # A ValueError naming the shard, not a raw zipfile.BadZipFile.
  got = kd.load_pair_cache(_sample_fn(), str(tmp_path / "c"), **args)
  assert "shard_00001.npz" in caplog.text and "rebuilding shard 1" in caplog.text
  for k in full:
    np.testing.assert_array_equal(full[k], got[k], err_msg=k)
  assert open(paths[1] + ".corrupt", "rb").read() != good
  (tmp_path / "c" / "manifest.json").write_text("[1, 2")  # A torn manifest: refused, with the fix.
  with pytest.raises(ValueError, match=r"manifest\.json: invalid JSON.*delete"):
    kd.load_pair_cache(_sample_fn(), str(tmp_path / "c"), **args)
  (tmp_path / "c" / "manifest.json").write_text("[1, 2]")
  with pytest.raises(ValueError, match=r"manifest\.json: not a pair-cache manifest.*delete"):
    kd.load_pair_cache(_sample_fn(), str(tmp_path / "c"), **args)


_config = testing.shipped_config


@pytest.mark.slow
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
