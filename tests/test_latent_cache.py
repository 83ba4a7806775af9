"""Latent cache: a tiny random VAE encodes 5 images into 3 shards; the cache equals encoding
directly, a crash after the first shard resumes without re-encoding it, bad files are named."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fdistill_jax.data import latent_cache as lc
from fdistill_jax.data.sources import ArraySource
from fdistill_jax.models.vae import AutoencoderKL


@pytest.fixture(scope="module")
def setup():
  m = AutoencoderKL(block_out_channels=(4, 8), norm_num_groups=2, latent_channels=2)
  shapes = jax.eval_shape(lambda: m.init(jax.random.PRNGKey(0), jnp.zeros((1, 8, 8, 3))))
  leaves, tree = jax.tree_util.tree_flatten(shapes)
  rng = np.random.default_rng(0)
  v = jax.tree_util.tree_unflatten(tree, [0.3 * rng.standard_normal(s.shape).astype(np.float32)
                                          for s in leaves])
  images = rng.integers(0, 256, (5, 8, 8, 3), dtype=np.uint8)
  source = ArraySource(images, np.arange(5) % 2, name="tiny")
  encode = lc.vae_encode_fn(m, v, batch_size=2)
  return m, v, source, encode


def _write(source, out, encode, **kw):
  return lc.write_latent_cache(source, out, encode, scaling_factor=0.18215, shard_size=2,
                               **kw)


def test_cache_equals_direct_encoding_and_resumes(setup, tmp_path, monkeypatch):
  m, v, source, encode = setup
  calls = []

  def crashing(images):
    calls.append(len(images))
    if len(calls) == 3:  # 1 shape probe + shard 0 done, crash inside shard 1.
      raise KeyboardInterrupt("simulated crash")
    return encode(images)
  with pytest.raises(KeyboardInterrupt):
    _write(source, tmp_path / "c", crashing)
  with pytest.raises(lc.LatentCacheError, match="incomplete"):
    lc.load_latent_cache(tmp_path / "c")

  calls.clear()
  counted = lambda images: calls.append(len(images)) or encode(images)
  index = _write(source, tmp_path / "c", counted)
  assert calls == [1, 2, 1]  # shape probe, shard 1 (2 images), shard 2 (1 image); shard 0 kept.
  assert index["num_shards"] == 3 and index["latent_shape"] == [4, 4, 2]
  arrays, _ = lc.load_latent_cache(tmp_path / "c")
  # The cache's job is batching/sharding/order: compare with the same (compiled) encoder run on
  # other batches. VAE parity itself is tests/test_vae.py's.
  direct = [encode(source.images[i:i + 2]) for i in (0, 2, 4)]
  np.testing.assert_array_equal(arrays["mean"], np.concatenate([d[0] for d in direct]))
  np.testing.assert_array_equal(arrays["logvar"], np.concatenate([d[1] for d in direct]))
  np.testing.assert_array_equal(arrays["label"], source.labels)
  assert np.std(arrays["mean"]) > 0.01 and arrays["mean"].dtype == np.float32
  key = jax.random.PRNGKey(1)
  lat = lc.sample_latents(arrays["mean"], arrays["logvar"], key, 0.18215)
  eps = jax.random.normal(key, arrays["mean"].shape)
  np.testing.assert_allclose(lat, 0.18215 * (arrays["mean"] + np.exp(0.5 * arrays["logvar"]) * eps),
                             rtol=1e-5, atol=1e-6)

  shard = tmp_path / "c" / lc.shard_name(2, 3)
  shard.write_bytes(shard.read_bytes()[:50])
  with pytest.raises(lc.LatentCacheError, match=f"{lc.shard_name(2, 3)}: truncated"):
    lc.load_latent_cache(tmp_path / "c")
  with pytest.raises(ValueError, match="shard_size"):
    lc.write_latent_cache(source, tmp_path / "c", encode, scaling_factor=0.18215, shard_size=3)
