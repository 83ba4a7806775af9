"""The PyTorch reference of the benchmark is the same network and the same f-distill maths.

* Networks: the torch SongUNet/DhariwalUNet + EDMPrecond reproduce the EDM fixtures
  (tests/data/edm; also ../shared/fixtures/edm where present) at the tolerances
  tests/test_edm_parity.py holds the Flax port to, and EDM's Heun sampler (sampler.npz) at the
  same 2e-4.
* Losses: on a tiny cifar10_kl architecture with distinct random weights for the generator, fake
  score, teacher and head (shared through the state-dict converter), float32, the torch generator
  and critic losses, their parts, the ratio bins and the gradient norms of every trained net equal
  fdistill_jax.methods.fdistill's on the same random draws.
"""
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
# One intra-op thread: these are tiny tensors, and under two busy xdist workers torch's default
# thread pool made each case take 1-26 s at random instead of 0.2 s. Numerics are unaffected.
torch.set_num_threads(1)

from fdistill_jax.benchmarks import versus_torch  # noqa: E402
from fdistill_jax.benchmarks.common import load_config  # noqa: E402
from fdistill_jax.benchmarks.torch_reference import fdistill as tfd  # noqa: E402
from fdistill_jax.benchmarks.torch_reference import networks as tnet  # noqa: E402
from fdistill_jax.convert import edm_state_dict as esd  # noqa: E402
from fdistill_jax.convert import state_dict_io as sdio  # noqa: E402
from fdistill_jax import conditioning, testing  # noqa: E402
from fdistill_jax.nets import Nets  # noqa: E402
from fdistill_jax.experiments.image import flat_features  # noqa: E402
from fdistill_jax.methods import fdistill  # noqa: E402
from fdistill_jax.models.edm import build_edm_precond  # noqa: E402
from fdistill_jax.models.heads import MultiConvHead  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NETS = ("songunet_tiny", "dhariwalunet_tiny", "dhariwalunet_multihead")


def _t(a):
  return None if a is None else torch.from_numpy(np.ascontiguousarray(a))


@pytest.mark.parametrize("name", NETS)
def test_torch_networks_reproduce_edm_fixtures(fixtures_path, name):
  d = fixtures_path / "edm" / name
  kw = json.loads((d / "config.json").read_text())["precond_kwargs"]
  io, sp = dict(np.load(d / "io.npz")), dict(np.load(d / "sampler.npz"))
  net = tnet.build_edm_precond(kw).eval()
  sd = sdio.read_state_dict(d / "state_dict.safetensors")
  net.load_state_dict({k: _t(v.astype(np.float32)) for k, v in sd.items()}, strict=True)
  labels, aug = _t(io.get("class_labels")), _t(io.get("augment_labels"))
  with torch.no_grad():
    d_x = net(_t(io["x"]), _t(io["sigma"]), labels, aug).numpy()
    f_x = net.model(_t(io["model_x_in"]), _t(io["model_noise_labels"]), labels, aug).numpy()
    np.testing.assert_allclose(d_x, io["D_x"], atol=5e-6, rtol=1e-5, err_msg=name)
    np.testing.assert_allclose(f_x, io["F_x"], atol=3e-5, rtol=0, err_msg=name)
    if "augment_labels_nonzero" in io:
      d_aug = net(_t(io["x"]), _t(io["sigma"]), labels, _t(io["augment_labels_nonzero"])).numpy()
      np.testing.assert_allclose(d_aug, io["D_x_aug"], atol=5e-6, rtol=1e-5, err_msg=name)
    s_labels = _t(sp.get("class_labels"))
    x = tfd.heun_sampler(lambda x, s: net(x, s.expand(x.shape[0]), s_labels), _t(sp["latents"]),
                         num_steps=6)
  np.testing.assert_allclose(x.numpy(), sp["x_sampled"], atol=2e-4, rtol=0, err_msg=name)


def test_unsupported_songunet_variant_is_refused():
  with pytest.raises(ValueError, match="encoder_type"):
    tnet.build_edm_precond(dict(model_type="SongUNet", img_resolution=16, img_channels=3,
                                encoder_type="residual"))


# ------------------------------------------------------------------------------------ losses
def _random(abstract, seed):
  """Random float32 leaves for a ShapeDtypeStruct tree (no init compile): GroupNorm scales near
  1, everything else ~ N(0, 0.3²/fan_in) (EDM zero-inits output layers, so its init won't do)."""
  rng = np.random.default_rng(seed)

  def one(path, a):
    if a.ndim < 2:
      base = 1.0 if path[-1].key == "scale" else 0.0
      return (base + 0.1 * rng.standard_normal(a.shape)).astype(np.float32)
    return (0.3 / np.sqrt(np.prod(a.shape[:-1])) * rng.standard_normal(a.shape)).astype(np.float32)
  return jax.tree_util.tree_map_with_path(one, abstract)


@pytest.fixture(scope="module")
def setup():
  cfg = load_config(os.path.join(REPO, "configs", "cifar10_kl.py"))
  versus_torch.shrink(cfg)
  # Smaller still (an 8x8 two-level DDPM++; compile time is what this test costs), no dropout
  # (dropout draws cannot be shared across frameworks), running bins (ratio_ema > 0).
  cfg.teacher.precond_kwargs.update(dict(img_resolution=8, model_channels=8, channel_mult=(1, 2),
                                         attn_resolutions=(4,), dropout=0.0))
  cfg.disc.feature_keys = ("enc8", "enc4")
  cfg.method.ratio_ema = 0.5
  kw = cfg.teacher.precond_kwargs.to_dict()
  module = build_edm_precond(kw)
  res, ch, ld = module.img_resolution, module.img_channels, module.label_dim
  abstract = esd.abstract_variables(module)["params"]
  weights = {n: _random(abstract, i) for i, n in enumerate(("generator", "fake_score", "teacher"))}

  def apply(p, x, sigma, labels, key=None, features=False):
    out = module.apply({"params": p}, x, sigma, labels, return_features=features)
    return (out[0], flat_features(out[1])) if features else out

  head = MultiConvHead(tuple(cfg.disc.feature_keys), cfg.disc.channels)
  feats = jax.eval_shape(lambda: apply(weights["teacher"], jnp.zeros((1, res, res, ch)),
                                        jnp.ones((1,)), jnp.zeros((1, ld)), None, True)[1])
  disc = _random(jax.eval_shape(head.init, jax.random.PRNGKey(1), feats)["params"], 3)
  nets = Nets(student=apply, teacher=lambda fr, x, s, l, features=False: apply(
      fr["teacher"], x, s, l, None, features), disc=lambda p, f, s: head.apply({"params": p}, f),
              sigma_init=cfg.diffusion.sigma_init, data_shape=(res, res, ch),
              cond=conditioning.ClassLabels(ld))
  rng = np.random.default_rng(7)
  b = 4
  batch = {"x": rng.uniform(-1, 1, (b, res, res, ch)).astype(np.float32),
           "cond": np.eye(ld, dtype=np.float32)[rng.integers(0, ld, b)]}
  extras = {"bins": jnp.asarray(rng.uniform(0.5, 2.0, cfg.method.ratio_bins), jnp.float32)}
  params = {"generator": weights["generator"], "fake_score": weights["fake_score"],
            "discriminator": disc}
  frozen = {"teacher": weights["teacher"]}

  shapes = {k: (v.shape[-1], v.shape[1]) for k, v in feats.items() if k in cfg.disc.feature_keys}
  sd = lambda p: esd.variables_to_state_dict({"params": p}, module)
  ref = tfd.TorchFDistill(cfg, kw, sd(weights["teacher"]), tfd.head_state_dict(disc), shapes)
  ref.gen.load_state_dict({k: _t(v) for k, v in sd(weights["generator"]).items()})
  ref.fake.load_state_dict({k: _t(v) for k, v in sd(weights["fake_score"]).items()})
  return cfg, nets, params, frozen, batch, extras, ref


def _jax_loss(fn, names, params, frozen, batch, key, extras, nets, cfg, draws):
  """(loss, metrics, new extras, grad norms of `names`, draws(key)): draws, the loss's own random
  draws that the torch side is handed, come out of the same compiled program (one compile)."""
  def f(train):
    return fn({**params, **train}, frozen, batch, key, extras, nets, cfg)
  def loss_and_norms(train):  # Norms inside the jit: eagerly every leaf shape compiles apart.
    (loss, aux), grads = jax.value_and_grad(f, has_aux=True)(train)
    return loss, aux, {n: _norm(grads[n]) for n in names}, draws(key)

  train = {n: params[n] for n in names}
  # Compiled for speed of compiling (testing.FAST_COMPILE): each loss runs once.
  loss, (metrics, new_extras), norms, drawn = testing.compile_fast(
      jax.jit(loss_and_norms).lower(train))(train)
  return loss, metrics, new_extras, {n: float(v) for n, v in norms.items()}, drawn


def _norm(tree):
  return jnp.sqrt(sum(jnp.sum(jnp.square(x)) for x in jax.tree.leaves(tree)))


def _torch_norm(net):
  return float(torch.sqrt(sum((p.grad.double() ** 2).sum() for p in net.parameters())))


def _nchw(a):
  return _t(np.asarray(a).transpose(0, 3, 1, 2))


def test_generator_loss_equals_ours(setup):
  cfg, nets, params, frozen, batch, extras, ref = setup
  key = jax.random.PRNGKey(11)

  def draws(key):  # The loss's draws.
    kz, kt, _ = jax.random.split(key, 3)
    z = jax.random.normal(kz, batch["x"].shape, jnp.float32)
    ks, kn = jax.random.split(kt)
    sigma = fdistill._sigma(ks, batch["x"].shape[0], cfg, nets)  # pylint: disable=protected-access
    return z, sigma, jax.random.normal(kn, batch["x"].shape)
  loss, metrics, new_extras, gnorm, (z, sigma, eps) = _jax_loss(
      fdistill.generator_loss, ("generator",), params, frozen, batch, key, extras, nets, cfg,
      draws)
  ref.disc.requires_grad_(False)
  ref.gen.zero_grad()
  t_loss, t_m, t_bins = tfd.generator_loss(ref.gen, ref.fake, ref.teacher, ref.disc,
                                           _t(batch["cond"]), _nchw(z), _t(np.asarray(sigma)),
                                           _nchw(eps), _t(np.asarray(extras["bins"])), ref.s)
  t_loss.backward()
  assert float(metrics["dm"]) > 1e-3 and float(metrics["gan_gen"]) > 1e-3  # Not trivial.
  np.testing.assert_allclose(float(t_loss.detach()), float(loss), rtol=2e-5)
  np.testing.assert_allclose(float(t_m["dm"]), float(metrics["dm"]), rtol=2e-5)
  np.testing.assert_allclose(float(t_m["gan_gen"]), float(metrics["gan_gen"]), rtol=2e-5)
  np.testing.assert_allclose(t_bins.numpy(), np.asarray(new_extras["bins"]), rtol=2e-5)
  assert not np.allclose(np.asarray(new_extras["bins"]), np.asarray(extras["bins"]))
  np.testing.assert_allclose(_torch_norm(ref.gen), gnorm["generator"], rtol=1e-4)


def test_critic_loss_equals_ours(setup):
  cfg, nets, params, frozen, batch, extras, ref = setup
  key = jax.random.PRNGKey(12)
  b, shape = batch["x"].shape[0], batch["x"].shape

  def jax_draws(key):  # The loss's draws.
    kz, kt, kr, _, _ = jax.random.split(key, 5)
    out = [jax.random.normal(kz, shape, jnp.float32)]
    for k in (kt, kr):
      ks, kn = jax.random.split(k)
      out += [fdistill._sigma(ks, b, cfg, nets), jax.random.normal(kn, shape)]  # pylint: disable=protected-access
    return out
  loss, metrics, _, gnorm, (z, *d) = _jax_loss(
      fdistill.critic_loss, ("fake_score", "discriminator"), params, frozen, batch, key, extras,
      nets, cfg, jax_draws)
  draws = [_t(np.asarray(d[0])), _nchw(d[1]), _t(np.asarray(d[2])), _nchw(d[3])]
  ref.disc.requires_grad_(True)
  ref.fake.zero_grad(), ref.disc.zero_grad()
  t_loss, t_m = tfd.critic_loss(ref.gen, ref.fake, ref.teacher, ref.disc, _nchw(batch["x"]),
                                _t(batch["cond"]), _nchw(z), *draws, ref.s)
  t_loss.backward()
  assert float(metrics["gan_disc"]) > 0.1
  np.testing.assert_allclose(float(t_loss.detach()), float(loss), rtol=2e-5)
  np.testing.assert_allclose(float(t_m["dsm"]), float(metrics["dsm"]), rtol=2e-5)
  np.testing.assert_allclose(float(t_m["gan_disc"]), float(metrics["gan_disc"]), rtol=2e-5)
  np.testing.assert_allclose(_torch_norm(ref.fake), gnorm["fake_score"], rtol=1e-4)
  np.testing.assert_allclose(_torch_norm(ref.disc), gnorm["discriminator"], rtol=1e-4)
