"""The jit-compiled train steps: one generator step and one critic step per method.

Each step is a pure function (state, frozen, batch) -> (state, metrics):
* its PRNG key is derived inside from (seed, step, phase), so resuming is deterministic;
* gradients flow only into the nets the phase trains (`method.GENERATOR_NETS` / `CRITIC_NETS`);
* gradient accumulation splits the per-step batch into `grad_accum` micro-batches (lax.scan);
* a non-finite loss or gradient skips the update (the state keeps its old values), counted in
  state["nonfinite"]; the loop halts after `max_nonfinite_streak` in a row. The gradient of a
  net whose optimizer replaces non-finite entries (optim.<net>.nan_to_num) does not skip it;
* generator steps update every EMA track (with train.ema_rampup, EDM's half-life ramp-up).
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import optax

from fdistill_jax.engine import state as state_lib

PHASES = ("generator", "critic")


def _split_micro(batch: dict, k: int) -> dict:
  def f(x):
    if x.shape[0] % k:
      raise ValueError(f"batch of {x.shape[0]} is not divisible by grad_accum={k}")
    return x.reshape((k, x.shape[0] // k) + x.shape[1:])
  return jax.tree.map(f, batch)


def make_step(method, nets, txs: dict, cfg, phase: str) -> Callable:
  """Returns step(state, frozen, batch) -> (state, metrics) for `phase` (not yet jitted)."""
  if phase not in PHASES:
    raise ValueError(f"phase must be one of {PHASES}, got {phase!r}")
  names = method.GENERATOR_NETS if phase == "generator" else method.CRITIC_NETS
  loss_fn = method.generator_loss if phase == "generator" else method.critic_loss
  accum = int(cfg.train.grad_accum)
  ema_rampup = float(cfg.train.ema_rampup)
  base_key = jax.random.PRNGKey(cfg.seed)
  # Nets whose optimizer makes their gradient finite: its non-finite entries must not skip the step.
  # Only the nets with an optimizer (txs) are trained, and each has its config.optim block.
  repaired = {n for n in names if n in txs and state_lib.repairs_nonfinite(cfg, n)}

  def step(state, frozen, batch):
    key = jax.random.fold_in(jax.random.fold_in(base_key, state["step"]), PHASES.index(phase))
    train = {n: state["params"][n] for n in names if n in state["params"]}

    def f(sub, mb, k, extras):
      return loss_fn({**state["params"], **sub}, frozen, mb, k, extras, nets, cfg)

    grad_fn = jax.value_and_grad(f, has_aux=True)
    if accum == 1:
      (loss, (metrics, extras)), grads = grad_fn(train, batch, key, state["extras"])
    else:
      micro = _split_micro(batch, accum)

      def body(carry, xs):
        g_acc, l_acc, m_acc, ex = carry
        mb, i = xs
        (l, (m, ex)), g = grad_fn(train, mb, jax.random.fold_in(key, i), ex)
        add = lambda a, b: a + b / accum
        return (jax.tree.map(add, g_acc, g), l_acc + l / accum,
                jax.tree.map(add, m_acc, m), ex), None

      (_, (m0, _)), g0 = jax.eval_shape(grad_fn, train, jax.tree.map(lambda x: x[0], micro),
                                        key, state["extras"])
      zeros = lambda t: jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), t)
      (grads, loss, metrics, extras), _ = jax.lax.scan(
          body, (zeros(g0), jnp.float32(0), zeros(m0), state["extras"]),
          (micro, jnp.arange(accum)))

    gnorms = {n: optax.global_norm(grads[n]) for n in grads}
    checked = [jnp.isfinite(g) for n, g in gnorms.items() if n not in repaired]
    finite = jnp.isfinite(loss) & jnp.all(jnp.stack(checked)) if checked else jnp.isfinite(loss)
    new_params, new_opt = dict(state["params"]), dict(state["opt"])
    for n in train:
      upd, o = txs[n].update(grads[n], state["opt"][n], train[n])
      new_params[n] = optax.apply_updates(train[n], upd)
      new_opt[n] = o
    keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(finite, a, b), new, old)
    new_state = dict(state)
    new_state["params"] = keep(new_params, state["params"])
    new_state["opt"] = keep(new_opt, state["opt"])
    new_state["extras"] = keep(extras, state["extras"])
    if phase == "generator":
      n = state_lib.update_count(new_opt["generator"]) if ema_rampup > 0 else None
      new_state["ema"] = keep(state_lib.update_emas(state["ema"], new_params["generator"], n,
                                                    ema_rampup), state["ema"])
    nf = state["nonfinite"]
    new_state["nonfinite"] = {
        "total": nf["total"] + (~finite).astype(jnp.int32),
        "streak": jnp.where(finite, 0, nf["streak"] + 1).astype(jnp.int32)}
    new_state["step"] = state["step"] + 1
    out = {f"{phase}/{k}": v for k, v in metrics.items()}
    out[f"{phase}/loss"] = loss
    out.update({f"{phase}/grad_norm_{n}": g for n, g in gnorms.items()})
    out[f"{phase}/skipped"] = (~finite).astype(jnp.float32)
    return new_state, out

  return step
