"""SIM's generator loss has the gradient of the divergence it claims to minimise (exact Gaussians).

An exact problem: teacher p_0 = N(μ, diag s²); generator x_0 = m + a ⊙ z, θ = (m, a), so at
noise σ both diffused densities and denoisers are closed-form, and the fake score is the exact
score of q_{θ̄,σ} (frozen at the current θ̄). The target is
  G* = ∇_θ E_{x ~ q_{θ̄,σ}}[d(s_p(x) − s_{q_θ,σ}(x))] at θ = θ̄ (π frozen, θ only inside s_q),
computed per sample by autodiff with the sample x fixed. Our loss's per-sample gradient (through
x_g = m + a z, x_t = x_g + σ ε) must have the same mean within 4 standard errors, for L2 and
pseudo-Huber (c in score units). Also: zero gradient at θ = (μ, s); the stop-gradient s_p-form
disagrees on the a-components; L2 equals 2/σ⁴·SiD(α = 1); a short toy run learns.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fdistill_jax import config_checks
from fdistill_jax.methods import sid, sim
from tests.test_methods_dmd import short_run
from tests.test_toy_engine import tiny_cfg

MU = jnp.array([0.7, -0.4])
S = jnp.array([0.8, 1.2])
M_BAR = jnp.array([-0.3, 0.5])
A_BAR = jnp.array([1.3, 0.6])
SIGMA, C, N = 0.8, 0.5, 100_000


def _denoise(x, mean, var):
  return x + SIGMA ** 2 * (mean - x) / (var + SIGMA ** 2)


def _score(x, mean, var):
  return (mean - x) / (var + SIGMA ** 2)


def _d(y, distance):
  sq = jnp.sum(y ** 2, -1)
  return sq if distance == "l2" else jnp.sqrt(sq + C ** 2) - C


def _per_sample_grads(distance, m_bar, a_bar, form="exact"):
  """(ours [N, 4], target [N, 4]) per-sample gradients w.r.t. θ = (m, a)."""
  kz, ke = jax.random.split(jax.random.PRNGKey(0))
  z = jax.random.normal(kz, (N, 2))
  eps = jax.random.normal(ke, (N, 2))

  def ours(theta, z1, e1):
    m, a = theta[:2], theta[2:]
    x_g = (m + a * z1)[None]
    x_t = x_g + SIGMA * e1[None]
    dp = _denoise(x_t, MU, S ** 2)
    dq = _denoise(x_t, m_bar, a_bar ** 2)  # the exact fake score, parameters frozen at θ̄
    return sim.sim_per_sample(x_g, dp, dq, jnp.full((1,), SIGMA), distance=distance, c=C,
                              weighting="none", form=form)[0]

  def target(theta, z1, e1):
    x = m_bar + a_bar * z1 + SIGMA * e1  # x ~ q_{θ̄,σ}: π is frozen
    m, a = theta[:2], theta[2:]
    return _d(_score(x, MU, S ** 2) - _score(x, m, a ** 2), distance)

  theta = jnp.concatenate([m_bar, a_bar])
  g_ours = jax.vmap(jax.grad(ours), (None, 0, 0))(theta, z, eps)
  g_target = jax.vmap(jax.grad(target), (None, 0, 0))(theta, z, eps)
  return np.asarray(g_ours, np.float64), np.asarray(g_target, np.float64)


def _se(x):
  return x.std(0) / np.sqrt(x.shape[0])


@pytest.mark.parametrize("distance", ["l2", "pseudo_huber"])
def test_score_gradient_identity_on_exact_gaussians(distance):
  g, t = _per_sample_grads(distance, M_BAR, A_BAR)
  diff = g - t
  assert np.all(np.abs(diff.mean(0)) < 4 * _se(diff) + 1e-6), (g.mean(0), t.mean(0), _se(diff))
  # The target is far from zero, so the agreement is informative.
  assert np.all(np.abs(t.mean(0)) > 10 * _se(diff)), (t.mean(0), _se(diff))


def test_gradient_vanishes_at_the_teacher():
  for distance in ("l2", "pseudo_huber"):
    g, _ = _per_sample_grads(distance, MU, S)
    np.testing.assert_allclose(g.mean(0), 0.0, atol=1e-6)


def test_stop_gradient_sp_form_is_not_the_exact_gradient():
  """Regression guard: sg(d'(y))ᵀ(D_p − x_g) gets the scale (a) components wrong."""
  g, t = _per_sample_grads("pseudo_huber", M_BAR, A_BAR, form="sp")
  diff = g - t
  assert np.any(np.abs(diff.mean(0)[2:]) > 8 * _se(diff)[2:]), (g.mean(0), t.mean(0))


def test_l2_equals_two_over_sigma4_times_sid_alpha1():
  k = jax.random.split(jax.random.PRNGKey(1), 4)
  x_g, dp, dq = (jax.random.normal(k[i], (5, 3)) for i in range(3))
  sigma = jnp.exp(jax.random.normal(k[3], (5,)))

  def both(x_g, dp, dq):
    s = sim.sim_per_sample(x_g, dp, dq, sigma, distance="l2", c=0.0, weighting="none")
    norm = jnp.maximum(jnp.mean(jnp.abs(x_g - dp), -1), 1e-5)
    ref = 2.0 / sigma ** 4 * sid.sid_per_sample(x_g, dp, dq, 1.0) * jax.lax.stop_gradient(norm)
    weighted = sim.sim_per_sample(x_g, dp, dq, sigma, distance="l2", c=0.0, weighting="sid")
    return s, ref, weighted, 2.0 * sid.sid_per_sample(x_g, dp, dq, 1.0)

  s, ref, w, w_ref = both(x_g, dp, dq)
  np.testing.assert_allclose(s, ref, rtol=1e-4)
  np.testing.assert_allclose(w, w_ref, rtol=1e-4)
  for i, j in ((0, 1), (2, 3)):
    ga = jax.grad(lambda *a: jnp.sum(both(*a)[i]), argnums=(0, 1, 2))(x_g, dp, dq)
    gb = jax.grad(lambda *a: jnp.sum(both(*a)[j]), argnums=(0, 1, 2))(x_g, dp, dq)
    for a, b in zip(ga, gb):
      np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_huber_constant_is_in_score_units():
  """c in score units ⇔ c·σ² in x0 units: d'(y) at y = Δ/σ² equals Δ/√(‖Δ‖² + c²σ⁴)."""
  delta = jnp.array([[0.3, -0.2]])
  for sigma in (0.1, 1.0, 7.0):
    y = delta / sigma ** 2
    want = y / jnp.sqrt(jnp.sum(y ** 2) + C ** 2)
    got = sim.distance_grad(delta, jnp.array([sigma]), "pseudo_huber", C)
    np.testing.assert_allclose(got, want, rtol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("distance", ["l2", "pseudo_huber"])
def test_sim_short_toy_run_moves_student_toward_teacher(tmp_path_factory, tmp_path, distance):
  root = tmp_path_factory.getbasetemp() / "sim_shared"
  root.mkdir(exist_ok=True)
  cfg = tiny_cfg(steps=300, batch_size=128, log_every=100, ckpt_every=0)
  cfg.pretrain.steps = 400
  cfg.method = sim.method_config(distance=distance, fake_p_mean=cfg.pretrain.p_mean,
                                 fake_p_std=cfg.pretrain.p_std)
  cfg.diffusion.sigma_init = 2.5
  cfg.disc.enabled = False
  init, student, _, _ = short_run(cfg, tmp_path, root)
  assert student["sw"] < 0.5 * init["sw"], (student["sw"], init["sw"])
  assert student["mean_log_prob"] > init["mean_log_prob"] + 5.0


@pytest.mark.parametrize("field,value,match", [
    ("distance", "l1", "allowed"), ("huber_c", 0.0, "score units"), ("form", "sg", "allowed"),
    ("t_max", 1200.0, "(0, 1000]")])
def test_sim_config_errors_name_the_field(field, value, match):
  cfg = tiny_cfg()
  cfg.method = sim.method_config()
  cfg.method[field] = value
  with pytest.raises(config_checks.ConfigError, match=rf"method\.{field}") as e:
    config_checks.check(cfg, num_devices=8)
  assert match in str(e.value)


def test_huber_constant_in_x0_units():
  """huber_space='x0': the pseudo-Huber distance between the x0 predictions, c in x0 units (the
  consistency-model rule c = 0.00054·√dim): d' ∝ Δ/√(‖Δ‖² + c²) at every σ."""
  delta = jnp.array([[0.3, -0.2]])
  for sigma in (0.1, 1.0, 7.0):
    want = delta / jnp.sqrt(jnp.sum(delta ** 2) + C ** 2)
    got = sim.distance_grad(delta, jnp.array([sigma]), "pseudo_huber", C, "x0")
    np.testing.assert_allclose(got, want, rtol=1e-5)
