"""Few-step students (diffusion/few_step.py): K = 1 is today's generator bit for bit, the backward
chain is the hand-written loop with no gradient through its earlier steps, rollout's gradient is
the finite difference, every method trains a K-step student, sharded equals single device, and
config errors name the field. Tiny hand-written networks: nothing here compiles a real model."""
import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from fdistill_jax import config_checks, defaults, testing
from fdistill_jax.diffusion import few_step
from fdistill_jax.methods import dmd, fdistill, kd, sid, sim, uni_instruct
from fdistill_jax.nets import Nets
from tests.test_t2i_engine import files  # noqa: F401  (a fixture)

D, B, SIGMA_INIT = 3, 8, 80.0
SIGMAS = (80.0, 8.0, 1.0, 0.2)


def _student(params, x, sigma, cond, *, key=None, features=False):
  del cond
  s = jnp.reshape(sigma, (-1, 1))
  h = jnp.tanh(x @ params["w"] / jnp.sqrt(1.0 + s ** 2) + params["b"])
  x0 = x / (1.0 + s ** 2) + h @ params["v"]
  if key is not None:  # A dropout-like use of the key, so that the key's path shows.
    x0 = x0 * (1.0 + 0.01 * jax.random.normal(key, x0.shape))
  return (x0, h) if features else x0


def _teacher(frozen, x, sigma, cond, *, features=False):
  del cond
  s = jnp.reshape(sigma, (-1, 1))
  x0 = x / (1.0 + s ** 2) + 0.5 * jnp.sin(x @ frozen["a"]) / (1.0 + 0.1 * s)
  return (x0, jnp.tanh(x0 @ frozen["f"])) if features else x0


def _disc(p, feats, sigma):
  del sigma
  return feats @ p["w"]


def _net_params(key):
  ks = jax.random.split(key, 3)
  return {"w": jax.random.normal(ks[0], (D, 5)) * 0.5, "b": jax.random.normal(ks[1], (5,)) * 0.1,
          "v": jax.random.normal(ks[2], (5, D)) * 0.5}


def _nets(chain=None, disc=False):
  return Nets(student=_student, teacher=_teacher, disc=_disc if disc else None,
              sigma_init=SIGMA_INIT, data_shape=(D,), chain=chain)


def _state(seed=0):
  k = jax.random.split(jax.random.PRNGKey(seed), 6)
  params = {"generator": _net_params(k[0]), "fake_score": _net_params(k[1]),
            "discriminator": {"w": jax.random.normal(k[2], (5, 1))}}
  frozen = {"a": jax.random.normal(k[3], (D, D)), "f": jax.random.normal(k[4], (D, 5))}
  batch = {"x": jax.random.normal(k[5], (B, D)), "cond": jnp.zeros((B, 0)),
           "z_pair": jax.random.normal(jax.random.fold_in(k[5], 1), (B, D)),
           "y_pair": jax.random.normal(jax.random.fold_in(k[5], 2), (B, D)),
           "cond_pair": jnp.zeros((B, 0))}
  return params, frozen, batch


def _cfg(method: str, divergence: str = "js"):
  cfg = defaults.toy()
  if method == "fdistill":
    cfg.method = fdistill.method_config(divergence=divergence)
  elif method == "dmd":
    cfg.method = dmd.method_config(fdistill.method_config())
  elif method == "sid":
    cfg.method = sid.method_config()
  elif method == "sim":
    cfg.method = sim.method_config()
  elif method == "kd":
    cfg.method = kd.method_config()
  elif method == "uni_instruct":
    cfg.method = uni_instruct.method_config(divergence=divergence)
  return cfg


METHODS = {"fdistill": fdistill, "dmd": dmd, "sid": sid, "sim": sim, "kd": kd,
           "uni_instruct": uni_instruct}
CASES = [("fdistill", "js"), ("fdistill", "rkl"), ("fdistill", "kl"), ("dmd", None),
         ("sid", None), ("sim", None), ("kd", None), ("uni_instruct", "fkl"),
         ("uni_instruct", "chi2")]


def _uses_disc(method):
  return method == "fdistill"


def _losses(method, divergence, nets, params, frozen, batch, key):
  """(generator loss, its gradient, critic loss, its gradient or None) of one method."""
  cfg = _cfg(method, divergence or "js")
  mod = METHODS[method]
  extras = mod.init_extras(cfg)
  gen = lambda p: mod.generator_loss(p, frozen, batch, key, extras, nets, cfg)[0]
  out = [gen(params), jax.grad(gen)(params)["generator"]]
  if mod.CRITIC_NETS:
    crit = lambda p: mod.critic_loss(p, frozen, batch, key, extras, nets, cfg)[0]
    out += [crit(params), jax.grad(crit)(params)]
  else:
    out += [None, None]
  return out


# ----------------------------------------------------------------------------- K = 1
@pytest.mark.parametrize("method,divergence", CASES)
def test_one_step_chain_is_the_one_step_generator_bit_for_bit(method, divergence):
  params, frozen, batch = _state()
  key = jax.random.PRNGKey(7)
  disc = _uses_disc(method)
  ref = _losses(method, divergence, _nets(None, disc), params, frozen, batch, key)
  for chain in (few_step.Chain((SIGMA_INIT,)), few_step.Chain((SIGMA_INIT,), source="rollout",
                                                               renoise="deterministic")):
    got = _losses(method, divergence, _nets(chain, disc), params, frozen, batch, key)
    for a, b in zip(jax.tree.leaves(ref), jax.tree.leaves(got)):
      np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_one_step_train_generate_is_g_at_sigma_init():
  params, _, batch = _state()
  z = batch["x"]
  key = jax.random.PRNGKey(3)
  want = _student(params["generator"], SIGMA_INIT * z, jnp.full((B,), SIGMA_INIT), None, key=key)
  for nets in (_nets(), _nets(few_step.Chain((SIGMA_INIT,)))):
    got = nets.train_generate(params["generator"], z, None, key=key,
                              chain_key=jax.random.PRNGKey(9), data=batch["x"])
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    np.testing.assert_array_equal(np.asarray(nets.generate(params["generator"], z, None, key=key)),
                                  np.asarray(want))


# ----------------------------------------------------------------------------- the chain
def _hand_chain(params, z, sigmas, renoise, noises):
  """States x^(1..K) and x0's of the chain, written out step by step."""
  states, x0s = [sigmas[0] * z], []
  for k, s in enumerate(sigmas):
    x = states[-1]
    x0 = _student(params, x, jnp.full((z.shape[0],), s), None)
    x0s.append(x0)
    if k + 1 < len(sigmas):
      if renoise == "stochastic":
        states.append(x0 + sigmas[k + 1] * noises[k])
      else:
        states.append(x0 + (sigmas[k + 1] / s) * (x - x0))
  return states, x0s


def _chain_noises(key, k_steps, shape):
  """The noises few_step.training_input draws (its key layout: positions, σ's, chain)."""
  _, _, k_chain = jax.random.split(key, 3)
  keys = jax.random.split(k_chain, 2 * k_steps)
  return [jax.random.normal(keys[k_steps + k], shape) for k in range(k_steps - 1)], keys


def _keyless_student(params, x, sigma, cond, *, key=None, features=False):
  del key
  return _student(params, x, sigma, cond, features=features)


@pytest.mark.parametrize("renoise", few_step.RENOISE)
@pytest.mark.parametrize("source", ["backward", "rollout"])
def test_training_input_is_the_hand_written_chain(source, renoise):
  params, _, batch = _state()
  z = batch["x"]
  chain = few_step.Chain(SIGMAS, source=source, renoise=renoise)
  key = jax.random.PRNGKey(0)  # Its B = 8 position draws hit all 4 positions.
  x_in, sigma_in, pos = few_step.training_input(_keyless_student, params["generator"], z, None,
                                                chain, key)
  noises, _ = _chain_noises(key, len(SIGMAS), z.shape)
  states, _ = _hand_chain(params["generator"], z, SIGMAS, renoise, noises)
  pos = np.asarray(pos)
  assert set(pos) == set(range(len(SIGMAS))), pos
  for i, k in enumerate(pos):
    np.testing.assert_allclose(np.asarray(x_in[i]), np.asarray(states[k][i]), rtol=1e-6, atol=1e-6)
    assert float(sigma_in[i]) == np.float32(SIGMAS[k])


def test_backward_chain_carries_no_gradient_and_rollout_does():
  params, _, batch = _state()
  z = batch["x"]
  key = jax.random.PRNGKey(11)

  def total(p, source):
    chain = few_step.Chain(SIGMAS, source=source)
    x_in, _, pos = few_step.training_input(_keyless_student, p, z, None, chain, key)
    return jnp.sum(x_in * (pos > 0)[:, None])  # Only rows that went through earlier steps.

  g_back = jax.grad(total)(params["generator"], "backward")
  g_roll = jax.grad(total)(params["generator"], "rollout")
  assert all(float(jnp.max(jnp.abs(g))) == 0.0 for g in jax.tree.leaves(g_back))
  assert max(float(jnp.max(jnp.abs(g))) for g in jax.tree.leaves(g_roll)) > 1e-3


@pytest.mark.parametrize("renoise", few_step.RENOISE)
def test_rollout_gradient_equals_finite_differences(renoise):
  with jax.enable_x64(True):
    params, _, batch = _state()
    p64 = jax.tree.map(lambda a: a.astype(jnp.float64), params["generator"])
    z = batch["x"].astype(jnp.float64)
    v = jax.random.normal(jax.random.PRNGKey(5), z.shape, jnp.float64)
    chain = few_step.Chain(SIGMAS[:3], source="rollout", renoise=renoise)
    nets = Nets(student=_keyless_student, teacher=_teacher, disc=None, sigma_init=SIGMA_INIT,
                data_shape=(D,), chain=chain)
    key = jax.random.PRNGKey(2)

    def f(p):  # A scalar of x_g = G(x_in(θ), σ_k): the gradient runs through the whole chain.
      return jnp.sum(nets.train_generate(p, z, None, chain_key=key) * v)

    grad = jax.grad(f)(p64)
    direction = jax.tree.map(lambda a: jax.random.normal(jax.random.PRNGKey(a.size), a.shape,
                                                         jnp.float64), p64)
    eps = 1e-6
    plus = jax.tree.map(lambda a, d: a + eps * d, p64, direction)
    minus = jax.tree.map(lambda a, d: a - eps * d, p64, direction)
    fd = (f(plus) - f(minus)) / (2 * eps)
    an = sum(jnp.sum(g * d) for g, d in zip(jax.tree.leaves(grad), jax.tree.leaves(direction)))
    assert abs(float(fd) - float(an)) <= 1e-7 * max(1.0, abs(float(an))), (float(fd), float(an))


def test_noised_data_input_is_forward_noised_data_and_noise_at_the_first_step():
  params, _, batch = _state()
  z, data = batch["x"], batch["y_pair"]
  chain = few_step.Chain(SIGMAS, source="noised_data")
  x_in, sigma_in, pos = few_step.training_input(_keyless_student, params["generator"], z, None,
                                                chain, jax.random.PRNGKey(4), data)
  for i, k in enumerate(np.asarray(pos)):
    want = SIGMAS[0] * z[i] if k == 0 else data[i] + SIGMAS[k] * z[i]
    np.testing.assert_allclose(np.asarray(x_in[i]), np.asarray(want), rtol=1e-6)
    assert float(sigma_in[i]) == np.float32(SIGMAS[k])
  with pytest.raises(ValueError, match="noised_data"):
    few_step.training_input(_keyless_student, params["generator"], z, None, chain,
                            jax.random.PRNGKey(4))


@pytest.mark.parametrize("renoise", few_step.RENOISE)
def test_sampling_is_the_hand_written_chain(renoise):
  params, _, batch = _state()
  z = batch["x"]
  nets = _nets(few_step.Chain(SIGMAS, renoise=renoise))
  nk = jax.random.PRNGKey(21)
  got = nets.generate(params["generator"], z, None, noise_key=nk)
  keys = jax.random.split(nk, len(SIGMAS))
  noises = [jax.random.normal(keys[k], z.shape) for k in range(len(SIGMAS) - 1)]
  _, x0s = _hand_chain(params["generator"], z, SIGMAS, renoise, noises)
  np.testing.assert_allclose(np.asarray(got), np.asarray(x0s[-1]), rtol=1e-6, atol=1e-6)
  if renoise == "stochastic":
    with pytest.raises(ValueError, match="noise_key"):
      nets.generate(params["generator"], z, None)


def test_random_schedule_keeps_sigma_1_and_draws_a_decreasing_list():
  chain = few_step.Chain(SIGMAS, schedule="random", sigma_min=0.002)
  a = np.asarray(few_step.training_sigmas(jax.random.PRNGKey(0), chain))
  b = np.asarray(few_step.training_sigmas(jax.random.PRNGKey(1), chain))
  for s in (a, b):
    assert s[0] == np.float32(SIGMAS[0]) and np.all(np.diff(s) < 0) and s[-1] >= 0.002
  assert not np.allclose(a[1:], b[1:])
  fixed = few_step.Chain(SIGMAS)
  np.testing.assert_array_equal(few_step.training_sigmas(jax.random.PRNGKey(0), fixed),
                                np.float32(SIGMAS))


# ----------------------------------------------------------------------------- every method
@pytest.mark.parametrize("source", few_step.SOURCES)
@pytest.mark.parametrize("method,divergence", CASES)
def test_every_method_trains_a_few_step_student(method, divergence, source):
  """Finite losses; the generator's gradient differs from the one-step student's (its x_g comes
  from the chain) and the critic's too (it learns the K-step student's outputs)."""
  params, frozen, batch = _state()
  key = jax.random.PRNGKey(7)
  disc = _uses_disc(method)
  one = _losses(method, divergence, _nets(None, disc), params, frozen, batch, key)
  few = _losses(method, divergence, _nets(few_step.Chain(SIGMAS, source=source), disc), params,
                frozen, batch, key)
  assert np.isfinite(float(few[0])) and all(np.all(np.isfinite(g)) for g in jax.tree.leaves(few))
  g1, gk = jax.tree.leaves(one[1]), jax.tree.leaves(few[1])
  assert max(float(jnp.max(jnp.abs(g))) for g in gk) > 0
  assert any(not np.allclose(a, b) for a, b in zip(g1, gk))
  if few[2] is not None:
    assert float(few[2]) != float(one[2])


def test_loss_with_a_batch_sharded_over_8_devices_equals_one_device():
  devices = jax.devices()
  if len(devices) < 8:
    pytest.skip("needs 8 devices (tests/conftest.py sets 8 fake CPU devices)")
  params, frozen, batch = _state()
  cfg = _cfg("fdistill")
  nets = _nets(few_step.Chain(SIGMAS, source="backward"), disc=True)
  extras = fdistill.init_extras(cfg)
  key = jax.random.PRNGKey(7)

  @jax.jit
  def step(p, b):
    loss_fn = lambda q: fdistill.generator_loss(q, frozen, b, key, extras, nets, cfg)
    (loss, (_, new_extras)), grad = jax.value_and_grad(loss_fn, has_aux=True)(p)
    return loss, grad["generator"], new_extras["bins"]

  one = step(params, batch)
  mesh = Mesh(np.asarray(devices[:8]), ("data",))
  sharded = jax.device_put(batch, NamedSharding(mesh, P("data")))
  many = step(params, sharded)
  for a, b in zip(jax.tree.leaves(one), jax.tree.leaves(many)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-7)


# ----------------------------------------------------------------------------- config
def _check(cfg):
  config_checks.check(cfg, num_devices=8)


def test_default_config_is_one_step_and_valid():
  cfg = defaults.image()
  assert tuple(cfg.few_step.sigmas) == () and few_step.from_config(cfg) is None
  _check(cfg)
  cfg.few_step.sigmas = (80.0, 2.0)
  _check(cfg)
  assert few_step.from_config(cfg).steps == 2


@pytest.mark.parametrize("field,value,match", [
    ("sigmas", (40.0, 2.0), "sigma_init"),
    ("sigmas", (80.0, 2.0, 3.0), "decreasing"),
    ("sigmas", (80.0, 0.001), "sigma_min"),
    ("sigmas", (80.0, float("nan")), "finite"),
    ("source", "backwards", "allowed"),
    ("renoise", "ddim", "allowed"),
    ("schedule", "per_sample", "allowed"),
])
def test_config_errors_name_the_few_step_field(field, value, match):
  cfg = defaults.image()
  cfg.few_step.sigmas = (80.0, 2.0)
  cfg.few_step[field] = value
  with pytest.raises(config_checks.ConfigError, match=rf"few_step\.{field}") as e:
    _check(cfg)
  assert match in str(e.value)


def test_noised_data_needs_data():
  cfg = defaults.t2i()
  cfg.dataset.name = "prompts"
  cfg.diffusion.sigma_init = 80.0
  cfg.few_step.update(dict(sigmas=(80.0, 2.0), source="noised_data"))
  with pytest.raises(config_checks.ConfigError, match=r"few_step\.source") as e:
    few_step.check_config(cfg)
  assert "no data to noise" in str(e.value)
  cfg.few_step.source = "backward"
  few_step.check_config(cfg)


def test_progressive_distillation_keeps_its_own_schedule():
  from fdistill_jax.methods import progressive  # pylint: disable=import-outside-toplevel
  cfg = defaults.image()
  cfg.method = progressive.method_config() if hasattr(progressive, "method_config") else cfg.method
  cfg.method.name = "progressive"
  assert not progressive.FEW_STEP_STUDENTS
  cfg.few_step.sigmas = (80.0, 2.0)
  with pytest.raises(config_checks.ConfigError, match="few_step.sigmas"):
    few_step.check_config(cfg, allow_steps=False)


# ----------------------------------------------------------------------------- end to end
@pytest.mark.slow
def test_two_step_toy_student_moves_toward_the_teacher(tmp_path):
  """f-distill JS with a 2-step student trained by backward simulation on the exact 8-mode
  mixture: its 2-step samples get closer to the teacher (sliced Wasserstein, log-likelihood)."""
  from tests.test_methods_dmd import short_run  # pylint: disable=import-outside-toplevel
  from tests.test_toy_engine import tiny_cfg  # pylint: disable=import-outside-toplevel
  # 400 steps: the student's SW wanders by ±0.03 between evaluations; at 300 steps it stood at
  # 0.53 or 0.64 of the start depending on the pretrained denoiser's last-bit numerics (one or
  # eight host devices); at 400, 0.40 and 0.48.
  cfg = tiny_cfg(steps=400, batch_size=128, log_every=100, ckpt_every=0)
  cfg.pretrain.steps = 400
  cfg.few_step.sigmas = (80.0, 1.0)
  init, student, _, run = short_run(cfg, tmp_path)
  assert run.exp.nets.steps == 2
  assert student["sw"] < 0.6 * init["sw"], (student["sw"], init["sw"])
  assert student["mean_log_prob"] > init["mean_log_prob"] + 1.0


def test_summary_names_the_students_step_count():
  from fdistill_jax.engine import progress  # pylint: disable=import-outside-toplevel
  final = {"step": 5, "student_steps": 4, "student": {"fd": 1.0},
           "student_raw": {"fd": 2.0}, "teacher_nfe35": {"fd": 0.5}}
  text = progress.summary(final, {})
  assert "student (4 steps)" in text and "student raw params (4 steps)" in text
  assert "student (1 step)" in progress.summary({"student": {"fd": 1.0}}, {})
  text = progress.summary({"student": {"fd": 1.0}, "teacher_nfe4_unguided": {"fd": 2.0}}, {})
  assert "teacher (4 NFE, unguided)" in text


def test_pixart512_dmd2_4step_builds_and_traces(files):  # noqa: F811
  """The 4-step PixArt recipe (tiny PixArt override, as tests/test_t2i_engine.py) builds a
  4-step student at DMD2's timesteps and traces both steps (no compile)."""
  from tests.test_t2i_engine import build_and_trace, config  # pylint: disable=import-outside-toplevel
  exp = build_and_trace(config("pixart512_dmd2_4step", files))
  assert exp.nets.steps == 4
  np.testing.assert_allclose(exp.nets.chain.sigmas, defaults.sd_sigmas((999, 749, 499, 249)))


def test_digits_t2i_4step_recipe_is_the_measured_one():
  """configs/digits_t2i_js_4step.py trains at w = 1.2 for 1,200 iterations and is scored against
  the teacher at 1.5, the settings its docstring's figures were measured with (BENCHMARKS.md)."""
  cfg = testing.shipped_config("digits_t2i_js_4step")
  assert cfg.method.guidance_scale == defaults.DIGITS_T2I_4STEP_GUIDANCE == 1.2
  assert cfg.train.steps == 1200
  assert cfg.eval.guidance_scale == defaults.DIGITS_T2I_GUIDANCE == 1.5
  assert cfg.few_step.source == "backward" and len(cfg.few_step.sigmas) == 4
