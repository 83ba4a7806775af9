"""Exact teachers: denoisers satisfy Tweedie's formula; the Heun sampler reproduces the mixture."""
import functools

import jax
import jax.numpy as jnp
import numpy as np

from fdistill_jax.diffusion import edm, samplers
from fdistill_jax.evaluation import toy_metrics
from fdistill_jax.teachers import analytic


def test_gmm_denoiser_is_tweedie():
  gmm = analytic.GaussianMixture.create(
      means=[[0.0, 1.0, -1.0], [2.0, -1.0, 0.5]], scales=[[0.3, 0.5, 0.2], [0.7, 0.4, 0.6]],
      weights=[0.3, 0.7])
  x = jax.random.normal(jax.random.PRNGKey(0), (16, 3)) * 2
  for sigma in [0.05, 0.7, 5.0]:
    score = jax.vmap(jax.grad(lambda v: gmm.log_prob(v[None], sigma)[0]))(x)
    np.testing.assert_allclose(gmm.denoise(x, sigma), x + sigma ** 2 * score, rtol=1e-4,
                               atol=1e-5)


def test_gmm_density_normalised_and_samples_match():
  gmm = analytic.ring_mixture(4, 1.0, 0.3, [0.1, 0.2, 0.3, 0.4])
  g = np.linspace(-4, 4, 201)
  xx, yy = np.meshgrid(g, g)
  pts = jnp.asarray(np.stack([xx.ravel(), yy.ravel()], 1), jnp.float32)
  mass = float(jnp.sum(jnp.exp(gmm.log_prob(pts, 0.2)))) * (g[1] - g[0]) ** 2
  assert abs(mass - 1.0) < 2e-3
  x, comp = gmm.sample(jax.random.PRNGKey(1), 40000)
  np.testing.assert_allclose(np.bincount(np.asarray(comp)) / 40000, gmm.weights, atol=0.01)


def test_empirical_teacher_limits():
  pts = np.array([[0.0, 0.0], [3.0, 0.0]], np.float32)
  t = analytic.EmpiricalTeacher(pts)
  x = jnp.array([[0.4, 0.1], [2.9, -0.2]])
  np.testing.assert_allclose(t.denoise(x, 0.05), pts, atol=1e-5)  # small σ: nearest point
  np.testing.assert_allclose(t.denoise(x, 1e4), np.tile(pts.mean(0), (2, 1)), atol=1e-3)


def test_heun_35_nfe_samples_the_exact_mixture():
  gmm = analytic.ring_mixture(8, 2.0, 0.1, np.arange(1, 9) / 36.0)
  fn = jax.jit(functools.partial(samplers.edm_sampler, gmm.denoise, num_steps=18))
  x = fn(jax.random.normal(jax.random.PRNGKey(0), (8000, 2)))
  m = toy_metrics.mode_stats(gmm, x)
  assert m["mode_tv"] < 0.03 and m["modes_covered"] == 8
  ref, _ = gmm.sample(jax.random.PRNGKey(1), 8000)
  sw_teacher = toy_metrics.sliced_wasserstein(x, ref, jax.random.PRNGKey(2))
  ref2, _ = gmm.sample(jax.random.PRNGKey(3), 8000)
  sw_noise = toy_metrics.sliced_wasserstein(ref2, ref, jax.random.PRNGKey(2))
  assert sw_teacher < 3 * sw_noise + 0.02


def test_heun_converges_on_a_gaussian_with_exact_flow():
  # For p_0 = N(μ, s²) the probability-flow ODE is solved exactly by
  # x(σ) = μ + (x(σ_max) − μ)·sqrt(s² + σ²)/sqrt(s² + σ_max²).
  mu, s = 0.5, 0.3
  g = analytic.GaussianMixture.create([[mu]], s)
  z = jnp.linspace(-3, 3, 64)[:, None]
  exact = mu + (80.0 * z - mu) * s / np.sqrt(s ** 2 + 80.0 ** 2)
  err = lambda n, order2: float(jnp.max(jnp.abs(
      samplers.edm_sampler(g.denoise, z, num_steps=n, second_order=order2) - exact)))
  heun = [err(n, True) for n in (12, 24, 48)]
  euler = [err(n, False) for n in (12, 24, 48)]
  # Halving the step divides the error by ~4 for Heun (2nd order), by ~2 for Euler (1st order).
  assert heun[0] / heun[1] > 3.5 and heun[1] / heun[2] > 3.5, heun
  assert 1.7 < euler[0] / euler[1] < 2.5 and 1.7 < euler[1] / euler[2] < 2.5, euler
  assert heun[2] < 0.01 and euler[2] > 5 * heun[2]


def test_stochastic_sampler_runs_and_samples_the_mixture():
  gmm = analytic.ring_mixture(8, 2.0, 0.1)
  z = jax.random.normal(jax.random.PRNGKey(0), (4000, 2))
  sto = samplers.edm_sampler(gmm.denoise, z, num_steps=18, s_churn=10.0, s_min=0.05, s_max=50.0,
                             s_noise=1.003, key=jax.random.PRNGKey(3))
  assert toy_metrics.mode_stats(gmm, sto)["mode_tv"] < 0.05


def test_karras_grid_matches_edm():
  # EDM's 6-step grid as stored in the EDM sampler fixture README.
  np.testing.assert_allclose(edm.karras_sigmas(6), [80, 24.408, 5.8389, 0.96542, 0.085087,
                                                    0.002, 0], rtol=1e-4)
  assert samplers.steps_for_nfe(35) == 18 and samplers.heun_nfe(18) == 35
