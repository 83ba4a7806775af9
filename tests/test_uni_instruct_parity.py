"""Parity with the official Uni-Instruct code (tests/data/uni_instruct, recorded by
tools/make_uni_instruct_fixtures.py from a-little-hoof/Uni_Instruct; provenance in
tests/data/README.md).

The same tiny EDM SongUNet weights run on both sides: the teacher is
tests/data/edm/songunet_tiny, the fake score and the generator are that file moved by the
driver's `perturbed`. Our losses (methods/uni_instruct.py, ratio 'official', the released loss
scales) are replayed at the official draws: every --divergence's generator loss (the scalar the
code back-propagates, or for the branches the code cannot back-propagate our per-sample
reduction of its tensors) within 1e-5 relative, its gradient w.r.t. the generator's output and
(for forward KL, reverse KL and the SiD warm-up) w.r.t. the generator's parameters within 1e-4,
the code's ratios, and the fake-score + discriminator loss with its fake-score gradient.
"""
import importlib.util
import json

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from fdistill_jax import testing
from fdistill_jax.convert import edm_state_dict as esd
from fdistill_jax.convert import state_dict_io as sdio
from fdistill_jax.methods import uni_instruct as uni
from fdistill_jax.models.edm import build_edm_precond
from fdistill_jax.nets import Nets

ROOT = testing.DATA_DIR.parent.parent
TINY = testing.DATA_DIR / "edm" / "songunet_tiny"
FWD_RTOL, GRAD_RTOL = 1e-5, 1e-4
CASES = [("Forward-KL", 0), ("Forward-KL", 1), ("Forward-Clean", 0), ("Reverse-KL", 0),
         ("Jeffrey-KL", 0), ("Jensen-Shannon", 0), ("Chi-Square", 0),
         ("f-distill-Reverse-KL", 0), ("f-distill-Forward-KL", 0), ("f-distill-Forward-KL", 1),
         ("f-distill-Jensen-Shannon", 0), ("f-distill-Jensen-Shannon", 1)]


def _driver():
  spec = importlib.util.spec_from_file_location(
      "make_uni_instruct_fixtures", ROOT / "tools" / "make_uni_instruct_fixtures.py")
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod


def _nhwc(a):
  return jnp.asarray(np.transpose(a, (0, 2, 3, 1)))


def _nchw(a):
  return np.transpose(np.asarray(a), (0, 3, 1, 2))


@pytest.fixture(scope="module")
def setup():
  drv = _driver()
  ref = dict(np.load(testing.DATA_DIR / "uni_instruct" / "uni_instruct_vectors.npz"))
  meta = json.loads((testing.DATA_DIR / "uni_instruct" / "uni_instruct_vectors.json").read_text())
  kw = json.loads((TINY / "config.json").read_text())["precond_kwargs"]
  module = build_edm_precond(kw)
  sd = {k: np.asarray(v, np.float32) for k, v in
        sdio.read_state_dict(TINY / "state_dict.safetensors").items()}
  params = {name: esd.state_dict_to_variables(s, module)["params"] for name, s in
            (("teacher", sd), ("fake_score", drv.perturbed(sd, drv.FAKE_SEED)),
             ("generator", drv.perturbed(sd, drv.GEN_SEED)))}

  # One compiled network (per output kind) shared by every case: the losses around it run
  # eagerly, and differentiating this jitted call reuses its compiled forward/backward, where
  # op-by-op dispatch through the U-Net compiled each of its ops anew (~3x the time).
  apply = jax.jit(lambda p, x, sigma, cond, augment_labels, features: module.apply(
      {"params": p}, x, sigma, cond, augment_labels, return_features=features),
                  static_argnames="features")

  def student(p, x, sigma, cond, *, key=None, features=False, augment_labels=None):
    del key
    return apply(p, x, sigma, cond, augment_labels, features=features)

  nets = Nets(student=student, teacher=lambda f, x, s, c, features=False: student(f, x, s, c),
              disc=None, sigma_init=meta["sigma_init"], data_shape=(16, 16, 3))
  return ref, meta, module, params, nets


def _cfg(div, vr):
  return ml_collections.ConfigDict(dict(
      method=uni.method_config(divergence=uni.OFFICIAL_NAMES[div], ratio="official",
                               ratio_normalization="sum" if vr else "none", alpha=1.0,
                               **uni.OFFICIAL_SCALING),
      diffusion=dict(sigma_min=0.002, sigma_max=80.0, sigma_data=0.5, sigma_init=2.5)))


def _torch_grads(ref, prefix, module, grads):
  """Our Flax gradient tree in the official state_dict layout, next to the stored entries."""
  ours = esd.variables_to_state_dict({"params": grads}, module)
  keys = [k[len(prefix):] for k in ref if k.startswith(prefix)]
  assert len(keys) >= 100, prefix
  return [(k, np.asarray(ours[k]), ref[prefix + k]) for k in keys]


def _close_grads(pairs, tag):
  scale = max(float(np.max(np.abs(w))) for _, _, w in pairs)
  for k, got, want in pairs:
    np.testing.assert_allclose(got, want, rtol=GRAD_RTOL, atol=GRAD_RTOL * scale,
                               err_msg=f"{tag} {k}")


def _gen_loss(setup, div, vr, step=None):
  ref, _, _, params, nets = setup
  cfg = _cfg(div, vr)
  labels = jnp.asarray(ref["inputs/labels"])
  z, n = _nhwc(ref["inputs/z"]), _nhwc(ref["inputs/gen_n"])
  sigma = jnp.asarray(ref["inputs/gen_sigma"])
  frozen = params["teacher"]

  def of_params(gen):
    p = {"generator": gen, "fake_score": params["fake_score"]}
    return uni.generator_loss_at(p, frozen, labels, z, sigma, n, nets, cfg, step)[0]

  def of_sample(x_g):
    return uni.generator_loss_of_sample(x_g, params, frozen, labels, sigma, n, nets, cfg,
                                        step)[0]
  return of_params, of_sample, params


def test_generator_sample_and_draws_match(setup):
  ref, _, _, params, nets = setup
  x_g = nets.train_generate(params["generator"], _nhwc(ref["inputs/z"]),
                            jnp.asarray(ref["inputs/labels"]))
  np.testing.assert_allclose(_nchw(x_g), ref["gen/x_g"], rtol=1e-5, atol=1e-5)
  u = ref["inputs/gen_u"]
  np.testing.assert_allclose(ref["inputs/gen_sigma"], (80 ** (1 / 7) + (1 - u * 0.8) * (
      0.002 ** (1 / 7) - 80 ** (1 / 7))) ** 7, rtol=1e-5)


@pytest.mark.parametrize("div,vr", CASES, ids=[f"{d}-vr{v}" for d, v in CASES])
def test_generator_loss_and_sample_gradient_match_official(setup, div, vr):
  ref, meta, module, _, _ = setup
  tag = f"gen/{div}/vr{vr}"
  of_params, of_sample, params = _gen_loss(setup, div, vr)
  x_g = _nhwc(ref["gen/x_g"])
  loss, g_x = jax.value_and_grad(of_sample)(x_g)
  kind = "reduced" if tag in meta["errors"] else "backward"
  np.testing.assert_allclose(float(loss), ref[f"{tag}/{kind}"], rtol=FWD_RTOL)
  want = ref[f"{tag}/grad_x_g"]
  np.testing.assert_allclose(_nchw(g_x), want, rtol=GRAD_RTOL,
                             atol=GRAD_RTOL * float(np.max(np.abs(want))))
  if f"{tag}/grad/model.map_layer0.bias" in ref:  # Parameter gradients through G itself.
    loss_p, g_p = jax.value_and_grad(of_params)(params["generator"])
    np.testing.assert_allclose(float(loss_p), ref[f"{tag}/{kind}"], rtol=FWD_RTOL)
    _close_grads(_torch_grads(ref, f"{tag}/grad/", module, g_p), tag)


@pytest.mark.parametrize("div,vr", [c for c in CASES if c[0] not in ("Reverse-KL",
                                                                        "f-distill-Reverse-KL")])
def test_ratios_match_official(setup, div, vr):
  ref, _, _, _, _ = setup
  x_g = _nhwc(ref["gen/x_g"])
  wf = uni.weight_factor(x_g, _nhwc(ref["gen/y_real"]))
  np.testing.assert_allclose(wf, np.maximum(np.mean(np.abs(ref["gen/x_g"] - ref["gen/y_real"]),
                                                    axis=(1, 2, 3)), 1e-5), rtol=1e-6)
  name = uni.OFFICIAL_NAMES[div]
  r = uni.official_ratio(jnp.asarray(ref["gen/loss_gan"]), name, "sum" if vr else "none")
  np.testing.assert_allclose(r, ref[f"gen/{div}/vr{vr}/ratio"], rtol=FWD_RTOL)
  if f"gen/{div}/vr{vr}/h" in ref:
    _, c_di = uni.ratio_weights(r, name, official=True, normalization="sum" if vr else "none")
    np.testing.assert_allclose(c_di, ref[f"gen/{div}/vr{vr}/h"], rtol=FWD_RTOL)


def test_gan_loss_per_sample_matches_official(setup):
  ref, _, _, params, nets = setup
  x_g = _nhwc(ref["gen/x_g"])
  sigma, n = jnp.asarray(ref["inputs/gen_sigma"]), _nhwc(ref["inputs/gen_n"])
  x_t = x_g + sigma[:, None, None, None] * n
  f_fake, feats = nets.student(params["fake_score"], x_t, sigma, jnp.asarray(ref["inputs/labels"]),
                               features=True)
  np.testing.assert_allclose(_nchw(f_fake), ref["gen/y_fake"], rtol=1e-5, atol=1e-5)
  wf = uni.weight_factor(x_g, _nhwc(ref["gen/y_real"]))
  g = uni.gan_generator_per_sample(uni.encoder_logits(feats), x_g, wf)
  np.testing.assert_allclose(g, ref["gen/loss_gan"], rtol=FWD_RTOL)


def test_sid_warmup_and_start_steps(setup):
  ref, _, module, _, _ = setup
  cfg_steps = dict(generator_start_step=3, divergence_start_step=5)
  of_params, _, params = _gen_loss(setup, "Forward-KL", 0, step=jnp.int32(4))
  cfg = _cfg("Forward-KL", 0)
  cfg.method.update(cfg_steps)
  labels = jnp.asarray(ref["inputs/labels"])
  args = (labels, _nhwc(ref["inputs/z"]), jnp.asarray(ref["inputs/gen_sigma"]),
          _nhwc(ref["inputs/gen_n"]), setup[4], cfg)
  f = lambda gen, step: uni.generator_loss_at(
      {"generator": gen, "fake_score": params["fake_score"]}, params["teacher"], *args[:4],
      args[4], args[5], step)[0]
  loss, g = jax.value_and_grad(f)(params["generator"], jnp.int32(4))  # after G starts, before div
  np.testing.assert_allclose(float(loss), ref["gen/sid_warmup/backward"], rtol=FWD_RTOL)
  _close_grads(_torch_grads(ref, "gen/sid_warmup/grad/", module, g), "warmup")
  g0 = jax.grad(f)(params["generator"], jnp.int32(2))  # before G starts: no update
  assert all(float(jnp.max(jnp.abs(a))) == 0.0 for a in jax.tree.leaves(g0))


def test_fake_score_and_discriminator_loss_match_official(setup):
  ref, _, module, params, nets = setup
  cfg = _cfg("Forward-KL", 0)
  x_g, x_real = _nhwc(ref["fake/x_g"]), _nhwc(ref["inputs/x_real"])
  sigma, n = jnp.asarray(ref["inputs/fake_sigma"]), _nhwc(ref["inputs/fake_n"])
  labels = jnp.asarray(ref["inputs/labels"])

  def f(fake):
    p = {"generator": params["generator"], "fake_score": fake}
    return uni.critic_loss_at(p, x_g, x_real, labels, sigma, n, nets, cfg)
  (loss, metrics), g = jax.value_and_grad(f, has_aux=True)(params["fake_score"])
  np.testing.assert_allclose(float(loss), ref["fake/total"], rtol=FWD_RTOL)
  np.testing.assert_allclose(float(metrics["dsm"]), ref["fake/loss_fake_score"], rtol=FWD_RTOL)
  np.testing.assert_allclose(float(metrics["gan_disc"]), ref["fake/loss_d"], rtol=FWD_RTOL)
  _close_grads(_torch_grads(ref, "fake/grad/", module, g), "fake")
  _, feats = nets.student(params["fake_score"], x_real + sigma[:, None, None, None] * n, sigma,
                          labels, features=True)
  np.testing.assert_allclose(np.asarray(uni.encoder_logits(feats)),
                             ref["fake/logits_real"].reshape(4, -1), rtol=1e-5, atol=1e-6)


def test_the_code_cannot_backpropagate_these_branches(setup):
  _, meta, _, _, _ = setup
  assert meta["uni_instruct_commit"] == _driver().UNI_COMMIT
  assert sorted(meta["errors"]) == sorted(
      f"gen/{d}/vr{v}" for d, v in CASES if d not in ("Forward-KL", "Forward-Clean",
                                                      "Jeffrey-KL"))


def test_augmented_critic_runs_and_differs(setup):
  """method.augment_p > 0 (the CIFAR-10 recipe's 0.12): both branches get EDM-augmented inputs
  with their own labels; p = 0 and no key give the unaugmented loss above."""
  ref, _, _, params, nets = setup
  cfg = _cfg("Forward-KL", 0)
  args = (params, _nhwc(ref["fake/x_g"]), _nhwc(ref["inputs/x_real"]),
          jnp.asarray(ref["inputs/labels"]), jnp.asarray(ref["inputs/fake_sigma"]),
          _nhwc(ref["inputs/fake_n"]), nets)
  plain = float(uni.critic_loss_at(*args, cfg)[0])
  cfg.method.augment_p = 1.0
  aug = float(uni.critic_loss_at(*args, cfg, augment_key=jax.random.PRNGKey(0))[0])
  assert np.isfinite(aug) and abs(aug - plain) > 1e-3 * abs(plain)
  np.testing.assert_allclose(float(uni.critic_loss_at(*args, cfg)[0]), plain, rtol=1e-6)


def test_adm_encoder_logits_match_official(setup):
  """The ImageNet-64 recipe's discriminator: DhariwalUNet_EncoderDecoder's encoder logits equal
  the channel mean of our DhariwalUNet's lowest-resolution encoder map (edm/dhariwalunet_tiny)."""
  ref = setup[0]
  d = testing.DATA_DIR / "edm" / "dhariwalunet_tiny"
  kw = json.loads((d / "config.json").read_text())["precond_kwargs"]
  module = build_edm_precond(kw)
  v = esd.state_dict_to_variables({k: np.asarray(a, np.float32) for k, a in
                                   sdio.read_state_dict(d / "state_dict.safetensors").items()},
                                  module)
  d_x, feats = jax.jit(lambda v, x, s, c: module.apply(v, x, s, c, None, return_features=True))(
      v, _nhwc(ref["adm/x"]), jnp.asarray(ref["adm/sigma"]), jnp.asarray(ref["adm/labels"]))
  np.testing.assert_allclose(_nchw(d_x), ref["adm/D_x"], rtol=1e-5, atol=1e-5)
  want = ref["adm/logits"].reshape(2, -1)
  np.testing.assert_allclose(np.asarray(uni.encoder_logits(feats)), want, rtol=1e-5,
                             atol=1e-5 * float(np.max(np.abs(want))))
