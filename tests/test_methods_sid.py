"""SiD and SiD-LSG losses against an independent torch computation of the official formulas.

The reference re-derives, in torch with autograd, what mingyuanzhou/SiD `training/sid_loss.py`
computes: y_real = D_p(x_g + σn), y_fake = D_ψ(x_g + σn) (no detach: gradients reach x_g through
both inputs), weight = detached max(mean|x_g − y_real|, 1e-5) per sample, loss summed over
elements of (y_real − y_fake)((y_real − x_g) − α(y_real − y_fake))/weight, rows with NaN dropped,
divided by the batch size. Value and generator gradient must agree. SiD-LSG is checked on a
2-class conditional Gaussian teacher whose denoisers are written here; a short toy run must move
the student toward the exact teacher.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from fdistill_jax import conditioning, testing
from fdistill_jax.nets import Nets
from fdistill_jax.methods import sid
from tests.test_methods_dmd import short_run
from tests.test_toy_engine import tiny_cfg

D, B, SIGMA_INIT = 3, 6, 2.5


# ----------------------------------------------------------------------------- tiny nets
def _student(params, x, sigma, labels, *, key=None, features=False):
  del key, features
  s = jnp.reshape(sigma, (-1, 1))
  h = jnp.tanh(x @ params["w"] / (1.0 + s) + params["b"] + labels @ params["c"])
  return x / (1.0 + s ** 2) + h @ params["v"]


def _teacher(frozen, x, sigma, labels, *, features=False):
  s = jnp.reshape(sigma, (-1, 1))
  out = x / (1.0 + s ** 2) + 0.5 * jnp.sin(x @ frozen["a"]) + labels @ frozen["e"]
  return out + frozen["nan"][:, None]  # NaN in chosen rows to exercise row dropping.


def _torch_student(p, x, s, labels):
  h = torch.tanh(x @ p["w"] / (1.0 + s) + p["b"] + labels @ p["c"])
  return x / (1.0 + s ** 2) + h @ p["v"]


def _torch_teacher(f, x, s, labels):
  return x / (1.0 + s ** 2) + 0.5 * torch.sin(x @ f["a"]) + labels @ f["e"] + f["nan"][:, None]


def _params(key, label_dim):
  ks = jax.random.split(key, 4)
  return {"w": jax.random.normal(ks[0], (D, 5)) * 0.5, "b": jax.random.normal(ks[1], (5,)) * 0.1,
          "v": jax.random.normal(ks[2], (5, D)) * 0.5,
          "c": jax.random.normal(ks[3], (label_dim, 5))}


def _spec(label_dim):
  return conditioning.ClassLabels(label_dim) if label_dim else conditioning.Unconditional()


def _setup(label_dim=0, nan_row=None):
  k = jax.random.split(jax.random.PRNGKey(3), 8)
  params = {"generator": _params(k[0], label_dim), "fake_score": _params(k[1], label_dim)}
  nan = np.zeros(B, np.float32)
  if nan_row is not None:
    nan[nan_row] = np.nan
  frozen = {"a": jax.random.normal(k[2], (D, D)), "e": jax.random.normal(k[3], (label_dim, D)),
            "nan": jnp.asarray(nan)}
  nets = Nets(student=_student, teacher=_teacher, disc=None, sigma_init=SIGMA_INIT,
              data_shape=(D,), cond=_spec(label_dim))
  z = jax.random.normal(k[4], (B, D))
  n = jax.random.normal(k[5], (B, D))
  sigma = jnp.exp(jax.random.normal(k[6], (B,)))
  if label_dim:
    labels = jax.nn.one_hot(jax.random.randint(k[7], (B,), 0, label_dim), label_dim)
  else:
    labels = jnp.zeros((B, 0))
  return params, frozen, nets, z, sigma, n, labels


def _cfg(alpha=1.2, **kappas):
  cfg = tiny_cfg()
  cfg.method = sid.method_config(alpha=alpha, **kappas)
  return cfg


def _t(x, grad=False):
  return torch.tensor(np.asarray(x, np.float64), requires_grad=grad)


def _torch_reference(params, frozen, z, sigma, n, labels, alpha, k_fake=1.0, k_real=1.0):
  """(loss, grads of the generator params) of the official formula, in float64 torch."""
  gp = {k: _t(v, True) for k, v in params["generator"].items()}
  fp = {k: _t(v) for k, v in params["fake_score"].items()}
  fr = {k: _t(v) for k, v in frozen.items()}
  lab, s = _t(labels), _t(sigma)[:, None]
  zero = torch.zeros_like(lab)
  y = _torch_student(gp, SIGMA_INIT * _t(z), torch.full_like(s, SIGMA_INIT), lab)
  x_t = y + s * _t(n)
  real_c, fake_c = _torch_teacher(fr, x_t, s, lab), _torch_student(fp, x_t, s, lab)
  if k_real != 1.0:
    u = _torch_teacher(fr, x_t, s, zero)
    real_c = u + k_real * (real_c - u)
  if k_fake != 1.0:
    u = _torch_student(fp, x_t, s, zero)
    fake_c = u + k_fake * (fake_c - u)
  keep = ~(torch.isnan(y).any(1) | torch.isnan(real_c).any(1) | torch.isnan(fake_c).any(1))
  y, y_real, y_fake = y[keep], real_c[keep], fake_c[keep]
  with torch.no_grad():
    weight = (y - y_real).abs().mean(dim=1, keepdim=True).clip(min=1e-5)
  loss = ((y_real - y_fake) * ((y_real - y) - alpha * (y_real - y_fake)) / weight).sum() / B
  loss.backward()
  return loss.item(), {k: v.grad.numpy() for k, v in gp.items()}


def _ours(params, frozen, z, sigma, n, labels, nets, cfg):
  def f(gen):
    return sid.generator_loss_at({**params, "generator": gen}, frozen, labels, z, sigma, n,
                                 nets, cfg)
  (loss, metrics), grads = jax.value_and_grad(f, has_aux=True)(params["generator"])
  return float(loss), jax.tree.map(np.asarray, grads), metrics


@pytest.mark.parametrize("alpha,nan_row", [(1.2, None), (1.0, None), (1.2, 2)])
def test_sid_generator_loss_matches_official_formula(alpha, nan_row):
  params, frozen, nets, z, sigma, n, labels = _setup(nan_row=nan_row)
  loss, grads, metrics = _ours(params, frozen, z, sigma, n, labels, nets, _cfg(alpha))
  ref_loss, ref_grads = _torch_reference(params, frozen, z, sigma, n, labels, alpha)
  np.testing.assert_allclose(loss, ref_loss, rtol=2e-5, atol=1e-6)
  for k in ref_grads:
    np.testing.assert_allclose(grads[k], ref_grads[k], rtol=2e-4, atol=1e-5, err_msg=k)
  kept = 1.0 if nan_row is None else (B - 1) / B
  assert float(metrics["kept_frac"]) == pytest.approx(kept)


def test_sid_gradient_flows_through_denoiser_inputs():
  """Detaching the denoiser outputs (DMD-style) must change the gradient."""
  params, frozen, nets, z, sigma, n, labels = _setup()
  _, grads, _ = _ours(params, frozen, z, sigma, n, labels, nets, _cfg())

  def detached(gen):
    x_g, x_t, _ = sid.generator_sample(gen, z, sigma, n, labels, nets)
    fr = jax.lax.stop_gradient(_teacher(frozen, x_t, sigma, labels))
    ff = jax.lax.stop_gradient(_student(params["fake_score"], x_t, sigma, labels))
    return jnp.sum(sid.sid_per_sample(x_g, fr, ff, 1.2)) / B

  g2 = jax.grad(detached)(params["generator"])
  assert not np.allclose(grads["w"], np.asarray(g2["w"]), rtol=1e-3)


def test_truncated_time_draw_range():
  cfg = _cfg()
  _, sigma, _ = sid.generator_draws({"x": jnp.zeros((4096, 2))}, jax.random.PRNGKey(0), cfg,
                                    Nets(None, None, None, 2.5, (2,)))
  hi = (80 ** (1 / 7) + 0.2 * (0.002 ** (1 / 7) - 80 ** (1 / 7))) ** 7
  assert float(sigma.min()) >= 0.002 and float(sigma.max()) <= hi + 1e-3
  assert float(sigma.max()) > 0.9 * hi and float(np.median(sigma)) < 2.0


# ----------------------------------------------------------------------------- loss scaling
def _torch_fake_reference(params, z, sigma, n, labels, sigma_data):
  """mingyuanzhou/SiD SID_EDMLoss.__call__ then `loss.sum().mul(loss_scaling / B)` (--ls 1):
  (loss, grads of the fake-score params), float64 torch."""
  gp = {k: _t(v) for k, v in params["generator"].items()}
  fp = {k: _t(v, True) for k, v in params["fake_score"].items()}
  lab, s = _t(labels), _t(sigma)[:, None]
  with torch.no_grad():
    y = _torch_student(gp, SIGMA_INIT * _t(z), torch.full_like(s, SIGMA_INIT), lab)
  weight = (s ** 2 + sigma_data ** 2) / (s * sigma_data) ** 2
  loss = (weight * (_torch_student(fp, y + s * _t(n), s, lab) - y) ** 2).sum().mul(1.0 / B)
  loss.backward()
  return loss.item(), {k: v.grad.numpy() for k, v in fp.items()}


def test_official_loss_scaling_of_generator_and_fake_score():
  """sid.OFFICIAL_SCALING back-propagates exactly what the official code does: 100/B·Σ for the
  generator (--lsg 100) and 1/B·Σ over samples and pixels for the fake score (--ls 1)."""
  params, frozen, nets, z, sigma, n, labels = _setup(nan_row=1)
  cfg = _cfg()
  cfg.method.update(sid.OFFICIAL_SCALING)
  loss, grads, _ = _ours(params, frozen, z, sigma, n, labels, nets, cfg)
  ref_loss, ref_grads = _torch_reference(params, frozen, z, sigma, n, labels, 1.2)
  np.testing.assert_allclose(loss, 100.0 * ref_loss, rtol=2e-5)
  for k in ref_grads:
    np.testing.assert_allclose(grads[k], 100.0 * ref_grads[k], rtol=2e-4, atol=1e-3, err_msg=k)

  def fake_loss(fake, c):
    return sid.fake_score_loss_at({**params, "fake_score": fake}, labels, z, sigma, n,
                                  jnp.zeros((B,), bool), nets, c)[0]
  value, fgrads = jax.value_and_grad(fake_loss)(params["fake_score"], cfg)
  ref_value, ref_fgrads = _torch_fake_reference(params, z, sigma, n, labels,
                                                cfg.diffusion.sigma_data)
  np.testing.assert_allclose(float(value), ref_value, rtol=2e-5)
  for k in ref_fgrads:
    np.testing.assert_allclose(fgrads[k], ref_fgrads[k], rtol=2e-4, atol=1e-5, err_msg=k)
  # The default (digits / toy configs): pixel mean and scale 1, i.e. 1/D of the official loss.
  np.testing.assert_allclose(float(fake_loss(params["fake_score"], _cfg())), ref_value / D,
                             rtol=2e-5)


def test_released_sid_recipes_use_the_official_scaling():
  from fdistill_jax import defaults
  keys = ("generator_loss_scale", "fake_score_loss_scale", "fake_score_reduction")
  for dataset, eps in (("cifar10", 1e-8), ("imagenet64", 1e-6)):
    cfg = defaults.sid_edm(dataset)
    assert tuple(cfg.method[k] for k in keys) == (100.0, 1.0, "sum")
    assert cfg.optim.generator.eps == cfg.optim.fake_score.eps == eps
  assert tuple(sid.method_config()[k] for k in keys) == (1.0, 1.0, "mean")
  with pytest.raises(ValueError, match="fake_score_reduction"):
    sid.pixel_reduce(jnp.ones((2, 3)), "median")


# ----------------------------------------------------------------------------- SiD-LSG
def test_lsg_guidance_scales_match_reference():
  """κ2 on the fake x0 and κ4 on the teacher x0 of the generator loss (unconditional = 0 labels)."""
  params, frozen, nets, z, sigma, n, labels = _setup(label_dim=2)
  cfg = _cfg(alpha=1.0, kappa_train_fake=1.5, kappa_fake=1.5, kappa_real=3.0)
  loss, grads, _ = _ours(params, frozen, z, sigma, n, labels, nets, cfg)
  ref_loss, ref_grads = _torch_reference(params, frozen, z, sigma, n, labels, 1.0, 1.5, 3.0)
  np.testing.assert_allclose(loss, ref_loss, rtol=2e-5, atol=1e-6)
  for k in ref_grads:
    np.testing.assert_allclose(grads[k], ref_grads[k], rtol=2e-4, atol=1e-5, err_msg=k)
  plain, _, _ = _ours(params, frozen, z, sigma, n, labels, nets, _cfg(alpha=1.0))
  assert abs(plain - loss) > 1e-3 * abs(loss)


def _two_class_denoiser(x, sigma, labels):
  """Exact E[x0 | x_σ, c] of x0 | c ~ N(μ_c, s² I), μ_0 = (−1, 0), μ_1 = (1, 0.5), s = 0.3;
  zero labels give the unconditional (equal-prior mixture) denoiser."""
  mu = np.array([[-1.0, 0.0], [1.0, 0.5]])
  s2, v = 0.09, 0.09 + np.asarray(sigma)[:, None] ** 2
  x = np.asarray(x, np.float64)
  labels = np.asarray(labels)
  cond = [mu[c] + s2 / v * (x - mu[c]) for c in range(2)]
  logp = np.stack([-0.5 * np.sum((x - mu[c]) ** 2, 1) / v[:, 0] for c in range(2)], 1)
  post = np.exp(logp - logp.max(1, keepdims=True))
  post = post / post.sum(1, keepdims=True)
  uncond = post[:, :1] * cond[0] + post[:, 1:] * cond[1]
  has = labels.sum(1, keepdims=True) > 0
  c_idx = labels.argmax(1)
  condsel = np.where(c_idx[:, None] == 0, cond[0], cond[1])
  return np.where(has, condsel, uncond)


def test_lsg_fake_training_uses_kappa1_and_label_dropout():
  """Fake-score loss with κ1 and dropout rows, against numpy with the exact 2-class denoisers.

  The 'fake score' here is the exact conditional teacher (jnp version), so the reference is
  independent numpy; drop rows must use the unconditional branch for both terms of the CFG.
  """
  mu = jnp.array([[-1.0, 0.0], [1.0, 0.5]])

  def cond_den(params, x, sigma, labels, *, key=None, features=False):
    v = 0.09 + jnp.reshape(sigma, (-1, 1)) ** 2
    cond = [mu[c] + 0.09 / v * (x - mu[c]) for c in range(2)]
    logp = jnp.stack([-0.5 * jnp.sum((x - mu[c]) ** 2, 1) / v[:, 0] for c in range(2)], 1)
    post = jax.nn.softmax(logp, 1)
    uncond = post[:, :1] * cond[0] + post[:, 1:] * cond[1]
    sel = jnp.where(jnp.argmax(labels, 1)[:, None] == 0, cond[0], cond[1])
    return jnp.where(jnp.sum(labels, 1, keepdims=True) > 0, sel, uncond) + params["shift"]

  nets = Nets(student=cond_den, teacher=None, disc=None, sigma_init=SIGMA_INIT,
              data_shape=(2,), cond=conditioning.ClassLabels(2))
  k = jax.random.split(jax.random.PRNGKey(5), 4)
  b = 16
  labels = jax.nn.one_hot(jax.random.randint(k[0], (b,), 0, 2), 2)
  z, n = jax.random.normal(k[1], (b, 2)), jax.random.normal(k[2], (b, 2))
  sigma = jnp.exp(jax.random.normal(k[3], (b,)) * 1.2 - 0.4)
  drop = jnp.arange(b) % 3 == 0
  params = {"generator": {"shift": jnp.array([0.1, -0.2])}, "fake_score": {"shift": jnp.zeros(2)}}
  kappa = 2.0
  cfg = _cfg(kappa_train_fake=kappa, kappa_fake=kappa, kappa_real=kappa)
  # Jitted (one program instead of its ops one by one), compiled with testing.FAST_COMPILE.
  args = (params, labels, z, sigma, n, drop)
  loss, metrics = testing.compile_fast(jax.jit(
      lambda *a: sid.fake_score_loss_at(*a, nets, cfg)).lower(*args))(*args)
  # Reference.
  x_g = _two_class_denoiser(SIGMA_INIT * np.asarray(z), np.full(b, SIGMA_INIT), labels)
  x_g = x_g + [0.1, -0.2]
  x_t = x_g + np.asarray(sigma)[:, None] * np.asarray(n)
  lab = np.where(np.asarray(drop)[:, None], 0.0, np.asarray(labels))
  c = _two_class_denoiser(x_t, sigma, lab)
  u = _two_class_denoiser(x_t, sigma, np.zeros_like(lab))
  guided = u + kappa * (c - u)
  s = np.asarray(sigma, np.float64)
  w = (s ** 2 + 1.5 ** 2) / (s * 1.5) ** 2
  ref = np.sum(w * np.mean((guided - x_g) ** 2, 1)) / b
  np.testing.assert_allclose(float(loss), ref, rtol=1e-4)
  assert float(metrics["label_drop_frac"]) == pytest.approx(np.mean(np.asarray(drop)))
  # The drawn dropout: 10 % of rows when a κ ≠ 1 and labels exist; none for plain SiD.
  batch = {"x": jnp.zeros((4000, 2)), "cond": jnp.zeros((4000, 2))}
  key = jax.random.PRNGKey(1)
  drop_mask = lambda c: testing.compile_fast(jax.jit(
      lambda b, k: sid.fake_score_draws(b, k, c, nets)[-1]).lower(batch, key))(batch, key)
  d1, d0 = drop_mask(cfg), drop_mask(_cfg())
  assert 0.08 < float(jnp.mean(d1)) < 0.12 and not bool(jnp.any(d0))


# ----------------------------------------------------------------------------- toy run
@pytest.mark.slow
def test_sid_short_toy_run_moves_student_toward_teacher(tmp_path):
  cfg = tiny_cfg(steps=300, batch_size=128, log_every=100, ckpt_every=0)
  cfg.pretrain.steps = 400
  cfg.method = sid.method_config(fake_p_mean=cfg.pretrain.p_mean, fake_p_std=cfg.pretrain.p_std)
  cfg.diffusion.sigma_init = 2.5
  cfg.disc.enabled = False
  init, student, history, _ = short_run(cfg, tmp_path)
  assert all(float(h["generator/kept_frac"]) == 1.0 for h in history if "generator/kept_frac" in h)
  assert student["sw"] < 0.5 * init["sw"], (student["sw"], init["sw"])
  assert student["mean_log_prob"] > init["mean_log_prob"] + 5.0
