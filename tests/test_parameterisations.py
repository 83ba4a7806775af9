"""Teacher parameterisation adapters (diffusion/parameterisations.py, diffusion/ddpm.py).

An analytic Gaussian-mixture teacher is written as a network of each parameterisation from the
process definitions alone (ε from x_p = a x0 + b ε, v = a ε − b x0, u = ε − x0 at the network's
own time), then adapted back: D must equal the mixture's exact EDM denoiser to float32 rounding,
|ΔD| ≤ 16 ε_f32 · (|x| + 1) elementwise. The schedules' ᾱ must equal diffusers' DDPMScheduler's.
"""
import numpy as np
import jax
import jax.numpy as jnp
import pytest

from fdistill_jax.diffusion import ddpm
from fdistill_jax.diffusion import parameterisations as P
from fdistill_jax.teachers.analytic import random_mixture

GMM = random_mixture(0, num_modes=3, dim=4, spread=1.0, scale=0.3)
EPS32 = float(np.finfo(np.float32).eps)
TOL = 16 * EPS32  # × (|x| + 1), elementwise.


def _draw(seed, lo, hi, n=256):
  """(x [n, 4] = x0 + σ n, σ [n] log-uniform in [lo, hi]) with x0 from the mixture."""
  k1, k2, k3 = jax.random.split(jax.random.PRNGKey(seed), 3)
  sigma = jnp.exp(jax.random.uniform(k1, (n,), minval=np.log(lo), maxval=np.log(hi)))
  x0, _ = GMM.sample(k2, n)
  return x0 + sigma[:, None] * jax.random.normal(k3, x0.shape), sigma


# ----------------------------------------------------------------------------- closed-form nets
def _vp_net(prediction, sigma_of_t):
  """The mixture as a VP network: x_vp = a x0 + b ε, a = 1/√(1+σ²), b = σ a at σ = σ(t)."""
  def net(x_vp, t, cond=None):
    del cond
    s = sigma_of_t(t)[:, None]
    a, b = 1.0 / jnp.sqrt(1.0 + s ** 2), s / jnp.sqrt(1.0 + s ** 2)
    x0 = GMM.denoise(x_vp / a, s[:, 0])
    eps = (x_vp - a * x0) / b
    return {"epsilon": eps, "sample": x0, "v_prediction": a * eps - b * x0}[prediction]
  return net


def _flow_net(prediction, time_scale):
  """The mixture as a rectified flow: x_s = (1 − s) x0 + s ε at s = t / time_scale."""
  def net(x_s, t, cond=None):
    del cond
    s = (t / time_scale)[:, None]
    x0 = GMM.denoise(x_s / (1.0 - s), (s / (1.0 - s))[:, 0])
    eps = (x_s - (1.0 - s) * x0) / s
    return {"velocity": eps - x0, "epsilon": eps, "sample": x0}[prediction]
  return net


def _check(adapter, net, seed=0):
  x, sigma = _draw(seed, adapter.sigma_min, adapter.sigma_max)
  got = adapter.wrap(net)(x, sigma)
  want = GMM.denoise(x, sigma)
  err = np.max(np.abs(np.asarray(got) - np.asarray(want)) / (np.abs(np.asarray(x)) + 1.0))
  assert got.dtype == jnp.float32 and got.shape == x.shape
  assert err <= TOL, (err / EPS32, adapter.process, adapter.prediction)
  print(f"{adapter.process}/{adapter.prediction}: max|ΔD|/(|x|+1) = {err / EPS32:.2f} eps")
  return err / EPS32


@pytest.mark.parametrize("schedule", ["linear", "scaled_linear", "squaredcos_cap_v2"])
@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction", "sample"])
def test_ddpm_adapters_give_the_edm_denoiser(prediction, schedule):
  kw = dict(beta_start=0.00085, beta_end=0.012) if schedule == "scaled_linear" else {}
  adapter = P.ddpm(prediction, beta_schedule=schedule, **kw)
  _check(adapter, _vp_net(prediction, adapter.time.t_to_sigma))


@pytest.mark.parametrize("prediction", ["velocity", "epsilon", "sample"])
@pytest.mark.parametrize("time_scale", [1.0, 1000.0])
def test_rectified_flow_adapters_give_the_edm_denoiser(prediction, time_scale):
  _check(P.rectified_flow(prediction, time_scale=time_scale), _flow_net(prediction, time_scale))


def test_nearest_timestep_is_exact_on_the_grid_and_learned_variance_is_dropped():
  """On-grid σ with integer t: the net reads ᾱ_t from the float64 table, not from the adapter;
  it returns 2C channels (the variance half is garbage) like PixArt-α."""
  adapter = P.ddpm("epsilon", timestep_mode="nearest", learned_variance=True)
  table = jnp.asarray(adapter.time.sigmas, jnp.float32)
  t_int = jnp.asarray(np.random.default_rng(0).integers(0, 1000, 256))
  inner = _vp_net("epsilon", lambda t: table[t.astype(jnp.int32)])
  net = lambda x, t, c=None: jnp.concatenate([inner(x, t), jnp.full_like(x, 1e3)], -1)
  x0, _ = GMM.sample(jax.random.PRNGKey(1), 256)
  x = x0 + table[t_int][:, None] * jax.random.normal(jax.random.PRNGKey(2), x0.shape)
  got = adapter.denoise(net, x, table[t_int])
  err = np.max(np.abs(np.asarray(got - GMM.denoise(x, table[t_int]))) / (np.abs(x) + 1.0))
  assert err <= TOL
  with pytest.raises(ValueError, match="learned_variance"):
    P.ddpm("epsilon").denoise(net, x, table[t_int])


def test_features_pass_through_and_cond_is_opaque():
  adapter = P.rectified_flow()
  cond = {"emb": jnp.ones((3, 2, 5)), "mask": jnp.ones((3, 2), bool)}

  def net(x, t, c, *, features=False):
    out = x + jnp.sum(c["emb"], (1, 2))[:, None] * 0 + t[:, None]
    return (out, {"f": 2 * x}) if features else out

  x = jnp.ones((3, 4))
  d, feats = adapter.denoise(net, x, jnp.ones((3,)), cond, features=True)
  assert d.shape == (3, 4) and feats["f"].shape == (3, 4)


# ----------------------------------------------------------------------------- σ ↔ t
def test_discrete_round_trips():
  s = ddpm.DiscreteVPSchedule.create()
  assert s.sigma_min == pytest.approx(0.0100005, rel=1e-5)
  assert s.sigma_max == pytest.approx(157.41, rel=1e-4)
  s2t, t2s = jax.jit(s.sigma_to_t), jax.jit(s.t_to_sigma)
  sig = jnp.exp(jnp.linspace(np.log(s.sigma_min), np.log(s.sigma_max), 4000))
  rel = np.max(np.abs(np.asarray(t2s(s2t(sig)) / sig - 1)))
  assert rel < 2e-6, rel
  t = jnp.concatenate([jnp.arange(1000.0), jnp.linspace(0, 999, 3000)])
  assert np.max(np.abs(np.asarray(s2t(t2s(t)) - t))) < 2e-3
  np.testing.assert_allclose(t2s(t[:1000]), s.sigmas, rtol=1e-6)
  # Outside the range t clamps to the ends.
  np.testing.assert_array_equal(s2t(jnp.array([1e-4, 1e4] * 2000))[:2], [0.0, 999.0])
  # Nearest: integer t, the grid point nearest in log σ.
  n = ddpm.DiscreteVPSchedule.create(timestep_mode="nearest")
  s2t, t2s = jax.jit(n.sigma_to_t), jax.jit(n.t_to_sigma)
  ti = jnp.arange(1000.0)
  np.testing.assert_array_equal(s2t(t2s(jnp.tile(ti, 4))), jnp.tile(ti, 4))
  grid = np.log(n.sigmas)
  gap = np.diff(grid)
  up = grid[1:-1] + 0.45 * gap[1:]
  down = grid[1:-1] - 0.45 * gap[:-1]
  shifted = jnp.exp(jnp.asarray(np.concatenate([up, down, grid[:4]]), jnp.float32))
  np.testing.assert_array_equal(s2t(shifted)[:1996], np.tile(np.arange(1, 999), 2))


def test_flow_round_trips():
  f = P.FlowTime(time_scale=1000.0)
  sig = jnp.exp(jnp.linspace(np.log(0.002), np.log(80.0), 1001))
  assert np.max(np.abs(np.asarray(f.t_to_sigma(f.sigma_to_t(sig)) / sig - 1))) < 2e-5
  t = jnp.linspace(2.0, 980.0, 1001)
  np.testing.assert_allclose(f.sigma_to_t(f.t_to_sigma(t)), t, rtol=1e-6)
  assert float(f.sigma_to_t(1.0)) == 500.0


# ----------------------------------------------------------------------------- vs diffusers
@pytest.mark.parametrize("schedule,kw", [("linear", {}),
                                         ("scaled_linear", dict(beta_start=0.00085, beta_end=0.012)),
                                         ("squaredcos_cap_v2", {})])
def test_alphas_cumprod_match_diffusers(schedule, kw):
  diffusers = pytest.importorskip("diffusers")
  ref = diffusers.DDPMScheduler(beta_schedule=schedule, **kw)
  ours = ddpm.DiscreteVPSchedule.create(schedule, **kw)
  # β: ours float64, diffusers' float32 (linspace, then squared for scaled_linear): measured
  # 0.89 / 1.83 / 0.49 ε_f32 relative.
  np.testing.assert_allclose(ddpm.make_betas(schedule, **kw), ref.betas.double().numpy(),
                             rtol=2 * EPS32, atol=0)
  # ᾱ: diffusers' float32 cumulative product, within its accumulated rounding (measured
  # relative 3.6e-7 / 9.3e-7 / 1.3e-5, the last where the cosine ᾱ reaches 2e-9).
  np.testing.assert_allclose(ours.alphas_cumprod, ref.alphas_cumprod.double().numpy(), rtol=2e-5)
  # The adapter read from the scheduler's config is the same schedule.
  a = P.from_diffusers_scheduler_config(dict(ref.config))
  np.testing.assert_array_equal(a.time.alphas_cumprod, ours.alphas_cumprod)


def test_bad_input_is_refused():
  with pytest.raises(ValueError, match="not defined for process"):
    P.TeacherAdapter("flow", "v_prediction", P.FlowTime())
  with pytest.raises(ValueError, match="beta_schedule"):
    ddpm.make_betas("cosine")
  with pytest.raises(ValueError, match="zero"):
    ddpm.DiscreteVPSchedule.from_diffusers_config({"rescale_betas_zero_snr": True})
  with pytest.raises(ValueError, match="outside the σ range"):
    P.check_sigma_range(P.ddpm(), 0.002, 80.0)
  P.check_sigma_range(P.ddpm(), 0.0100005, 157.0)
