"""Uni-Instruct (methods/uni_instruct.py): the divergence family's generator loss, its ratio
estimates, its config checks, and a short toy run that must move the student toward the teacher.
Parity with the official code: tests/test_uni_instruct_parity.py."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fdistill_jax import config_checks, divergences
from fdistill_jax.methods import registry, sid, uni_instruct as uni
from tests.test_methods_dmd import short_run
from tests.test_toy_engine import tiny_cfg


def _arrays(seed=0, b=6, shape=(4, 4, 3), p=4):
  k = jax.random.split(jax.random.PRNGKey(seed), 4)
  x_g = jax.random.normal(k[0], (b,) + shape)
  f_real = x_g + 0.3 * jax.random.normal(k[1], (b,) + shape)
  f_fake = x_g + 0.3 * jax.random.normal(k[2], (b,) + shape)
  logits = jax.random.normal(k[3], (b, p))
  return x_g, f_real, f_fake, logits, jnp.ones((b,), bool)


def _cfg(**kw):
  class C:  # divergence_loss reads cfg.method only
    method = uni.method_config(**kw)
  return C


@pytest.mark.parametrize("div", uni.DIVERGENCES)
@pytest.mark.parametrize("ratio", uni.RATIOS)
def test_every_divergence_gives_a_finite_loss_and_gradient(div, ratio):
  x_g, fr, ff, lg, keep = _arrays()
  cfg = _cfg(divergence=div, ratio=ratio, ratio_normalization="none")
  f = lambda x, a, b, l: uni.divergence_loss(x, a, b, l, keep, cfg)[0]
  loss, grads = jax.value_and_grad(f, argnums=(0, 1, 2, 3))(x_g, fr, ff, lg)
  assert np.isfinite(float(loss))
  assert all(np.all(np.isfinite(np.asarray(g))) for g in grads)


def test_reverse_kl_is_sida():
  """rkl: lsg/B Σ SiD(α) + lsg_gan/B Σ g, no ratio at all (the code's branch multiplies by an
  undefined ratio; the paper's r² f''(r) is 1)."""
  x_g, fr, ff, lg, keep = _arrays(1)
  cfg = _cfg(divergence="rkl", generator_loss_scale=100.0, gan_loss_scale_gen=0.01, alpha=1.0)
  loss, _ = uni.divergence_loss(x_g, fr, ff, lg, keep, cfg)
  wf = uni.weight_factor(x_g, fr)
  want = (100.0 * jnp.mean(sid.sid_per_sample(x_g, fr, ff, 1.0))
          + 0.01 * jnp.mean(uni.gan_generator_per_sample(lg, x_g, wf)))
  np.testing.assert_allclose(float(loss), float(want), rtol=1e-6)


def test_sim_weights_are_r_squared_f_second_derivative():
  r = jnp.array([0.2, 0.7, 1.0, 3.0])
  for div, name in (("fkl", "kl"), ("rkl", "rkl"), ("js", "js")):
    c_sim, _ = uni.ratio_weights(r, div, official=False)
    d = divergences.get(name)
    np.testing.assert_allclose(c_sim, d.h_scale * np.asarray(d.h(r)), rtol=1e-6)
  c_sim, _ = uni.ratio_weights(r, "chi2", official=False)  # Pearson χ²: f = (r − 1)², f'' = 2.
  np.testing.assert_allclose(c_sim, 2 * r ** 2, rtol=1e-6)
  c_sim, _ = uni.ratio_weights(r, "jeffrey", official=False, jeffrey_fkl_weight=0.4)
  np.testing.assert_allclose(c_sim, 0.4 * r + 0.6, rtol=1e-6)
  for div, name in uni.FDISTILL.items():  # f-distill weights come from the registry.
    c_sim, c_di = uni.ratio_weights(r, div, official=False)
    np.testing.assert_allclose(c_di, divergences.get(name).h(r), rtol=1e-6)
    assert float(jnp.max(jnp.abs(c_sim))) == 0.0


def test_official_forward_kl_ratio_is_one_for_images():
  """The code's ratio −g/(1−g) from the GAN loss: for a 32×32×3 image g ~ 10⁴, so r ≈ 1 + 1/g."""
  x_g, fr, ff, lg, _ = _arrays(2, b=4, shape=(32, 32, 3), p=64)
  g = uni.gan_generator_per_sample(lg, x_g, uni.weight_factor(x_g, fr))
  r = uni.official_ratio(g, "fkl", "none")
  assert float(jnp.min(g)) > 1e3
  np.testing.assert_allclose(r, 1.0, atol=1e-3)
  np.testing.assert_allclose(r, 1 + 1 / (g - 1), rtol=1e-5)


def test_logit_ratio_clamps_and_normalises():
  lg = jnp.array([[-20.0, -20.0], [0.0, 0.0], [3.0, 1.0], [20.0, 20.0]])
  r = uni.logit_ratio(lg, logit_clip=10.0, lower=1e-3, upper=1e3)
  np.testing.assert_allclose(r, [1e-3, 1.0, np.exp(2.0), 1e3], rtol=1e-6)
  np.testing.assert_allclose(jnp.mean(uni.normalise(r, "mean")), 1.0, rtol=1e-6)
  np.testing.assert_allclose(jnp.sum(uni.normalise(r, "sum")), 1.0, rtol=1e-6)


def test_fdistill_terms_move_the_sample_toward_the_teacher():
  """With the paper's ratio every f-distill term's x_g-gradient is h·(D_fake − D_teacher)·lsg/B."""
  x_g, fr, ff, lg, keep = _arrays(3)
  for div in ("fdistill_rkl", "fdistill_fkl", "fdistill_js"):
    cfg = _cfg(divergence=div, gan_loss_scale_gen=0.0, ratio_normalization="none")
    g = jax.grad(lambda x: uni.divergence_loss(x, fr, ff, lg, keep, cfg)[0])(x_g)
    assert float(jnp.sum(g * (fr - ff))) < 0, div


@pytest.mark.parametrize("field,value", [
    ("divergence", "Forward-KL"), ("ratio", "gan"), ("ratio_normalization", "batch"),
    ("ratio_lower", 0.0), ("jeffrey_fkl_weight", 1.5), ("logit_clip", -1.0),
    ("generator_start_step", -1), ("t_max", 0.0), ("gan_loss_scale_gen", -0.01),
    ("fake_score_reduction", "max")])
def test_config_rejects_bad_values(field, value):
  cfg = tiny_cfg()
  cfg.method = uni.method_config(**{field: value})
  cfg.disc.enabled = False
  with pytest.raises(config_checks.ConfigError, match=rf"method\.{field}"):
    config_checks.check(cfg, num_devices=8)


def test_config_rejects_a_separate_discriminator():
  cfg = tiny_cfg()
  cfg.method = uni.method_config()
  cfg.disc.enabled = True
  with pytest.raises(config_checks.ConfigError, match=r"disc\.enabled"):
    config_checks.check(cfg, num_devices=8)


def test_official_names_cover_the_family():
  assert sorted(set(uni.OFFICIAL_NAMES.values())) == sorted(uni.DIVERGENCES)
  assert registry.get("uni_instruct") is uni


@pytest.mark.slow
@pytest.mark.parametrize("div", ["fkl", "chi2"])
def test_short_toy_run_moves_student_toward_teacher(tmp_path_factory, tmp_path, div):
  cfg = tiny_cfg(steps=300, batch_size=128, log_every=100, ckpt_every=0)
  cfg.pretrain.steps = 400
  cfg.method = uni.method_config(divergence=div, fake_p_mean=cfg.pretrain.p_mean,
                                 fake_p_std=cfg.pretrain.p_std, generator_start_step=2,
                                 divergence_start_step=5)
  cfg.diffusion.sigma_init = 2.5
  cfg.disc.enabled = False
  root = tmp_path_factory.getbasetemp() / "uni_shared"  # Both divergences pretrain once.
  root.mkdir(exist_ok=True)
  init, student, history, run = short_run(cfg, tmp_path, root)
  gens = [h for h in history if "generator/kept_frac" in h]
  assert all(float(h["generator/kept_frac"]) == 1.0 for h in gens)
  assert int(run.state["extras"]["gen_step"]) == len(gens)
  assert student["sw"] < 0.5 * init["sw"], (student["sw"], init["sw"])
  assert student["mean_log_prob"] > init["mean_log_prob"] + 5.0


def test_released_recipes_carry_the_official_settings():
  import importlib.util
  import os
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

  def load(name):
    spec = importlib.util.spec_from_file_location(name, os.path.join(root, "configs", name))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.get_config()
  c10, in64 = load("cifar10_uni_fkl.py"), load("imagenet64_uni_fkl.py")
  for cfg, batch, lr, start in ((c10, 256, 1e-5, (391, 782)), (in64, 8192, 4e-6, (13, 25))):
    m = cfg.method
    assert (m.name, m.divergence, m.ratio, m.ratio_normalization) == (
        "uni_instruct", "fkl", "official", "none")
    assert (m.generator_loss_scale, m.gan_loss_scale_gen, m.fake_score_loss_scale,
            m.gan_loss_scale_disc, m.fake_score_reduction, m.alpha) == (
                100.0, 0.01, 1.0, 1.0, "sum", 1.0)
    assert (m.generator_start_step, m.divergence_start_step) == start
    assert (cfg.train.batch_size, cfg.optim.generator.lr, cfg.optim.fake_score.lr) == (
        batch, lr, lr)
    assert cfg.train.steps == int(300e6 // batch) and cfg.diffusion.sigma_init == 2.5
    assert (m.t_max, cfg.optim.generator.b1, cfg.optim.generator.b2) == (800.0, 0.0, 0.999)
  assert c10.method.augment_p == 0.12 and in64.method.augment_p == 0.0
  assert c10.teacher.precond_kwargs.dropout == 0.13 and in64.teacher.precond_kwargs.dropout == 0.1
  assert tuple(c10.train.ema_decays) == (round(0.5 ** (256 / 0.5e6), 6),)
  assert tuple(in64.train.ema_decays) == (round(0.5 ** (8192 / 2e6), 6),)


def test_encoder_logits_read_the_lowest_resolution_map():
  x8 = jax.random.normal(jax.random.PRNGKey(0), (2, 8, 8, 5))
  x16 = jax.random.normal(jax.random.PRNGKey(1), (2, 16, 16, 3))
  want = jnp.mean(x8, -1).reshape(2, 64)
  nested = {"encoder": {16: x16, 8: x8}, "bottleneck": x8 + 1}
  flat = {"enc16": x16, "enc8": x8, "bottleneck": x8 + 1}  # experiments/image.py's names
  for feats in (nested, flat):
    np.testing.assert_allclose(uni.encoder_logits(feats), want, rtol=1e-6)
  np.testing.assert_allclose(uni.encoder_logits(x16[:, 0, 0, :]), jnp.mean(x16[:, 0, 0, :], -1,
                                                                         keepdims=True))
  with pytest.raises(ValueError, match="encoder features"):
    uni.encoder_logits({"block1": x8})
