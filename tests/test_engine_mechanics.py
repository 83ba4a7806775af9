"""Engine mechanics: gradient accumulation, non-finite steps, checkpoint safety, mesh changes."""
import types

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from fdistill_jax.engine import checkpoint as ckpt_lib
from fdistill_jax import compose, config_defaults
from fdistill_jax.engine import loop, state as state_lib, steps as steps_lib
from fdistill_jax.testing import engine_config
from tests.test_toy_engine import tiny_cfg


def _quadratic_method():
  """A deterministic least-squares 'method' so accumulation must match the full batch exactly."""
  def generator_loss(params, frozen, batch, key, extras, nets, cfg):
    del frozen, key, nets, cfg
    pred = batch["x"] @ params["generator"]["w"]
    loss = jnp.mean((pred - batch["y"]) ** 2)
    return loss, ({"mse": loss}, extras)
  return types.SimpleNamespace(GENERATOR_NETS=("generator",), CRITIC_NETS=(),
                               generator_loss=generator_loss, critic_loss=None)


def _cfg(accum):
  # optim.generator: the (resolved) options of the generator's optimizer, here optax.sgd.
  return engine_config(seed=0, train=dict(grad_accum=accum), optim=dict(generator={}))


def test_gradient_accumulation_equals_full_batch():
  rng = np.random.default_rng(0)
  batch = {"x": jnp.asarray(rng.normal(size=(16, 3)), jnp.float32),
           "y": jnp.asarray(rng.normal(size=(16, 2)), jnp.float32)}
  params = {"generator": {"w": jnp.asarray(rng.normal(size=(3, 2)), jnp.float32)}}
  txs = {"generator": optax.sgd(0.1)}
  outs = []
  for accum in (1, 4):
    st = state_lib.init_state(params, txs, {}, (0.9,))
    step = jax.jit(steps_lib.make_step(_quadratic_method(), None, txs, _cfg(accum), "generator"))
    new, m = step(st, {}, batch)
    outs.append((new, m))
  np.testing.assert_allclose(outs[0][0]["params"]["generator"]["w"],
                             outs[1][0]["params"]["generator"]["w"], rtol=1e-6, atol=1e-7)
  np.testing.assert_allclose(outs[0][1]["generator/loss"], outs[1][1]["generator/loss"], rtol=1e-6)
  with pytest.raises(ValueError, match="not divisible by grad_accum=3"):
    jax.jit(steps_lib.make_step(_quadratic_method(), None, txs, _cfg(3), "generator"))(
        state_lib.init_state(params, txs, {}, (0.9,)), {}, batch)


@pytest.mark.parametrize("rampup", [0.0, 0.3])
def test_ema_rampup_is_edms_halflife_rule(rampup):
  """train.ema_rampup: each generator update n (1-based) blends with β_n computed as EDM / SiD /
  FastGen's 'halflife' EMA does, in images: half-life = min(H, n·B·r), β = ½^(B / half-life),
  with H the half-life of the track's constant β. rampup 0 keeps the constant β."""
  rng = np.random.default_rng(1)
  batch = {"x": jnp.asarray(rng.normal(size=(8, 3)), jnp.float32),
           "y": jnp.asarray(rng.normal(size=(8, 2)), jnp.float32)}
  params = {"generator": {"w": jnp.asarray(rng.normal(size=(3, 2)), jnp.float32)}}
  cfg = engine_config(
      seed=0, train=dict(grad_accum=1, ema_rampup=rampup),
      optim=dict(generator=dict(lr=0.05, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.0, clip=0.0)))
  txs = {"generator": state_lib.make_optimizer(cfg, "generator")}
  decays = (0.9, 0.5)
  st = state_lib.init_state(params, txs, {}, decays)
  step = jax.jit(steps_lib.make_step(_quadratic_method(), None, txs, cfg, "generator"))
  B = batch["x"].shape[0]
  want = {d: np.asarray(params["generator"]["w"], np.float64) for d in decays}
  for n in range(1, 9):
    st, _ = step(st, {}, batch)
    w = np.asarray(st["params"]["generator"]["w"], np.float64)
    for d in decays:
      halflife = B * np.log(0.5) / np.log(d)
      if rampup:
        halflife = min(halflife, n * B * rampup)
      beta = 0.5 ** (B / halflife)
      want[d] = beta * want[d] + (1 - beta) * w
  assert int(state_lib.update_count(st["opt"]["generator"])) == 8
  for d in decays:
    np.testing.assert_allclose(st["ema"][state_lib.ema_key(d)]["w"], want[d], rtol=1e-5, atol=1e-6)
  if rampup:  # The ramp-up forgets the initial weights faster than the constant track.
    assert np.abs(want[0.9] - np.asarray(params["generator"]["w"])).max() > 0.05


def test_cosine_schedule_counts_each_networks_own_updates():
  """schedule='cosine' decays lr to end_lr_ratio·lr over the updates the network gets: 3 of 10
  iterations for the generator and 7 for a critic at critic_steps 3 (FastGen's schedule)."""
  assert [state_lib.num_updates(10, 3, g) for g in (True, False)] == [3, 7]
  assert state_lib.num_updates(10, None, True) == 10
  cfg = engine_config(optim=dict(g=dict(
      lr=1.0, b1=0.0, b2=0.0, eps=1e-12, weight_decay=0.0, clip=0.0, schedule="cosine",
      end_lr_ratio=0.1)))
  tx = state_lib.make_optimizer(cfg, "g", num_updates=4)
  p, steps = jnp.zeros(()), []
  st = tx.init(p)
  for _ in range(5):  # b1 = b2 = 0: each Adam step is -lr(t) · sign(grad).
    upd, st = tx.update(jnp.ones(()), st, p)
    steps.append(-float(upd))
  want = [0.1 + 0.9 * 0.5 * (1 + np.cos(np.pi * min(t, 4) / 4)) for t in range(5)]
  np.testing.assert_allclose(steps, want, rtol=1e-6)
  with pytest.raises(ValueError, match="optim.g.schedule='linear'"):
    cfg.optim.g.schedule = "linear"
    state_lib.make_optimizer(cfg, "g", 4)


def test_engine_gives_each_network_its_update_count():
  cfg = config_defaults.resolve(tiny_cfg())  # As compose resolves it: loop._build reads it.
  cfg.train.steps, cfg.method.critic_steps = 8, 3
  for net in cfg.optim:
    cfg.optim[net].update(dict(schedule="cosine", end_lr_ratio=0.0, b1=0.0))
  exp = types.SimpleNamespace(init_params=lambda key: {
      n: {"w": jnp.zeros((2,))} for n in ("generator", "fake_score", "teacher")})
  method = types.SimpleNamespace(GENERATOR_NETS=("generator",), CRITIC_NETS=("fake_score",),
                                 init_extras=lambda cfg: {})
  _, _, txs, init, key = loop._build(cfg, lambda: (exp, method))
  state = init(key)
  counts = {n: state_lib.num_updates(8, 3, n in method.GENERATOR_NETS) for n in txs}
  assert counts == {"generator": 2, "fake_score": 6}
  phases = [loop._phase_of(k, method, cfg) for k in range(8)]  # the loop's own schedule.
  assert counts == {"generator": phases.count("generator"), "fake_score": phases.count("critic")}
  for n, tx in txs.items():  # after num_updates steps the learning rate is end_lr_ratio·lr = 0.
    p = state["params"][n]
    st = tx.init(p)
    ones = jax.tree.map(jnp.ones_like, p)
    for _ in range(counts[n]):
      _, st = tx.update(ones, st, p)
    upd, _ = tx.update(ones, st, p)
    assert max(float(jnp.abs(u).max()) for u in jax.tree.leaves(upd)) == 0.0, n


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory):
  cfg = tiny_cfg()
  cfg.pretrain.steps = 50
  cfg.student.hidden = cfg.disc.hidden = 32
  wd = tmp_path_factory.mktemp("mech")
  run = compose.Run(cfg, str(wd), devices=jax.devices()[:1], restore=False)
  run.step(0)
  run.step(1)
  return cfg, wd, run


def test_nonfinite_step_is_skipped_and_counted(toy_run):
  _, _, run = toy_run
  before = jax.device_get(run.state)
  bad = {"x": jnp.full((64, 2), jnp.nan), "cond": jnp.zeros((64, 0))}
  new, m = run.compiled["critic"](run.state, run.frozen, bad)
  new = jax.device_get(new)
  assert float(m["critic/skipped"]) == 1.0
  assert int(new["nonfinite"]["total"]) == 1 and int(new["nonfinite"]["streak"]) == 1
  for a, b in zip(jax.tree.leaves(before["params"]), jax.tree.leaves(new["params"])):
    np.testing.assert_array_equal(a, b)
  assert int(new["step"]) == int(before["step"]) + 1


def test_nonfinite_state_is_never_checkpointed(toy_run, tmp_path):
  _, _, run = toy_run
  ck = ckpt_lib.Checkpointer(str(tmp_path), async_save=False)
  ck.save(2, run.state)
  bad = jax.tree.map(lambda x: x, jax.device_get(run.state))
  bad["params"]["generator"]["out"]["bias"] = np.full_like(
      bad["params"]["generator"]["out"]["bias"], np.nan)
  with pytest.raises(ckpt_lib.NonFiniteStateError, match="refusing to checkpoint step 3"):
    ck.save(3, bad)
  assert ck.latest_step() == 2
  ck.close()


def test_checkpoint_restores_onto_a_different_mesh(toy_run):
  cfg, wd, run = toy_run
  run.ckpt.save(2, run.state, run.exp.data_state(), force=True)
  run.ckpt.wait()
  cfg = ml_collections.ConfigDict(cfg.to_dict())
  cfg.mesh.data, cfg.mesh.fsdp = 2, 4
  # load_trained restores as a resumed Run does (same layout, same verification), onto the
  # default mesh of all 8 devices, without compiling the train steps.
  _, other = compose.load_trained(cfg, str(wd))
  assert int(other["step"]) == 2
  assert other["params"]["fake_score"]["inp"]["kernel"].sharding.mesh.shape["fsdp"] == 4
  for a, b in zip(jax.tree.leaves(jax.device_get(run.state)),
                  jax.tree.leaves(jax.device_get(other))):
    np.testing.assert_array_equal(a, b)


# ------------------------------------------------ never start over past unverifiable steps
def _resume_args(tmp_path, **train):
  from tests.test_checkpoint_integrity import ABSTRACT, _state
  d = str(tmp_path / "checkpoints")
  ck = ckpt_lib.Checkpointer(d, 3, async_save=False)
  for s in (1, 2):
    ck.save(s, _state(s), {"pos": s})
  sh = jax.tree.map(lambda _: jax.sharding.SingleDeviceSharding(jax.devices()[0]), ABSTRACT)
  exp = types.SimpleNamespace(restore_data=lambda data: None)
  cfg = engine_config(train=dict(train))
  return ck, d, (ck, cfg, ABSTRACT, sh, exp)


def test_no_silent_restart_when_every_step_was_set_aside(tmp_path):
  import os
  import shutil
  ck, d, args = _resume_args(tmp_path)
  for s in ("1", "2"):
    shutil.rmtree(os.path.join(d, s, "state"))
  with pytest.raises(ckpt_lib.NoVerifiedCheckpointError, match="restart_from_scratch=True"):
    loop._resumed_state(*args)  # Moves both to corrupt/ and stops.
  # The next attempt finds no step at all, and still refuses to start over.
  with pytest.raises(ckpt_lib.NoVerifiedCheckpointError, match=r"moved steps \['1', '2'\] to .*corrupt"):
    loop._resumed_state(*args)
  fresh = (ck, engine_config(train=dict(restart_from_scratch=True)), *args[2:])
  assert loop._resumed_state(*fresh) is None  # Asked for: start from step 0.
  ck.close()


def test_unrecorded_steps_stop_the_run_or_are_adopted_or_set_aside(tmp_path):
  import os
  import shutil
  ck, d, args = _resume_args(tmp_path)
  for s in ("1", "2"):
    shutil.rmtree(os.path.join(d, s, "integrity"))
  with pytest.raises(ckpt_lib.NoVerifiedCheckpointError, match="adopt_unverified_checkpoints"):
    loop._resumed_state(*args)
  adopt = engine_config(train=dict(adopt_unverified_checkpoints=True))
  assert int(loop._resumed_state(ck, adopt, *args[2:])["step"]) == 2
  shutil.rmtree(os.path.join(d, "2", "integrity"))  # Step 1 was never adopted (2 was enough).
  fresh = engine_config(train=dict(restart_from_scratch=True))
  assert loop._resumed_state(ck, fresh, *args[2:]) is None
  assert sorted(os.listdir(os.path.join(d, "corrupt"))) == ["1", "2"]  # Kept, out of the way.
  assert ck.latest_step() is None
  ck.close()


@pytest.mark.parametrize("field", ["restart_from_scratch", "adopt_unverified_checkpoints"])
def test_recovery_flags_must_be_bools(field):
  from fdistill_jax import config_checks
  cfg = tiny_cfg()
  config_checks.check(cfg)
  raw = cfg.to_dict()  # Around ConfigDict's own type lock, as a hand-built config would be.
  raw["train"][field] = 1
  cfg = ml_collections.ConfigDict(raw)
  with pytest.raises(config_checks.ConfigError, match=f"train.{field}"):
    config_checks.check(cfg)
