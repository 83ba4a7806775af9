"""optim.<net>.nan_to_num and optim.<net>.clip_value (engine/state.make_optimizer): the official
Uni-Instruct trainer's gradient repair and elementwise clip. Off, the optimizer is the plain optax
chain it was; on, it is optax.adamw applied to the hand-repaired gradient; a step whose gradient
the optimizer repairs is applied, not skipped; bad values are refused naming the field."""
import types

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from fdistill_jax import config_checks, defaults
from fdistill_jax.engine import state as state_lib, steps as steps_lib
from fdistill_jax.testing import engine_config

ADAM = dict(lr=1e-2, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.01)


def _cfg(**extra) -> ml_collections.ConfigDict:
  """A resolved config (the engine reads every optional field): those `extra` leaves out take
  their defaults, as config_defaults.resolve gives them to a run's config."""
  return engine_config(seed=0, train=dict(grad_accum=1), optim=dict(
      generator=dict(**ADAM, clip=0.0, **extra)))


def _grads(k: int):
  rng = np.random.default_rng(k)
  return {"a": jnp.asarray(rng.normal(size=(3, 4)) * 3, jnp.float32),
          "b": jnp.asarray(rng.normal(size=(5,)), jnp.float32)}


def _run(tx, params, grads_seq):
  st, out = tx.init(params), []
  for g in grads_seq:
    upd, st = tx.update(g, st, params)
    params = optax.apply_updates(params, upd)
    out.append(params)
  return out, st


@pytest.mark.parametrize("extra", [{}, dict(nan_to_num=False, clip_value=0.0)])
def test_options_off_are_the_plain_chain_bit_for_bit(extra):
  params = _grads(0)
  seq = [_grads(k) for k in range(1, 4)]
  for clip in (0.0, 1.5):
    cfg = _cfg(**extra)
    cfg.optim.generator.clip = clip
    got, st = _run(state_lib.make_optimizer(cfg, "generator"), params, seq)
    plain = optax.adamw(ADAM["lr"], b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.01)
    want, want_st = _run(optax.chain(*([optax.clip_by_global_norm(clip)] if clip else []), plain),
                         params, seq)
    assert jax.tree.structure(st) == jax.tree.structure(want_st)  # Same state: checkpoints load.
    for g, w in zip(got, want):
      jax.tree.map(lambda x, y: np.testing.assert_array_equal(np.asarray(x), np.asarray(y)), g, w)


def test_options_on_are_adamw_of_the_repaired_clipped_gradient():
  params = {"a": jnp.zeros((2, 3)), "b": jnp.ones((4,))}
  raw = {"a": jnp.asarray([[np.nan, np.inf, -np.inf], [0.3, -7.0, 2e6]], jnp.float32),
         "b": jnp.asarray([-0.5, 1.0, np.nan, -3e5], jnp.float32)}
  # By hand: NaN → 0, ±inf → ±1e5 (torch.nan_to_num(nan=0, posinf=1e5, neginf=-1e5)), then each
  # entry clipped to [-1, 1] (clip_grad_value_(…, 1)).
  fixed = {"a": jnp.asarray([[0.0, 1.0, -1.0], [0.3, -1.0, 1.0]], jnp.float32),
           "b": jnp.asarray([-0.5, 1.0, 0.0, -1.0], jnp.float32)}
  tx = state_lib.make_optimizer(_cfg(nan_to_num=True, clip_value=1.0), "generator")
  got, _ = _run(tx, params, [raw, raw])
  want, _ = _run(optax.adamw(ADAM["lr"], b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.01), params,
                 [fixed, fixed])
  for g, w in zip(got, want):
    jax.tree.map(lambda x, y: np.testing.assert_array_equal(np.asarray(x), np.asarray(y)), g, w)
  # Replacement alone keeps the finite large entries and turns inf into ±1e5.
  tx = state_lib.make_optimizer(_cfg(nan_to_num=True), "generator")  # Without clip_value.
  upd, _ = state_lib.nan_to_num().update(raw, optax.EmptyState())
  np.testing.assert_array_equal(np.asarray(upd["a"]),
                                np.float32([[0.0, 1e5, -1e5], [0.3, -7.0, 2e6]]))
  assert state_lib.update_count(tx.init(params)) == 0  # Still one Adam state in the chain.


def _method(bad: bool):
  def generator_loss(params, frozen, batch, key, extras, nets, cfg):
    del frozen, key, nets, cfg
    w = params["generator"]["w"]
    # A finite loss whose gradient holds a NaN entry (sqrt at 0) when `bad`.
    loss = jnp.sum((batch["x"] * w) ** 2) + (jnp.sqrt(jnp.abs(w[0])) if bad else 0.0)
    return loss, ({}, extras)
  return types.SimpleNamespace(GENERATOR_NETS=("generator",), CRITIC_NETS=(),
                               generator_loss=generator_loss, critic_loss=None)


def test_a_repaired_gradient_is_applied_an_unrepaired_one_skipped():
  params = {"generator": {"w": jnp.asarray([0.0, 1.0, -2.0], jnp.float32)}}
  batch = {"x": jnp.asarray([1.0, 2.0, 3.0], jnp.float32)}
  for repair in (False, True):
    cfg = _cfg(nan_to_num=repair)
    txs = {"generator": state_lib.make_optimizer(cfg, "generator")}
    st = state_lib.init_state(params, txs, {}, (0.9,))
    new, m = jax.jit(steps_lib.make_step(_method(True), None, txs, cfg, "generator"))(st, {}, batch)
    assert float(m["generator/skipped"]) == (0.0 if repair else 1.0)
    assert int(new["nonfinite"]["total"]) == (0 if repair else 1)
    w = np.asarray(new["params"]["generator"]["w"])
    assert np.all(np.isfinite(w))
    assert (not np.array_equal(w, np.asarray(params["generator"]["w"]))) == repair


def test_recipes_turn_them_on():
  for dataset in ("cifar10", "imagenet64"):
    o = defaults.uni_edm(dataset).optim
    assert o.generator.nan_to_num and o.fake_score.nan_to_num
    assert o.fake_score.clip_value == 1.0 and o.generator.clip_value == 0.0
  o = defaults.sid_edm("cifar10").optim
  assert not o.generator.nan_to_num and o.fake_score.clip_value == 0.0


@pytest.mark.parametrize("field,value,fragment", [
    ("clip_value", -1.0, ">= 0"), ("clip_value", "1", "a finite number"),
    ("clip_value", float("nan"), "a finite number"), ("nan_to_num", 1, "True or False"),
    ("nan_to_num", "yes", "True or False")])
def test_bad_values_are_refused_naming_the_field(field, value, fragment):
  cfg = defaults.toy()
  raw = cfg.to_dict()
  raw["optim"]["fake_score"][field] = value
  with pytest.raises(config_checks.ConfigError, match=fragment) as e:
    config_checks.check(ml_collections.ConfigDict(raw), num_devices=8)
  assert f"config.optim.fake_score.{field}" in str(e.value)
