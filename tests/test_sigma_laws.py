"""σ laws of the distillation methods (diffusion/sigma_laws.py) and where the methods use them."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fdistill_jax import defaults
from fdistill_jax.diffusion import ddpm, edm, sigma_laws
from fdistill_jax.methods import common, fdistill, sid
from fdistill_jax.nets import Nets

PIXART = ddpm.DiscreteVPSchedule.create()  # linear β, σ ∈ [0.0100, 157.4]
N = 200_000


def _draw(law, **kw):
  return np.asarray(sigma_laws.draw(jax.random.PRNGKey(0), (N,), law, **kw), np.float64)


def test_uniform_t_is_uniform_in_the_teachers_timesteps():
  lo, hi = 0.02, defaults.SD_SIGMA_MAX
  s = _draw("uniform_t", sigma_min=lo, sigma_max=hi, time=PIXART)
  assert s.min() >= lo * (1 - 1e-5) and s.max() <= hi * (1 + 1e-5)
  t = np.asarray(PIXART.sigma_to_t(s))
  t_lo, t_hi = float(PIXART.sigma_to_t(lo)), float(PIXART.sigma_to_t(hi))
  assert t_hi == pytest.approx(726.9, abs=0.1)  # σ 14.6 is t ≈ 727 of PixArt's schedule
  hist, _ = np.histogram(t, bins=20, range=(t_lo, t_hi))
  np.testing.assert_allclose(hist / N, 1 / 20, atol=0.003)
  # Quantiles of σ follow from the grid: the median is σ at the middle timestep.
  assert np.median(s) == pytest.approx(float(PIXART.t_to_sigma((t_lo + t_hi) / 2)), rel=0.01)


def test_uniform_t_needs_a_time_map():
  with pytest.raises(ValueError, match="uniform_t"):
    sigma_laws.draw(jax.random.PRNGKey(0), (4,), "uniform_t", sigma_min=0.02, sigma_max=14.6)


@pytest.mark.parametrize("law,kw", [
    ("karras_index", dict(time_lo=0.0, time_hi=1.0)),
    ("truncated_karras", dict(t_max=800.0)),
    ("uniform_t", dict(time=PIXART))])
def test_cdf_of_each_bounded_law_is_uniform(law, kw):
  """f-distill's 'law' ratio bins split the law's own coordinate evenly: equal shares per bin
  (FastGen's bins linear in σ put most draws into the first bin)."""
  lo, hi = 0.02, 80.0
  draw_kw = {k: v for k, v in kw.items()}
  s = sigma_laws.draw(jax.random.PRNGKey(1), (N,), law, sigma_min=lo, sigma_max=hi, **draw_kw)
  u = np.asarray(sigma_laws.cdf(s, law, sigma_min=lo, sigma_max=hi,
                                **{k: v for k, v in kw.items() if k in ("t_max", "time")}))
  counts = np.bincount(np.asarray(common.time_bin_index(jnp.asarray(u), 10, 0.0, 1.0)),
                       minlength=10) / N
  np.testing.assert_allclose(counts, 0.1, atol=0.01)
  linear = np.bincount(np.asarray(common.time_bin_index(s, 10, lo, hi)), minlength=10) / N
  assert linear[0] > 0.5  # the σ-linear bins are unbalanced on the same draws


def test_karras_and_truncated_draws_are_the_edm_ones():
  key = jax.random.PRNGKey(3)
  np.testing.assert_array_equal(
      sigma_laws.draw(key, (64,), "karras_index", sigma_min=0.002, sigma_max=80.0,
                      time_lo=0.02, time_hi=0.98),
      edm.sample_karras_index_sigma(key, (64,), lo_frac=0.02, hi_frac=0.98))
  np.testing.assert_array_equal(
      sigma_laws.draw(key, (64,), "truncated_karras", sigma_min=0.002, sigma_max=80.0,
                      t_max=800.0),
      edm.sample_truncated_karras_sigma(key, (64,), t_max=800.0))


def test_fake_score_trains_where_the_generator_loss_reads_it():
  """SiD/SIM with fake_sigma_law='generator' draw the fake score's σ from the generator's law
  (the ε-teacher default); 'lognormal' leaves the generator's σ above ~5 untrained."""
  cfg = defaults.digits_t2i_distill()
  cfg.method = sid.method_config(kappa_fake=2.0, kappa_real=2.0, kappa_train_fake=2.0)
  defaults.eps_teacher(cfg)
  nets = Nets(None, None, None, 2.5, (16, 16, 1), time=PIXART)
  batch = {"x": jnp.zeros((20_000, 1))}
  _, s_gen, _ = sid.generator_draws(batch, jax.random.PRNGKey(0), cfg, nets)
  _, s_fake, _, _ = sid.fake_score_draws(batch, jax.random.PRNGKey(1), cfg, nets)
  q = [0.05, 0.5, 0.95, 0.99]
  np.testing.assert_allclose(np.quantile(s_fake, q), np.quantile(s_gen, q), rtol=0.05)
  cfg.method.fake_sigma_law = "lognormal"
  _, s_log, _, _ = sid.fake_score_draws(batch, jax.random.PRNGKey(1), cfg, nets)
  assert np.mean(np.asarray(s_gen) > 5.0) > 0.15 and np.mean(np.asarray(s_log) > 5.0) < 0.02


def test_eps_weighting_is_the_eps_mse_of_an_eps_network():
  """dsm_weighting='eps': λ‖D − x0‖² = ‖ε̂ − ε‖² for D = x − σ ε̂ (DMD2-SD / SiD-LSG's loss)."""
  rng = np.random.default_rng(0)
  x0, eps, eps_hat = (rng.standard_normal((8, 4, 4, 1)).astype(np.float32) for _ in range(3))
  sigma = np.exp(rng.uniform(-3, 3, 8)).astype(np.float32)
  x = x0 + sigma[:, None, None, None] * eps
  d = x - sigma[:, None, None, None] * eps_hat
  w = common.dsm_weight(jnp.asarray(sigma), "eps", 0.5)
  np.testing.assert_allclose(float(common.dsm_loss(jnp.asarray(d), jnp.asarray(x0), w)),
                             np.mean((eps_hat - eps) ** 2), rtol=1e-4)


def test_velocity_weighting_is_the_velocity_mse_of_a_flow_network():
  """dsm_weighting='velocity': λ‖D − x0‖² = ‖v̂ − v‖² for a rectified-flow net, x_s = x/(1+σ),
  D = x_s − s v̂ in EDM units (x0 = x_s − s v with v = ε − x0), s = σ/(1+σ)."""
  rng = np.random.default_rng(0)
  x0, eps, v_hat = (rng.standard_normal((8, 4, 4, 1)).astype(np.float32) for _ in range(3))
  sigma = np.exp(rng.uniform(-3, 3, 8)).astype(np.float32)
  s = (sigma / (1 + sigma))[:, None, None, None]
  x_s = (1 - s) * x0 + s * eps
  d = x_s - s * v_hat
  w = common.dsm_weight(jnp.asarray(sigma), "velocity", 0.5)
  np.testing.assert_allclose(float(common.dsm_loss(jnp.asarray(d), jnp.asarray(x0), w)),
                             np.mean((v_hat - (eps - x0)) ** 2), rtol=1e-4)
  w_eps = common.dsm_weight(jnp.asarray(sigma), "eps", 0.5)  # Another weighting is not it.
  assert abs(float(common.dsm_loss(jnp.asarray(d), jnp.asarray(x0), w_eps))
             - np.mean((v_hat - (eps - x0)) ** 2)) > 0.1


def test_fdistill_sigma_law_from_config():
  cfg = defaults.digits_t2i_distill()
  nets = Nets(None, None, None, 2.5, (16, 16, 1), time=PIXART)
  s = np.asarray(fdistill._sigma(jax.random.PRNGKey(0), 50_000, cfg, nets))  # pylint: disable=protected-access
  assert cfg.method.sigma_law == "uniform_t"
  assert s.min() >= cfg.diffusion.sigma_min * 0.999 and s.max() <= defaults.SD_SIGMA_MAX * 1.001
  coord, lo, hi = fdistill._bin_coordinate(jnp.asarray(s), cfg, nets)  # pylint: disable=protected-access
  counts = np.bincount(np.asarray(common.time_bin_index(coord, 10, lo, hi)), minlength=10)
  np.testing.assert_allclose(counts / len(s), 0.1, atol=0.01)
