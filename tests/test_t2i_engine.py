"""The 'pixart' teacher kind end to end: a tiny pixel-space PixArt (8×8, one channel, one block)
with a prompt cache written here; f-distill JS with guidance and the GAN branch trains, saves,
resumes and evaluates; SiD-LSG, SIM, DMD2 and EDM training (with condition dropout) step; the
data pairs images with prompts; σ fields outside the adapter's range fail clearly.

The teacher is a random init with every weight perturbed (diffusers zero-initialises the
cross-attention output, which would make the text irrelevant), written as a diffusers folder,
so the checkpoint loader is exercised too.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fdistill_jax import compose, config_checks, defaults
from fdistill_jax.convert import pixart as conv
from fdistill_jax.data import prompt_cache as pc
from fdistill_jax.experiments import t2i
from fdistill_jax.methods import dmd, sid, sim

P, L, D = 8, 6, 8
LABELS = [0, 1, 2, 3] * 2
HELDOUT = [False] * 6 + [True] * 2


@pytest.fixture(scope="module")
def files(tmp_path_factory):
  root = tmp_path_factory.mktemp("t2i")
  rng = np.random.default_rng(0)
  mask = np.ones((P, L), np.uint8)
  mask[:, 4:] = 0
  null_mask = np.zeros((1, L), np.uint8)
  null_mask[0, 0] = 1
  pc.write_cache(root / "cache", rng.normal(size=(P, L, D)).astype(np.float32), mask,
                 [f"the digit {c}, phrasing {i}" for i, c in enumerate(LABELS)],
                 rng.normal(size=(1, L, D)).astype(np.float32), null_mask, labels=LABELS,
                 heldout=HELDOUT)
  cfg = tiny_cfg(str(root / "cache"), "")
  module, params = t2i.teacher_network(cfg)
  leaves, tree = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.key(1), len(leaves))
  params = jax.tree.unflatten(tree, [np.asarray(x + 0.05 * jax.random.normal(k, x.shape))
                                     for x, k in zip(leaves, keys)])
  conv.to_diffusers_folder(params, module, root / "teacher")
  return str(root / "cache"), str(root / "teacher")


def tiny_cfg(cache, teacher):
  cfg = defaults.t2i()
  cfg.teacher.update(dict(checkpoint=teacher, prompt_cache=cache))
  cfg.teacher.pixart_config.update(dict(sample_size=8, caption_channels=D, num_layers=1))
  cfg.dataset.update(dict(name="synthetic", resolution=8))
  cfg.disc.feature_keys = ("block0",)
  cfg.disc.channels = 16
  cfg.method.guidance_scale = 2.0
  cfg.train.update(dict(steps=4, batch_size=8, log_every=2, ckpt_every=2,
                        async_checkpoints=False))
  cfg.eval.update(dict(num_samples=8, teacher_nfes=(1,), metric="none", guidance_scale=2.0,
                       nfe=2, grid_size=4))
  cfg.mesh.fsdp_min_size = 64
  return cfg


def test_fdistill_js_guided_gan_trains_resumes_and_evaluates(files, tmp_path):
  cfg = tiny_cfg(*files)
  config_checks.check(cfg)
  out = compose.train(cfg, str(tmp_path))
  assert np.isfinite(out["student"]["pixel_std"])
  # The teacher reads the text: guided and unguided reference samples differ.
  g, u = out["teacher_nfe1"]["pixel_mean"], out["teacher_nfe1_unguided"]["pixel_mean"]
  assert g != u
  assert (tmp_path / "samples_0000004.png").exists()
  cfg.train.steps = 6
  run = compose.Run(cfg, str(tmp_path))
  assert int(run.state["step"]) == 4 and run.exp.data_state()["grain"]
  m = [jax.device_get(run.step(k)) for k in (4, 5)]
  assert "critic/gan_disc" in m[1] and all(np.isfinite(v) for d in m for v in d.values())


@pytest.mark.parametrize("name", ["sid_lsg", "sim", "dmd2", "edm_training"])
def test_methods_step(files, tmp_path, name):
  cfg = tiny_cfg(*files)
  if name == "sid_lsg":
    cfg.method = sid.method_config(kappa_train_fake=1.5, kappa_fake=1.5, kappa_real=1.5,
                                   cond_drop=0.1)
    defaults.sid_style(cfg)
    cfg.diffusion.sigma_init = 2.5
    cfg.dataset.name = "prompts"
  elif name == "sim":
    cfg.method = sim.method_config(distance="pseudo_huber")
    defaults.sid_style(cfg)
    cfg.dataset.name = "prompts"
  elif name == "dmd2":
    cfg.method.update(dict(divergence="rkl", ratio_normalization=False,
                           disc_features="fake_score", gan_weight_disc=1e-2))
  else:
    cfg.method.name, cfg.method.cond_drop = "edm_training", 0.2
    cfg.disc.enabled = False
    cfg.eval.update(dict(sampler="dpm_solver_pp_2m", teacher_nfes=()))
  config_checks.check(cfg)
  run = compose.Run(cfg, str(tmp_path), devices=jax.devices()[:1], restore=False)
  before = jax.device_get(run.state["params"]["generator"])
  for k in range(2):
    metrics = jax.device_get(run.step(k))
    assert all(np.isfinite(v) for v in metrics.values()), (name, metrics)
  after = jax.device_get(run.state["params"]["generator"])
  moved = max(float(np.abs(a - b).max()) for a, b in zip(jax.tree.leaves(before),
                                                         jax.tree.leaves(after)))
  assert moved > 0 or name != "edm_training"
  if name == "edm_training":
    x = run.exp.sample(run.state["params"]["generator"], jax.random.key(0))
    assert x.shape == (8, 8, 8, 1) and np.isfinite(x).all()


def test_condition_dropout_uses_the_cached_null_prompt(files):
  exp, _ = compose.build(tiny_cfg(*files), "/tmp/unused", prepare=False)
  cond = exp.batch(0)["cond"]
  dropped, mask = exp.nets.cond.drop(jax.random.key(0), jax.tree.map(jnp.asarray, cond), 0.5)
  null = pc.load_prompt_cache(files[0]).null_condition()
  assert 0 < int(mask.sum()) < 8
  for i in range(8):
    want = null["embeddings"][0] if mask[i] else cond["embeddings"][i]
    np.testing.assert_array_equal(np.asarray(dropped["embeddings"][i]), want)


def test_data_pairs_images_with_training_prompts_of_their_class(files):
  cache = pc.load_prompt_cache(files[0])
  table, counts = t2i.prompts_by_class(cache, 4)
  assert counts.tolist() == [2, 2, 1, 1]  # rows 6, 7 (classes 2, 3) are held out
  cfg = tiny_cfg(*files)
  exp, _ = compose.build(cfg, "/tmp/unused", prepare=False)
  emb = np.asarray(exp.batch(0)["cond"]["embeddings"])
  rows = [int(np.argmin(np.abs(cache.embeddings - e).sum((1, 2)))) for e in emb]
  assert not any(HELDOUT[r] for r in rows)
  cfg.dataset.name = "prompts"
  exp, _ = compose.build(cfg, "/tmp/unused", prepare=False)
  b0, b1 = exp.batch(0), exp.batch(1)
  assert b0["x"].shape == (8, 8, 8, 1)
  np.testing.assert_array_equal(b0["cond"]["mask"], exp.batch(0)["cond"]["mask"])  # pure in step
  assert not np.array_equal(b0["cond"]["embeddings"], b1["cond"]["embeddings"])


def test_sigma_fields_outside_the_adapter_range_fail(files):
  cfg = tiny_cfg(*files)
  cfg.diffusion.sigma_min = 0.002
  with pytest.raises(config_checks.ConfigError, match=r"sigma_min.*0\.0100"):
    config_checks.check(cfg)
  cfg = tiny_cfg(*files)
  cfg.disc.feature_keys = ("enc8",)
  with pytest.raises(config_checks.ConfigError, match="block<i>"):
    config_checks.check(cfg)
