"""Where a guided method's push cancels (issue 25 §2): a fake score that has matched the guided
teacher leaves no push; one still equal to the conditional teacher leaves the full guidance
direction (w − 1)(D_c − D_∅), unless the method guides the fake score too (SiD-LSG's κ2 = κ4).
The per-σ diagnostic (evaluation/guidance.py) reads 0 / 1 in those two states."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fdistill_jax import conditioning, defaults
from fdistill_jax.evaluation import guidance
from fdistill_jax.methods import fdistill, sid, sim
from fdistill_jax.nets import Nets

W = 2.0
A = jnp.asarray([[1.0, -0.5], [-0.3, 0.8]])  # class → its shift of the denoiser's output


def _teacher(x, sigma, cond):
  """A conditional denoiser with an ∅ branch (cond = 0): D = x/(1+σ²) + cond·A·σ²/(1+σ²)."""
  a = (sigma ** 2 / (1 + sigma ** 2))[:, None]
  return x / (1 + sigma[:, None] ** 2) + a * (cond @ A)


def _nets():
  """Student/fake: the teacher plus b·(D_c − D_∅): b = 0 is the conditional teacher copy,
  b = w − 1 the teacher guided at w. The generator is x_g = m + 0·z (a point per class)."""
  def student(p, x, sigma, cond, *, key=None, features=False):
    del key, features
    if "m" in p:
      return jnp.broadcast_to(cond @ p["m"], x.shape)
    null = jnp.zeros_like(cond)
    return _teacher(x, sigma, cond) + p["b"] * (_teacher(x, sigma, cond) - _teacher(x, sigma, null))

  def teacher(frozen, x, sigma, cond, *, features=False):
    del frozen
    return (_teacher(x, sigma, cond), {}) if features else _teacher(x, sigma, cond)

  return Nets(student=student, teacher=teacher, disc=None, sigma_init=2.5, data_shape=(2,),
              cond=conditioning.ClassLabels(2))


def _params(b):
  return {"generator": {"m": jnp.asarray([[0.5, 0.2], [-0.4, 0.1]])},
          "fake_score": {"b": jnp.float32(b)}}


def _batch():
  labels = jax.nn.one_hot(jnp.arange(64) % 2, 2)
  return {"x": jnp.zeros((64, 2)), "cond": labels}


def _fdistill_cfg():
  cfg = defaults.toy()
  cfg.method = fdistill.method_config(divergence="rkl", guidance_scale=W,
                                      ratio_normalization=False, gan_weight_gen=0.0)
  cfg.diffusion.sigma_min, cfg.diffusion.sigma_max = 0.02, 14.6
  return cfg


def _grad_norm(loss_fn, params, cfg):
  g = jax.grad(lambda gp: loss_fn({**params, "generator": gp}, {}, _batch(),
                                  jax.random.PRNGKey(0), {}, _nets(), cfg)[0])(
      params["generator"])
  return float(jnp.sqrt(sum(jnp.sum(v ** 2) for v in jax.tree.leaves(g))))


def test_fdistill_push_vanishes_once_the_fake_score_matches_the_guided_teacher():
  cfg = _fdistill_cfg()
  matched = _grad_norm(fdistill.generator_loss, _params(W - 1.0), cfg)
  teacher_copy = _grad_norm(fdistill.generator_loss, _params(0.0), cfg)
  assert matched < 1e-6 and teacher_copy > 1e-3


def test_sid_lsg_cancels_an_untrained_fake_score_sim_does_not():
  """With the fake still the teacher copy, SiD-LSG (κ2 = κ4 = w) has no push; SIM, whose fake
  score is not guided, pushes along the guidance direction until its fake score learns."""
  cfg = defaults.toy()
  cfg.diffusion.sigma_min, cfg.diffusion.sigma_max = 0.02, 14.6
  cfg.method = sid.method_config(kappa_real=W, kappa_fake=W, kappa_train_fake=W)
  assert _grad_norm(sid.generator_loss, _params(0.0), cfg) < 1e-6
  cfg.method = sim.method_config(guidance_scale=W, distance="l2")
  assert _grad_norm(sim.generator_loss, _params(0.0), cfg) > 1e-3
  cfg.method.guidance_scale = 1.0  # unguided: the teacher copy is the fixed point
  assert _grad_norm(sim.generator_loss, _params(0.0), cfg) < 1e-6


@pytest.mark.parametrize("b,matched,residual", [(0.0, 0.0, 1.0), (W - 1.0, 1.0, 0.0)])
def test_diagnostic_reads_the_matched_share(b, matched, residual):
  nets, params, batch = _nets(), _params(b), _batch()
  x_g = nets.generate(params["generator"], jnp.zeros((64, 2)), batch["cond"])
  out = guidance.push_at(nets, params["fake_score"], {}, x_g, batch["cond"], 2.5,
                         jax.random.PRNGKey(0), W)
  assert float(out["matched"]) == pytest.approx(matched, abs=1e-5)
  assert float(out["residual"]) == pytest.approx(residual, abs=1e-5)
  rows = guidance.diagnose(nets, params, {}, batch, jax.random.PRNGKey(1), W, sigmas=(1.0, 5.0))
  np.testing.assert_allclose([r["matched"] for r in rows.values()], matched, atol=1e-5)
  assert "teacher_err" in rows[1.0] and "1" in guidance.table(rows)


def test_guidance_interval_leaves_large_sigma_unguided():
  """guidance_sigma_max: w at σ ≤ it, the conditional teacher (w = 1) above it."""
  spec = conditioning.ClassLabels(2)
  x = jnp.ones((4, 2))
  sigma = jnp.asarray([0.5, 4.9, 5.1, 14.0])
  cond = jax.nn.one_hot(jnp.asarray([0, 1, 0, 1]), 2)
  out = conditioning.guided(_teacher, x, sigma, cond, W, spec, sigma_max=5.0)
  d_c, d_u = _teacher(x, sigma, cond), _teacher(x, sigma, jnp.zeros_like(cond))
  np.testing.assert_allclose(out[:2], (d_u + W * (d_c - d_u))[:2], rtol=1e-6)
  np.testing.assert_allclose(out[2:], d_c[2:], rtol=1e-6)
  np.testing.assert_allclose(conditioning.guided(_teacher, x, sigma, cond, W, spec),
                             d_u + W * (d_c - d_u), rtol=1e-6)
