"""Numerical parity of the Flax EDM port with NVIDIA's PyTorch networks.

Reference data: tests/data/edm (4 small networks run by the official code; see
tests/data/README.md), and the larger ../shared/fixtures/edm as extra [shared] cases where present.
Tolerances come from the measured float32-vs-float64 spread (about 20x headroom).
Every network is compiled twice only (float32 forward, also reused by the Heun sampler, and
float64 forward), inside one `jax.enable_x64(True)` block so that the sampler can keep EDM's
float64 state around a float32 network; x64 never leaks out of the fixture. XLA's backend
optimisation is turned off for these compiles: on CPU it halves compile time and does not change
the tolerances reached.
"""
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fdistill_jax.convert import edm_state_dict as esd
from fdistill_jax.convert import state_dict_io as sdio
from fdistill_jax.diffusion.samplers import edm_sampler
from fdistill_jax.models.edm import DhariwalUNet, SongUNet, build_edm_precond

NETS = ("songunet_tiny", "songunet_ncsnpp_tiny", "dhariwalunet_tiny", "dhariwalunet_multihead")
_FAST_COMPILE = {"xla_backend_optimization_level": 0}


def _compile(fn, *args):
  return jax.jit(fn).lower(*args).compile(compiler_options=_FAST_COMPILE)


def _nhwc(a):
  return np.asarray(a).transpose(0, 2, 3, 1)


def _nchw(a):
  return np.asarray(a).transpose(0, 3, 1, 2)


def _is_unet(mdl, _):
  return isinstance(mdl, (SongUNet, DhariwalUNet))


def _forward(module):
  """(variables, x, sigma, labels, aug) -> (D_x, F_x), F_x captured at the inner UNet."""
  def fn(v, x, sigma, labels, aug):
    d, state = module.apply(v, x, sigma, labels, aug, capture_intermediates=_is_unet)
    return d, state["intermediates"]["model"]["__call__"][0]
  return fn


def _run_network(root, name):
  """Everything the tests compare, for one fixture network (numpy, NCHW like the fixtures)."""
  d = root / "edm" / name
  kw = json.loads((d / "config.json").read_text())["precond_kwargs"]
  io, sp = np.load(d / "io.npz"), np.load(d / "sampler.npz")
  sd = sdio.read_state_dict(d / "state_dict.safetensors")
  labels = io["class_labels"] if "class_labels" in io else None
  aug = io["augment_labels"] if "augment_labels" in io else None
  out = {"io": dict(io), "sp": dict(sp)}
  with jax.enable_x64(True):
    # Official behaviour: float32 network (also inside the float64-state sampler).
    m32 = build_edm_precond(kw)
    v32 = esd.state_dict_to_variables(sd, m32)
    args = (v32, _nhwc(io["x"]), io["sigma"], labels, aug)
    lowered = jax.jit(_forward(m32)).lower(*args)
    out["f32_hlo_has_f64"] = "f64" in lowered.as_text()
    fwd32 = lowered.compile(compiler_options=_FAST_COMPILE)
    out["D_x"], out["F_x"] = map(_nchw, fwd32(*args))
    if aug is not None:
      out["D_x_aug"], out["F_x_aug"] = map(
          _nchw, fwd32(v32, _nhwc(io["x"]), io["sigma"], labels, io["augment_labels_nonzero"]))

    # Heun sampler: EDM keeps a float64 state around the float32 network. The sampler's own
    # ops run eagerly (disable_jit) and each network call re-enters the float32 executable
    # compiled above, so the network is not compiled twice more inside the sampler loop. The
    # sampler's 0-d σ is broadcast to the batch here (the 0-d path itself is tested through
    # teachers.edm.denoiser in test_edm_loaders.py).
    s_labels = sp["class_labels"] if "class_labels" in sp else None
    s_aug = None if aug is None else np.zeros_like(aug)

    def den(x, s):
      with jax.disable_jit(False):
        sig = jnp.full((x.shape[0],), s, jnp.float32)
        return fwd32(v32, x.astype(jnp.float32), sig, s_labels, s_aug)[0].astype(jnp.float64)

    with jax.disable_jit():
      x_sampled = edm_sampler(den, jnp.asarray(_nhwc(sp["latents"])), num_steps=6,
                              sigma_min=0.002, sigma_max=80.0, rho=7.0,
                              state_dtype=jnp.float64)
    out["x_sampled"] = _nchw(x_sampled)

    # Float64 network: the README's float64 reference (f64 frequency table and softmax).
    m64 = build_edm_precond(kw, dtype=jnp.float64)
    v64 = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), v32)
    f64 = lambda a: None if a is None else np.asarray(a, np.float64)
    args = (v64, _nhwc(io["x"]).astype(np.float64), f64(io["sigma"]), f64(labels), f64(aug))
    fwd64 = _compile(_forward(m64), *args)
    out["D_x_f64"], out["F_x_f64"] = map(_nchw, fwd64(*args))
    if aug is not None:
      out["D_x_aug_f64"], out["F_x_aug_f64"] = map(
          _nchw, fwd64(*args[:4], f64(io["augment_labels_nonzero"])))
  return out


@pytest.fixture(scope="module", params=NETS)
def net(request, fixtures_path):
  return request.param, _run_network(fixtures_path, request.param)


def test_float32_outputs(net):
  name, r = net
  io = r["io"]
  np.testing.assert_allclose(r["D_x"], io["D_x"], atol=5e-6, rtol=1e-5, err_msg=name)
  np.testing.assert_allclose(r["F_x"], io["F_x"], atol=3e-5, rtol=0, err_msg=name)
  if "D_x_aug" in r:
    np.testing.assert_allclose(r["D_x_aug"], io["D_x_aug"], atol=5e-6, rtol=1e-5, err_msg=name)
    np.testing.assert_allclose(r["F_x_aug"], io["F_x_aug"], atol=3e-5, rtol=0, err_msg=name)
    # The augmentation path really changes the output (else the test above proves nothing).
    assert np.abs(io["D_x_aug"] - io["D_x"]).max() > 1e-2


def test_float32_network_has_no_float64_ops_under_x64(net):
  name, r = net
  assert not r["f32_hlo_has_f64"], f"{name}: a float64 op leaked into the float32 network"


def test_precond_inputs_match(net):
  """c_in·x and c_noise as in EDMPrecond (what F_x above was computed from)."""
  from fdistill_jax.diffusion.edm import edm_precond_coeffs
  _, r = net
  io = r["io"]
  _, _, c_in, c_noise = edm_precond_coeffs(jnp.asarray(io["sigma"]).reshape(-1, 1, 1, 1))
  np.testing.assert_allclose(np.asarray(c_in * io["x"]), io["model_x_in"], rtol=1e-6, atol=0)
  np.testing.assert_allclose(np.asarray(c_noise).reshape(-1), io["model_noise_labels"],
                             rtol=1e-6, atol=1e-7)


def test_heun_sampler_matches_official(net):
  name, r = net
  sp = r["sp"]
  np.testing.assert_allclose(r["x_sampled"], sp["x_sampled"], atol=2e-4, rtol=0, err_msg=name)
  # The sampler's noise levels are EDM's.
  from fdistill_jax.diffusion.edm import karras_sigmas
  np.testing.assert_allclose(karras_sigmas(6), sp["t_steps"], rtol=1e-12)


def test_float64_reference(net):
  """x64 port (f64 frequency table and softmax, as in the README's definition) vs *_f64."""
  name, r = net
  io = r["io"]
  np.testing.assert_allclose(r["D_x_f64"], io["D_x_f64"], atol=1e-10, rtol=0, err_msg=name)
  np.testing.assert_allclose(r["F_x_f64"], io["F_x_f64"], atol=1e-10, rtol=0, err_msg=name)
  if "D_x_aug_f64" in r:
    np.testing.assert_allclose(r["D_x_aug_f64"], io["D_x_aug_f64"], atol=1e-10, rtol=0)
    np.testing.assert_allclose(r["F_x_aug_f64"], io["F_x_aug_f64"], atol=1e-10, rtol=0)


def test_x64_does_not_leak():
  assert jnp.asarray(1.0).dtype == jnp.float32


CIFAR10_VP = dict(img_resolution=32, img_channels=3, label_dim=10, use_fp16=False,
                  model_type="SongUNet", augment_dim=9, model_channels=128,
                  channel_mult=[2, 2, 2], num_blocks=4, attn_resolutions=[16], dropout=0.13,
                  embedding_type="positional", encoder_type="standard",
                  decoder_type="standard", channel_mult_noise=1, resample_filter=[1, 1])
IMAGENET_ADM = dict(img_resolution=64, img_channels=3, label_dim=1000, use_fp16=True,
                    model_type="DhariwalUNet", augment_dim=0, model_channels=192,
                    channel_mult=[1, 2, 3, 4], num_blocks=3, attn_resolutions=[32, 16, 8],
                    dropout=0.1)


@pytest.mark.parametrize("kwargs,expected", [(CIFAR10_VP, 55_735_299),
                                             (IMAGENET_ADM, 295_899_267)])
def test_released_config_param_counts(kwargs, expected):
  assert esd.count_params(build_edm_precond(kwargs)) == expected

