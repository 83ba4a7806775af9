"""EDM's geometric augmentation (fdistill_jax/diffusion/augment.py).

Reference data: tests/data/edm_augment_reference.npz holds the outputs and labels of NVlabs/edm
training/augment.py (AugmentPipe(p=1, ...), commit 0a2ff34) on one random 8×8×3 image, with
torch.rand / torch.randn patched to return the constants stored beside them, so the draws are
known: θ = (2·rand − 1)π, r = θ if rand < 0.5 else 0, every N(0, 1) draw = randn.
"""
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fdistill_jax.diffusion import augment as A

REF = pathlib.Path(__file__).parent / "data" / "edm_augment_reference.npz"


@pytest.fixture(scope="module")
def img():
  return jax.random.normal(jax.random.PRNGKey(0), (2, 8, 8, 3))


def forced(batch=2, **kw):
  return A.identity_draws(batch)._replace(
      **{k: jnp.full((batch,), v, jnp.float32) for k, v in kw.items()})


def test_p0_is_bit_exact_identity_with_zero_labels(img):
  out, lab = A.augment(jax.random.PRNGKey(1), img, 0.0)
  assert out is img
  np.testing.assert_array_equal(lab, np.zeros((2, 9), np.float32))


def test_identity_draws_resample_to_the_input(img):
  # sym6 is orthogonal, so up-sample → identity warp → down-sample is the identity.
  out, lab = A.apply(img, A.identity_draws(2))
  np.testing.assert_allclose(out, img, atol=2e-6)
  np.testing.assert_array_equal(lab, 0.0)


@pytest.mark.parametrize("supersample", [False, True])
def test_integer_translation(img, supersample):
  # w = 1 is translate_frac_std·W = 1 pixel at W = 8; content moves right (x) and down (y).
  out, lab = A.apply(img, forced(tx=1.0, ty=2.0), supersample=supersample)
  np.testing.assert_allclose(out[:, 2:, 1:], img[:, :-2, :-1], atol=2e-6)
  # Reflect padding (no edge repeat): output row 0 reads row −2, i.e. row 2.
  np.testing.assert_allclose(out[:, 0, 1:], img[:, 2, :-1], atol=2e-6)
  np.testing.assert_allclose(lab, [[0, 0, 0, 0, 0, 0, 0, 1, 2]] * 2, atol=1e-7)


def test_quarter_turn_is_rot90(img):
  out, lab = A.apply(img, forced(rotate=np.pi / 2), supersample=False)
  np.testing.assert_array_equal(out, jnp.rot90(img, 1, axes=(1, 2)))
  np.testing.assert_allclose(lab, [[0, 0, 0, -1, 1, 0, 0, 0, 0]] * 2, atol=1e-6)


def test_flips(img):
  out, lab = A.apply(img, forced(xflip=1.0))
  np.testing.assert_allclose(out, img[:, :, ::-1], atol=2e-6)
  np.testing.assert_array_equal(lab[:, 0], 1.0)
  out, lab = A.apply(img, forced(yflip=1.0), supersample=False)
  np.testing.assert_array_equal(out, img[:, ::-1])
  np.testing.assert_array_equal(lab, [[0, 1, 0, 0, 0, 0, 0, 0, 0]] * 2)


def test_label_encoding():
  d = forced(batch=1, xflip=1, yflip=0, scale=0.5, rotate=0.3, aniso=-1.2, aniso_angle=0.7,
             tx=0.25, ty=-2.0)
  want = [1, 0, 0.5, np.cos(0.3) - 1, np.sin(0.3), -1.2 * np.cos(0.7), -1.2 * np.sin(0.7),
          0.25, -2.0]
  np.testing.assert_allclose(A.labels(d)[0], want, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("case", ["rot90", "combined", "combined2", "zoomout"])
def test_matches_edm_reference(case):
  ref = np.load(REF)
  rv, w = float(ref[f"{case}_rand"]), float(ref[f"{case}_randn"])
  theta = (2 * rv - 1) * np.pi
  kw = dict(rotate=theta)
  if case != "rot90":
    kw = dict(scale=w) if case == "zoomout" else dict(
        scale=w, rotate=theta, aniso=w, aniso_angle=theta if rv < 0.5 else 0.0, tx=w, ty=w)
  out, lab = A.apply(jnp.asarray(ref["images"])[None], forced(batch=1, **kw))
  np.testing.assert_allclose(out[0], ref[f"{case}_out"], atol=3e-5)
  # EDM writes only the enabled transforms' labels; ours is always the full 9-d layout.
  cols = {"rot90": [3, 4], "zoomout": [2]}.get(case, list(range(2, 9)))
  np.testing.assert_allclose(lab[0, cols], ref[f"{case}_labels"], atol=1e-6)


def test_jit_shapes_and_bad_input(img):
  out, lab = jax.jit(A.augment, static_argnums=2)(jax.random.PRNGKey(3), img, 0.12)
  assert out.shape == img.shape and lab.shape == (2, 9) and lab.dtype == jnp.float32
  with pytest.raises(ValueError, match="NHWC"):
    A.augment(jax.random.PRNGKey(0), img[0], 0.1)
  with pytest.raises(ValueError, match="unknown augmentation"):
    A.sample_draws(jax.random.PRNGKey(0), 2, 0.1, hue=1.0)


def test_draw_statistics():
  lab = np.asarray(A.labels(A.sample_draws(jax.random.PRNGKey(3), 8192, 0.12)))
  on = lab != 0
  # xflip: always eligible (1e8·p ≥ 1) then a fair coin; yflip: p then a coin; others: p.
  want = {0: 0.5, 1: 0.06, 2: 0.12, 4: 0.12, 5: 0.12, 7: 0.12}
  for col, frac in want.items():
    assert abs(on[:, col].mean() - frac) < 0.015, (col, on[:, col].mean())
  np.testing.assert_array_equal(on[:, 7], on[:, 8])          # one decision for both axes
  np.testing.assert_array_equal(on[:, 3], on[:, 4])
  theta = np.arctan2(lab[on[:, 4], 4], lab[on[:, 4], 3] + 1)   # θ ~ U(−π, π) when applied
  assert abs(theta.mean()) < 0.2 and abs(theta.std() - np.pi / np.sqrt(3)) < 0.1
  assert abs(lab[on[:, 2], 2].std() - 1) < 0.1                 # scale w ~ N(0, 1)


# ----------------------------------------------------------------------------- wiring
def _toy_nets():
  """A denoiser that uses its augment labels: D(x) = w·x + Σ labels (labels absent → + 0)."""
  from fdistill_jax.nets import Nets

  def student(params, x, sigma, cond, *, key=None, features=False, augment_labels=None):
    extra = 0.0 if augment_labels is None else augment_labels.sum(1)[:, None, None, None]
    return params["w"] * x + extra
  return Nets(student=student, teacher=None, disc=None, sigma_init=2.5, data_shape=(8, 8, 1))


def _edm_loss(d, y, sigma, sigma_data=0.5):
  lam = (sigma ** 2 + sigma_data ** 2) / (sigma * sigma_data) ** 2
  return jnp.mean(lam * jnp.mean(jnp.square(d - y), axis=(1, 2, 3)))


def test_sid_fake_score_loss_trains_on_augmented_samples():
  from fdistill_jax import defaults
  from fdistill_jax.methods import sid
  nets, params = _toy_nets(), {"generator": {"w": 0.7}, "fake_score": {"w": 0.9}}
  cfg = defaults.image()
  cfg.method = sid.method_config(augment_p=0.5)
  z, n = jax.random.normal(jax.random.PRNGKey(1), (2, 4, 8, 8, 1))
  sigma, ka = jnp.array([0.3, 2.0, 0.8, 5.0]), jax.random.PRNGKey(2)
  loss = lambda: sid.fake_score_loss_at(params, jnp.zeros((4, 0)), z, sigma, n,
                                        jnp.zeros(4, bool), nets, cfg, augment_key=ka)[0]
  got = loss()
  y, lab = A.augment(ka, 0.7 * 2.5 * z, 0.5)
  assert np.abs(lab).sum() > 0
  want = _edm_loss(0.9 * (y + sigma[:, None, None, None] * n) + lab.sum(1)[:, None, None, None],
                   y, sigma)
  np.testing.assert_allclose(got, want, rtol=1e-6)
  # augment_p = 0 (every existing config): no labels reach the student, the loss is the old one.
  cfg.method.augment_p = 0.0
  got0 = loss()
  x_g = 0.7 * 2.5 * z
  np.testing.assert_allclose(got0, _edm_loss(0.9 * (x_g + sigma[:, None, None, None] * n), x_g,
                                             sigma), rtol=1e-6)


def test_edm_training_loss_uses_augmentation():
  from fdistill_jax import defaults
  from fdistill_jax.diffusion import edm
  from fdistill_jax.methods import edm_training
  cfg = defaults.digits_teacher()
  cfg.method.augment_p = 1.0
  x = jax.random.normal(jax.random.PRNGKey(4), (4, 8, 8, 1))
  key = jax.random.PRNGKey(5)
  batch = {"x": x, "cond": jnp.zeros((4, 0))}
  got = edm_training.generator_loss({"generator": {"w": 0.9}}, {}, batch, key, {}, _toy_nets(),
                                    cfg)[0]
  ks, kn, _ = jax.random.split(key, 3)
  y, lab = A.augment(jax.random.fold_in(key, 1), x, 1.0)
  sigma = edm.sample_lognormal_sigma(ks, (4,), cfg.method.p_mean, cfg.method.p_std)
  noisy = y + sigma[:, None, None, None] * jax.random.normal(kn, x.shape)
  want = _edm_loss(0.9 * noisy + lab.sum(1)[:, None, None, None], y, sigma)
  np.testing.assert_allclose(got, want, rtol=1e-6)


def test_config_checks_and_edm_student_takes_labels():
  from fdistill_jax import defaults
  from fdistill_jax.experiments import image
  from fdistill_jax.validation import ConfigError
  cfg = defaults.digits_teacher()   # augment_dim 0
  cfg.method.augment_p = 0.12
  with pytest.raises(ConfigError, match="augment_dim"):
    A.check_p(cfg)
  cfg.method.augment_p = 1.5
  with pytest.raises(ConfigError, match="augment_p"):
    A.check_p(cfg)
  assert defaults.sid_edm("cifar10").method.augment_p == 0.12
  assert defaults.sid_edm("imagenet64").method.augment_p == 0.0
  cfg.method.augment_p = 0.12
  cfg.teacher.precond_kwargs.augment_dim = 9
  A.check_p(cfg)
  # networks() hands augment_labels to the EDM module (a stand-in with EDMPrecond's signature;
  # the SongUNet/Dhariwal map_augment itself is covered by the EDM parity tests).
  import flax.linen as nn

  class Stub(nn.Module):
    img_resolution: int = 8
    img_channels: int = 1
    label_dim: int = 0

    @nn.compact
    def __call__(self, x, sigma, class_labels=None, augment_labels=None, *, deterministic=True,
                 return_features=False):
      emb = 0.0 if augment_labels is None else nn.Dense(1, use_bias=False)(augment_labels)
      return x + jnp.reshape(emb, (-1, 1, 1, 1))

  stub, x = Stub(), jnp.ones((2, 8, 8, 1))
  variables = stub.init(jax.random.PRNGKey(0), x, jnp.ones(2), None, jnp.ones((2, 9)))
  nets, init = image.networks(cfg, stub, variables, image.condition_spec(0))
  p, lab = init(jax.random.PRNGKey(0))["generator"], jnp.arange(18.0).reshape(2, 9)
  np.testing.assert_array_equal(nets.student(p, x, jnp.ones(2), None), x)
  want = x + (lab @ p["Dense_0"]["kernel"])[:, :, None, None]
  np.testing.assert_allclose(nets.student(p, x, jnp.ones(2), None, augment_labels=lab), want,
                             rtol=1e-6)
