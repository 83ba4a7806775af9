"""Parity with NVIDIA FastGen's own f-distill functions (tests/data/fastgen, computed by FastGen;
provenance in tests/data/fastgen/fastgen_fdistill_vectors.md).

Covers h for every divergence × ratio normalisation on/off × bin EMA 0/0.5 over three successive
calls (bins carried), the VSD/DM generator loss and its gradient, and both GAN losses with their
gradients. FastGen's rkl path crashes (0-d h); ours must run and give h ≡ 1 (normalised) with the
same bins.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fdistill_jax import testing
from fdistill_jax.methods import common

DIVS = ["kl", "js", "sf", "neyman", "sh", "jf"]


@pytest.fixture(scope="module")
def ref():
  # The repository's copy only: ../shared/fixtures/fastgen holds the same bytes (5837c3eb…).
  return dict(np.load(testing.DATA_DIR / "fastgen" / "fastgen_fdistill_vectors.npz"))


def _run_calls(ref, div, norm, ema):
  bins = jnp.asarray(ref["inputs/bins_init"])
  fn = jax.jit(lambda lg, t, b: common.fdistill_weight(
      lg, t, b, divergence=div, ratio_normalization=norm, ratio_ema=ema, t_min=0.002,
      t_max=80.0)[:2])
  out = []
  for c in range(3):
    h, bins = fn(jnp.asarray(ref[f"inputs/fake_logits/call{c}"]),
                 jnp.asarray(ref[f"inputs/t/call{c}"]), bins)
    out.append((np.asarray(h), np.asarray(bins)))
  return out


@pytest.mark.parametrize("div", DIVS)
@pytest.mark.parametrize("norm", [0, 1])
@pytest.mark.parametrize("ema", ["0.0", "0.5"])
def test_h_and_bins_match_fastgen(ref, div, norm, ema):
  for c, (h, bins) in enumerate(_run_calls(ref, div, bool(norm), float(ema))):
    tag = f"{div}/norm{norm}_ema{ema}/call{c}"
    np.testing.assert_allclose(h, ref[f"h/{tag}"], rtol=2e-6, atol=1e-7, err_msg=tag)
    np.testing.assert_allclose(bins, ref[f"bins/{tag}"], rtol=2e-6, atol=1e-7, err_msg=tag)


@pytest.mark.parametrize("norm", [0, 1])
@pytest.mark.parametrize("ema", ["0.0", "0.5"])
def test_rkl_runs_where_fastgen_crashes(ref, norm, ema):
  for c, (h, bins) in enumerate(_run_calls(ref, "rkl", bool(norm), float(ema))):
    np.testing.assert_allclose(h, np.full(16, 1 / (1 + 1e-6)), rtol=1e-7)
    np.testing.assert_allclose(bins, ref[f"bins/rkl/norm{norm}_ema{ema}/call{c}"], rtol=2e-6,
                               atol=1e-7)


def _nhwc(x):
  return jnp.asarray(np.transpose(x, (0, 2, 3, 1)))


@pytest.mark.parametrize("case", ["none", "ones"] + DIVS)
def test_dm_loss_and_gradient_match_fastgen(ref, case):
  gen, teacher, fake = (_nhwc(ref[f"vsd/inputs/{k}"]) for k in
                        ("gen_data", "teacher_x0", "fake_score_x0"))
  h = None if case == "none" else (jnp.ones(16) if case == "ones" else jnp.asarray(
      ref[f"vsd/{case}/h"]))
  loss, grad = jax.value_and_grad(lambda x: common.dm_generator_loss(x, teacher, fake, h))(gen)
  np.testing.assert_allclose(float(loss), ref[f"vsd/{case}/loss"], rtol=2e-6)
  want = np.transpose(ref[f"vsd/{case}/grad_gen_data"], (0, 2, 3, 1))
  np.testing.assert_allclose(np.asarray(grad), want, rtol=1e-5, atol=1e-9)


def test_gan_losses_and_gradients_match_fastgen(ref):
  fake = jnp.asarray(ref["gan/inputs/fake_logits"])
  real = jnp.asarray(ref["gan/inputs/real_logits"])
  lg, gg = jax.value_and_grad(common.gan_generator_loss)(fake)
  np.testing.assert_allclose(float(lg), ref["gan/generator/loss"], rtol=1e-6)
  np.testing.assert_allclose(np.asarray(gg), ref["gan/generator/grad_fake_logits"], rtol=1e-6,
                             atol=1e-9)
  ld, (gr, gf) = jax.value_and_grad(common.gan_discriminator_loss, argnums=(0, 1))(real, fake)
  np.testing.assert_allclose(float(ld), ref["gan/discriminator/loss"], rtol=1e-6)
  np.testing.assert_allclose(np.asarray(gr), ref["gan/discriminator/grad_real_logits"],
                             rtol=1e-6, atol=1e-9)
  np.testing.assert_allclose(np.asarray(gf), ref["gan/discriminator/grad_fake_logits"],
                             rtol=1e-6, atol=1e-9)
