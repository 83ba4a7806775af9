"""fdistill_jax.export on a toy (MLP) student: a chosen step and EMA track -> folder -> PyTorch.

The EDM architecture's export is checked in tests/test_image_engine.py on its trained run.
"""
import json

import flax.serialization
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from fdistill_jax import defaults, export, fileio, testing
from fdistill_jax import compose
from fdistill_jax.experiments import toy
from fdistill_jax.models.mlp import MLPDenoiser


def tiny_toy_cfg():
  cfg = defaults.toy()
  cfg.pretrain.steps = 20
  cfg.student.update(hidden=16, depth=2)
  cfg.disc.hidden = 16
  cfg.train.update(batch_size=16, steps=4, async_checkpoints=False, ema_decays=(0.9,))
  cfg.eval.num_samples = 16
  # A generator-only method keeps this cheap (one step compiled); export only reads the state.
  cfg.method = ml_collections.ConfigDict(dict(name="edm_training", p_mean=-0.4, p_std=1.4))
  return cfg


def _random_denoiser(cfg, seed=0):
  """Random params of the toy's MLPDenoiser (shapes from jax.eval_shape: no init compiled)."""
  module = MLPDenoiser(dim=toy.make_mixture(cfg.teacher).dim, hidden=cfg.student.hidden,
                       depth=cfg.student.depth, sigma_data=cfg.diffusion.sigma_data)
  shapes = jax.eval_shape(module.init, jax.random.PRNGKey(0), jnp.zeros((1, module.dim)),
                          jnp.ones((1,)))["params"]
  rng = np.random.default_rng(seed)

  def one(path, a):
    if a.ndim == 2:
      return (rng.standard_normal(a.shape) / np.sqrt(a.shape[0])).astype(np.float32)
    base = 1.0 if path[-1].key == "scale" else 0.0  # LayerNorm scales near 1.
    return (base + 0.1 * rng.standard_normal(a.shape)).astype(np.float32)
  return jax.tree_util.tree_map_with_path(one, shapes)


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory):
  """A toy run with checkpoints at steps 2 and 4; returns (cfg, workdir, {step: host state}).
  Its 'pretrained' denoiser is random weights put in the workdir's pretrained-denoiser cache
  (export reads only the trained state), so building the run pretrains nothing."""
  cfg, workdir = tiny_toy_cfg(), tmp_path_factory.mktemp("toy")
  fileio.write_cache(workdir / "pretrained_denoiser.msgpack",
                     flax.serialization.to_bytes(_random_denoiser(cfg)), toy.cache_key(cfg))
  run = compose.Run(cfg, str(workdir), devices=jax.devices()[:1], restore=False,
                    compiler_options=testing.fast_compile_options())  # 4 steps: compile fast.
  saved = {}
  for k in range(4):
    run.step(k)
    if (k + 1) % 2 == 0:
      run.ckpt.save(k + 1, run.state, run.exp.data_state())
      saved[k + 1] = jax.device_get(run.state)
  run.ckpt.close()
  return cfg, str(workdir), saved


def _load_flat(path):
  from safetensors.numpy import load_file
  return load_file(str(path))


def test_mlp_export_round_trips_to_torch(toy_run, tmp_path):
  torch = pytest.importorskip("torch")
  from fdistill_jax.convert import mlp_torch
  cfg, workdir, saved = toy_run
  out = export.export_generator(cfg, workdir, str(tmp_path / "ex"), which="0.9")
  assert out["step"] == 4 and sorted(out["files"]) == ["metadata.json", "params.safetensors"]
  meta = json.loads((tmp_path / "ex" / "metadata.json").read_text())
  assert (meta["method"], meta["divergence"], meta["sigma_init"]) == ("edm_training", None, 80.0)
  assert meta["step"] == 4 and meta["params"] == "0.9" and meta["teacher"]["kind"] == "gmm"
  assert meta["architecture"] == {"kind": "MLPDenoiser", "kwargs": dict(
      dim=2, hidden=16, depth=2, emb_dim=64, label_dim=0, sigma_data=1.5)}
  assert meta["config"]["student"] == {"hidden": 16, "depth": 2}
  ema = saved[4]["ema"]["0.9"]
  flat = _load_flat(tmp_path / "ex" / "params.safetensors")
  assert flat.keys() == export.flatten(ema).keys()
  for k, v in export.flatten(ema).items():
    np.testing.assert_array_equal(flat[k], v, err_msg=k)
  assert not np.array_equal(flat["out/kernel"], export.flatten(saved[4]["params"]["generator"])
                            ["out/kernel"])  # the EMA track, not the raw weights
  # PyTorch twin from metadata.json + params.safetensors vs the Flax module, same inputs.
  net = mlp_torch.load(str(tmp_path / "ex"))
  x = np.random.default_rng(0).normal(size=(32, 2)).astype(np.float32) * 3
  sigma = np.geomspace(0.002, 80.0, 32).astype(np.float32)
  # Jitted (one compile for both calls: same shapes) instead of the MLP's ops one by one.
  flax_net = testing.compile_fast(jax.jit(lambda xx, s: MLPDenoiser(
      **meta["architecture"]["kwargs"]).apply({"params": ema}, xx, s)).lower(x, sigma))
  want = flax_net(jnp.asarray(x), jnp.asarray(sigma))
  with torch.no_grad():
    got = net(torch.from_numpy(x), torch.from_numpy(sigma)).numpy()
  np.testing.assert_allclose(got, np.asarray(want), rtol=1e-5, atol=1e-5)
  with torch.no_grad():  # One-step generation at sigma_init, as metadata.json documents.
    z = torch.from_numpy(x)
    gen = net(80.0 * z, torch.full((32,), 80.0)).numpy()
  want = flax_net(80.0 * jnp.asarray(x), jnp.full((32,), 80.0))
  np.testing.assert_allclose(gen, np.asarray(want), rtol=1e-5, atol=1e-5)


def test_export_of_a_chosen_step_and_errors(toy_run, tmp_path):
  cfg, workdir, saved = toy_run
  out = export.export_generator(cfg, workdir, str(tmp_path / "s2"), which="raw", step=2)
  assert out["step"] == 2
  flat = _load_flat(tmp_path / "s2" / "params.safetensors")
  for k, v in export.flatten(saved[2]["params"]["generator"]).items():
    np.testing.assert_array_equal(flat[k], v, err_msg=k)
  assert json.loads((tmp_path / "s2" / "metadata.json").read_text())["step"] == 2
  with pytest.raises(FileNotFoundError, match=r"step 3 .*kept steps: \[2, 4\]"):
    export.export_generator(cfg, workdir, str(tmp_path / "s3"), which="raw", step=3)
  with pytest.raises(ValueError, match="no such EMA track"):
    export.export_generator(cfg, workdir, str(tmp_path / "e"), which="0.5")
  with pytest.raises(ValueError, match="must be a folder"):
    export.export_generator(cfg, workdir, str(tmp_path / "x.safetensors"))
