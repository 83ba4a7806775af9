"""The f-distill gradient estimator is unbiased for ∇_θ D_f(p_σ‖q_σ) on exact Gaussians.

Teacher p_0 = N(μ, s²); generator x_g = m + a·z, θ = (m, a), so q_0 = N(m, a²) and at noise σ both
diffused densities, scores, denoisers and r = p_σ/q_σ are exact. The estimator is our DM loss
(`common.dm_generator_loss`, unnormalised, weighted by h = f''(r)·r²) differentiated w.r.t. θ,
rescaled by d/σ² (d = 1) to undo the per-element mean and the x0 parameterisation. Its Monte-Carlo mean
must match the gradient of the exact divergence (quadrature on a fine grid, autodiff in θ) within
4 standard errors, for several divergences.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fdistill_jax import divergences
from fdistill_jax.methods import common

MU, S = 0.7, 0.8          # teacher N(MU, S²)
THETA = (-0.3, 1.3)       # generator m, a
SIGMA = 0.9
N = 400_000


def _norm_logpdf(x, mean, var):
  return -0.5 * ((x - mean) ** 2 / var + jnp.log(2 * jnp.pi * var))


def exact_divergence(theta, div):
  """D_f(p_σ‖q_σ) = ∫ q f(p/q) by the trapezoid rule on [-14, 14] (float32 suffices here)."""
  m, a = theta
  x = jnp.linspace(-14.0, 14.0, 40001)
  lp = _norm_logpdf(x, MU, S ** 2 + SIGMA ** 2)
  lq = _norm_logpdf(x, m, a ** 2 + SIGMA ** 2)
  integrand = jnp.exp(lq) * div.f(jnp.exp(lp - lq))
  return jnp.trapezoid(integrand, x)


def estimator(theta, key, div):
  """(batch-mean gradient through our loss, per-sample gradient terms [N, 2])."""
  kz, ke = jax.random.split(key)
  z = jax.random.normal(kz, (N, 1))
  eps = jax.random.normal(ke, (N, 1))

  def loss(th):
    m, a = th
    x_g = m + a * z
    x_t = x_g + SIGMA * eps
    xt = common.sg(x_t)
    vp, vq = S ** 2 + SIGMA ** 2, th[1] ** 2 + SIGMA ** 2
    d_teacher = xt + SIGMA ** 2 * (MU - xt) / vp          # exact denoisers (Tweedie)
    d_fake = xt + SIGMA ** 2 * (common.sg(th[0]) - xt) / common.sg(vq)
    r = jnp.exp(_norm_logpdf(xt, MU, vp) - _norm_logpdf(xt, common.sg(th[0]), common.sg(vq)))
    h = div.h_scale * div.h(r[:, 0])                      # exact f''(r) r², no normalisation
    return common.dm_generator_loss(x_g, d_teacher, d_fake, h, normalize=False)

  g = jax.grad(loss)(jnp.asarray(theta, jnp.float32))
  g = g / SIGMA ** 2  # loss is a mean over B·d (d = 1) elements
  # The same quantity per sample: h(r)·(s_q − s_p)·∂x_g/∂θ.
  m, a = theta
  x_t = m + a * z + SIGMA * eps
  sp = (MU - x_t) / (S ** 2 + SIGMA ** 2)
  sq = (m - x_t) / (a ** 2 + SIGMA ** 2)
  r = jnp.exp(_norm_logpdf(x_t, MU, S ** 2 + SIGMA ** 2) - _norm_logpdf(x_t, m, a ** 2 + SIGMA ** 2))
  per = (div.h_scale * div.h(r)) * (sq - sp) * jnp.concatenate([jnp.ones_like(z), z], axis=1)
  return g, per


@pytest.mark.parametrize("name", ["rkl", "kl", "js", "sh", "sf", "jf"])
def test_estimator_matches_exact_gradient(name):
  div = divergences.get(name)
  exact = np.asarray(jax.grad(exact_divergence)(jnp.asarray(THETA, jnp.float32), div))
  g, per = jax.jit(estimator, static_argnums=2)(THETA, jax.random.PRNGKey(0), div)
  g, per = np.asarray(g), np.asarray(per)
  np.testing.assert_allclose(g, per.mean(0), rtol=1e-3, atol=1e-5)  # our loss = the formula
  se = per.std(0) / np.sqrt(N)
  assert np.all(np.abs(g - exact) < 4 * se + 1e-4), (name, g, exact, se)
  assert np.linalg.norm(exact) > 20 * np.linalg.norm(se)  # the check is not vacuous


def test_gradient_vanishes_at_the_teacher():
  div = divergences.get("js")
  g = np.asarray(jax.grad(exact_divergence)(jnp.asarray((MU, S), jnp.float32), div))
  np.testing.assert_allclose(g, 0.0, atol=1e-5)
