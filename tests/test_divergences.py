"""The divergence registry: h(r) is f''(r)·r² (up to the documented constant) for every entry."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fdistill_jax import divergences


@pytest.mark.parametrize("name", divergences.NAMES)
def test_h_is_second_derivative_times_r_squared(name):
  div = divergences.get(name)
  r = jnp.asarray(np.geomspace(0.05, 30.0, 41), jnp.float32)
  f2 = jax.vmap(jax.grad(jax.grad(lambda x: div.f(x))))(r)
  np.testing.assert_allclose(f2 * r ** 2, div.h_scale * div.h(r), rtol=2e-4, atol=1e-6)


@pytest.mark.parametrize("name", divergences.NAMES)
def test_f_is_convex_with_f_of_one_zero(name):
  div = divergences.get(name)
  assert abs(float(div.f(np.float64(1.0)))) < 1e-12
  r = np.geomspace(0.05, 30.0, 41)
  assert np.all(div.h(r) > 0)  # f'' > 0 ⇔ h > 0


def test_numpy_in_numpy_out_and_shapes():
  r = np.array([0.5, 1.0, 2.0])
  for name in divergences.NAMES:
    h = divergences.get(name).h(r)
    assert isinstance(h, np.ndarray) and h.shape == r.shape, name
  # rkl returns an array of r's shape (FastGen's 0-d tensor crashes its normalisation).
  assert divergences.get("rkl").h(jnp.ones((4,))).shape == (4,)


def test_table_values():
  r = np.array([0.5, 2.0])
  np.testing.assert_allclose(divergences.get("kl").h(r), r)
  np.testing.assert_allclose(divergences.get("js").h(r), r / (r + 1))
  np.testing.assert_allclose(divergences.get("sf").h(r), 1 / (r + 1))
  np.testing.assert_allclose(divergences.get("jf").h(r), r + 1)
  np.testing.assert_allclose(divergences.get("sh").h(r) * 0.25, 0.25 * np.sqrt(r))
  np.testing.assert_allclose(divergences.get("neyman").h(r), 1 / r)


def test_unknown_name_lists_allowed():
  with pytest.raises(ValueError, match="allowed: rkl, kl, js"):
    divergences.get("hellinger")
