"""Progressive distillation: nested grids, the two-step target, and rounds 4 → 2 → 1 on the toy.

The toy check: after the round 4 → 2 (teacher = the exact mixture denoiser sampled with 4
Euler/DDIM steps), the 2-step student's samples from the same noise are closer (RMSE per noise
draw) to the teacher's 4-step samples than the teacher's own 2-step samples are. Samples are computed here with an independent
numpy Euler sampler on the nested Karras grid. The teacher is a 2-mode mixture with wide modes, so
that 2 and 4 steps differ by much more than the precision a tiny student reaches in a hundred
steps (on the 8-mode ring with σ = 0.1 they differ by only ≈0.11 RMSE).
"""
import functools
import os

import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fdistill_jax import config_checks, fileio, testing
from fdistill_jax.experiments import toy
from fdistill_jax import pd_rounds
from fdistill_jax.methods import progressive
from fdistill_jax.models.mlp import MLPDenoiser
from tests.test_toy_engine import tiny_cfg


def _karras(n, smin=0.002, smax=80.0, rho=7.0):
  i = np.arange(n) / max(n - 1, 1)
  return np.append((smax ** (1 / rho) + i * (smin ** (1 / rho) - smax ** (1 / rho))) ** rho, 0.0)


def test_nested_grids():
  g4 = progressive.nested_grid(4, 4, 0.002, 80.0)
  np.testing.assert_allclose(g4, _karras(4), rtol=1e-12)
  np.testing.assert_allclose(progressive.nested_grid(4, 2, 0.002, 80.0), g4[::2])
  np.testing.assert_allclose(progressive.nested_grid(4, 1, 0.002, 80.0), [80.0, 0.0])
  with pytest.raises(ValueError, match="power of 2"):
    progressive.nested_grid(6, 3, 0.002, 80.0)
  with pytest.raises(ValueError, match="student_steps=3"):
    progressive.nested_grid(8, 3, 0.002, 80.0)


def test_target_makes_one_step_land_on_two_teacher_steps():
  teacher = lambda x, s: jnp.tanh(x) * 0.8 + 0.1 * x / (1 + jnp.reshape(s, (-1, 1)))
  x = jax.random.normal(jax.random.PRNGKey(0), (5, 2)) * 3.0
  for s_t, s_mid, s_next in ((3.0, 1.0, 0.4), (0.5, 0.1, 0.0)):
    s = lambda v: jnp.full((5,), v)
    target = progressive.pd_target(teacher, x, s(s_t), s(s_mid), s(s_next))
    d1 = teacher(x, s(s_t))
    z1 = d1 + s_mid / s_t * (x - d1)
    d2 = teacher(z1, s(s_mid))
    z2 = d2 + s_next / s_mid * (z1 - d2)
    np.testing.assert_allclose(target + s_next / s_t * (x - target), z2, rtol=1e-5, atol=1e-5)


def _euler(denoise, z, grid):
  """Euler samples; denoise(x, σ) is compiled by the caller (one program, not its ops one by one;
  testing.compile_fast)."""
  x = grid[0] * np.asarray(z, np.float64)
  for s, s_next in zip(grid[:-1], grid[1:]):
    d = np.asarray(denoise(jnp.asarray(x, jnp.float32), jnp.full((len(x),), s, jnp.float32)))
    x = d + s_next / s * (x - d)
  return x


@pytest.mark.slow
def test_rounds_halve_steps_and_beat_the_teacher_at_equal_steps(tmp_path):
  # 120 steps per round: round 0's student is as close to the teacher's 4 steps as after 250
  # (RMSE ratios to the teacher's 2 steps 0.130, 0.140 and to the init 0.267, 0.249 with seeds
  # 0, 1; 0.116, 0.152 and 0.238, 0.271 after 250 steps; both thresholds 0.5).
  cfg = tiny_cfg(steps=120, batch_size=128, log_every=50, ckpt_every=0)
  cfg.pretrain.steps = 400
  cfg.method = progressive.method_config(pd_base_steps=4, pd_final_steps=1)
  cfg.disc.enabled = False
  # Nothing below reads a round's final evaluation (student and teacher samplers, scores, plots):
  # the rounds are compared by their saved students, sampled here.
  cfg.train.update(dict(final_eval=False, tensorboard=False))
  # Two wide modes: here 2 and 4 Euler steps differ by far more than a tiny student's error.
  cfg.teacher.update(dict(num_modes=2, scale=0.5, weights=(1.0, 2.0)))
  config_checks.check(cfg)
  one = jax.devices()[:1]  # What PD learns; sharding has its own equality tests.
  rounds = pd_rounds.run_rounds(cfg, str(tmp_path), devices=one)
  assert [r["steps"] for r in rounds] == [2, 1]
  assert rounds[1]["teacher_params"] == rounds[0]["params"]
  # The root holds the pretrained init round 0 made, so a benchmark can reuse it for other runs.
  assert os.path.exists(tmp_path / "pretrained_denoiser.msgpack")
  for r in rounds:
    assert (tmp_path / f"round{r['round']}_{r['steps']}steps" / "checkpoints").is_dir()
  gmm = toy.make_mixture(cfg.teacher)
  module = MLPDenoiser(dim=2, hidden=cfg.student.hidden, depth=cfg.student.depth,
                       sigma_data=cfg.diffusion.sigma_data)
  student = flax.serialization.msgpack_restore(fileio.read_cache(
      rounds[0]["params"], progressive.student_key(cfg, 2)))
  template = jax.tree.map(np.asarray, student)
  init_params = toy.read_pretrained(tmp_path / "round0_2steps" / "pretrained_denoiser.msgpack",
                                    template, toy.cache_key(cfg))
  z = np.asarray(jax.random.normal(jax.random.PRNGKey(42), (2048, 2)))
  grid4 = _karras(4)
  xs = jax.ShapeDtypeStruct(z.shape, jnp.float32)
  ss = jax.ShapeDtypeStruct(z.shape[:1], jnp.float32)
  exact = testing.compile_fast(jax.jit(gmm.denoise).lower(xs, ss))
  apply = testing.compile_fast(jax.jit(lambda p, x, s: module.apply({"params": p}, x, s)).lower(
      student, xs, ss))  # The init's params share it (same shapes).
  teacher4 = _euler(exact, z, grid4)
  teacher2 = _euler(exact, z, grid4[::2])
  student2 = _euler(functools.partial(apply, student), z, grid4[::2])
  init = _euler(functools.partial(apply, init_params), z, grid4[::2])
  rmse = lambda a: float(np.sqrt(np.mean(np.sum((a - teacher4) ** 2, 1))))
  assert rmse(student2) < 0.5 * rmse(teacher2), (rmse(student2), rmse(teacher2))
  assert rmse(student2) < 0.5 * rmse(init), (rmse(student2), rmse(init))
  # A rerun finds every round finished and trains nothing.
  again = pd_rounds.run_rounds(cfg, str(tmp_path), devices=one)
  assert [r["params"] for r in again] == [r["params"] for r in rounds]


@pytest.mark.parametrize("field,value,match", [
    ("pd_base_steps", 6, "power of 2"), ("student_steps", 3, "must divide"),
    ("prediction", "eps", "allowed")])
def test_pd_config_errors_name_the_field(field, value, match):
  cfg = tiny_cfg()
  cfg.method = progressive.method_config()
  cfg.disc.enabled = False
  cfg.method[field] = value
  with pytest.raises(config_checks.ConfigError, match=rf"method\.{field}") as e:
    config_checks.check(cfg, num_devices=8)
  assert match in str(e.value)


def test_v_prediction_loss_is_snr_plus_one_weighted_x_loss():
  """‖v̂ − ṽ‖² = (σ² + σ_d²)/(σ σ_d)²·‖x̂ − x̃‖² = (SNR + 1)/σ_d² · ‖x̂ − x̃‖² (SNR = σ_d²/σ²)."""
  from fdistill_jax.nets import Nets
  student = lambda p, x, s, l, key=None, features=False: jnp.tanh(x * p["a"])
  teacher = lambda f, x, s, l, features=False: 0.5 * x / (1.0 + jnp.reshape(s, (-1, 1)))
  nets = Nets(student=student, teacher=teacher, disc=None, sigma_init=80.0, data_shape=(2,))
  cfg = tiny_cfg()
  cfg.method = progressive.method_config(pd_base_steps=8, student_steps=4)
  batch = {"x": jax.random.normal(jax.random.PRNGKey(0), (64, 2)), "cond": jnp.zeros((64, 0))}
  params = {"generator": {"a": jnp.array(0.7)}}
  losses = {}
  for pred, weighting in (("v", "none"), ("x", "snr_plus_one")):
    cfg.method.update(prediction=pred, weighting=weighting)
    losses[pred] = float(progressive.generator_loss(params, {}, batch, jax.random.PRNGKey(1), {},
                                                    nets, cfg)[0])
  np.testing.assert_allclose(losses["v"], losses["x"] / cfg.diffusion.sigma_data ** 2, rtol=1e-4)


def test_a_preempted_round_is_not_saved_as_the_next_teacher(tmp_path, monkeypatch):
  cfg = tiny_cfg(steps=10)
  cfg.method = progressive.method_config(pd_base_steps=4, pd_final_steps=1)
  cfg.disc.enabled = False
  monkeypatch.setattr(pd_rounds.compose, "train",
                      lambda rcfg, rdir, devices=None: {"preempted_at": 3})
  with pytest.raises(pd_rounds.RoundInterrupted, match=r"round 0 \(2 steps\) stopped at step 3"):
    pd_rounds.run_rounds(cfg, str(tmp_path))
  assert not os.path.exists(tmp_path / "round0_2steps" / "student.msgpack")


def test_round_schedule_halves_down_to_the_final_steps():
  m = progressive.method_config(pd_base_steps=16, pd_final_steps=1)
  assert progressive.round_steps(m) == [8, 4, 2, 1]
  assert progressive.round_steps(progressive.method_config(pd_base_steps=8, pd_final_steps=2)) == [4, 2]
  with pytest.raises(ValueError, match="pd_final_steps=3 must divide"):
    progressive.round_steps(progressive.method_config(pd_base_steps=8, pd_final_steps=3))


def test_student_file_is_verified_and_a_damaged_one_is_rebuilt(tmp_path, monkeypatch):
  """student.msgpack (a round's student, the next round's teacher) is a fileio cache: a flipped
  byte or another round's file is refused by load_params, and run_rounds runs that round again
  (here a stub of compose.train / load_trained) and re-exports it instead of using it."""
  cfg = tiny_cfg(steps=10)
  cfg.method = progressive.method_config(pd_base_steps=4, pd_final_steps=1)
  cfg.disc.enabled = False
  params = {"dense": {"kernel": np.arange(6, dtype=np.float32).reshape(2, 3),
                      "bias": np.ones(3, np.float32)}}
  path = str(tmp_path / "student.msgpack")
  progressive.save_params(path, params, progressive.student_key(cfg, 2))
  got = progressive.load_params(path, params, progressive.student_key(cfg, 2))
  np.testing.assert_array_equal(got["dense"]["kernel"], params["dense"]["kernel"])
  with pytest.raises(fileio.CacheError, match="other settings"):  # Another round's student.
    progressive.load_params(path, params, progressive.student_key(cfg, 1))
  with pytest.raises(ValueError, match="shape"):  # The structure/shape checks stay.
    progressive.load_params(path, {"dense": {"kernel": np.zeros((3, 2)), "bias": np.zeros(3)}},
                            progressive.student_key(cfg, 2))
  data = bytearray(open(path, "rb").read())
  data[-5] ^= 0x01  # Inside the payload (the envelope's last field).
  open(path, "wb").write(bytes(data))
  with pytest.raises(fileio.CacheError, match="sha256"):
    progressive.load_params(path, params, progressive.student_key(cfg, 2))

  # run_rounds: round 0's damaged student is re-exported, round 1's sound one is kept.
  rdir0, rdir1 = tmp_path / "run" / "round0_2steps", tmp_path / "run" / "round1_1steps"
  os.makedirs(rdir0)
  os.makedirs(rdir1)
  open(rdir0 / "student.msgpack", "wb").write(bytes(data))
  progressive.save_params(str(rdir1 / "student.msgpack"), params,
                          progressive.student_key(cfg, 1))
  trained = []
  monkeypatch.setattr(pd_rounds.compose, "train",
                      lambda rcfg, rdir, devices=None: trained.append(rdir) or {})
  monkeypatch.setattr(pd_rounds.compose, "load_trained", lambda rcfg, rdir: (None, {}))
  monkeypatch.setattr(pd_rounds.compose, "generator_params", lambda state, which: params)
  rounds = pd_rounds.run_rounds(cfg, str(tmp_path / "run"))
  assert trained == [str(rdir0)]
  for r in rounds:
    progressive.load_params(r["params"], params, progressive.student_key(cfg, r["steps"]))
