"""Train state as a plain pytree, optimizers and EMA tracks.

state = {
  "step":   int32 [],                       # number of completed iterations
  "params": {net: params},                  # trainable nets only (teacher is held apart)
  "opt":    {net: optax state},
  "ema":    {"0.9999": generator params, ...},  # several β tracks at once (train.ema_decays)
  "extras": method state (e.g. ratio bins [10]),
  "nonfinite": {"total": int32, "streak": int32},
}
The teacher and any frozen feature network live in a separate `frozen` pytree: never donated,
never in an optimizer, never re-saved in checkpoints.
"""
from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax


def ema_key(decay: float) -> str:
  return repr(float(decay))


def make_optimizer(cfg: ml_collections.ConfigDict, net: str,
                   num_updates: int | None = None) -> optax.GradientTransformation:
  """AdamW (FastGen/DMD2 defaults) with optional global-norm clipping, per network.

  cfg.optim.<net>.{lr, b1, b2, eps, weight_decay, clip, schedule, end_lr_ratio, lr_scales,
  nan_to_num, clip_value}; clip <= 0 disables clipping. nan_to_num (default False) replaces
  non-finite gradient entries (NaN → 0, ±inf → ±1e5) and clip_value > 0 (default 0 = off) clips
  each entry to [−clip_value, clip_value]: in that order and before the global-norm clip, as
  the official Uni-Instruct trainer does before its optimizer steps (torch.nan_to_num,
  clip_grad_value_). Off, they add nothing to the chain (the optimizer state is unchanged).
  lr_scales ((regex, factor), ...) multiplies the lr (and decay) of the params whose '/'-joined
  path first matches a regex (e.g. a text encoder trained beside the denoiser:
  (("^text_encoder/", 5.0),)); () = one lr. A non-empty lr_scales adds a (stateless) step to the
  optimizer state, so a run cannot resume across adding or removing it. schedule 'constant'
  (default) or 'cosine': lr → end_lr_ratio · lr over `num_updates`, the number of updates this
  network gets in the run (not iterations: a critic network steps critic_steps times per
  generator step). The decay is fixed by train.steps: resuming with a different train.steps
  reshapes the rest of it.
  """
  o = cfg.optim[net]
  lr = o.lr
  schedule = o.schedule
  if schedule == "cosine":
    if not num_updates:
      raise ValueError(f"optim.{net}.schedule='cosine' needs the number of updates of {net}")
    lr = optax.cosine_decay_schedule(o.lr, decay_steps=num_updates, alpha=o.end_lr_ratio)
  elif schedule != "constant":
    raise ValueError(f"optim.{net}.schedule={schedule!r}: expected 'constant' or 'cosine'")
  parts = []
  if repairs_nonfinite(cfg, net):
    parts.append(nan_to_num())
  if o.clip_value > 0:
    parts.append(optax.clip(o.clip_value))
  if o.clip > 0:
    parts.append(optax.clip_by_global_norm(o.clip))
  parts.append(optax.adamw(lr, b1=o.b1, b2=o.b2, eps=o.eps, weight_decay=o.weight_decay))
  if o.lr_scales:
    parts.append(scale_by_path(o.lr_scales))
  return optax.chain(*parts)


# The official Uni-Instruct trainer's torch.nan_to_num(grad, nan=0, posinf=1e5, neginf=-1e5).
NAN_TO_NUM = dict(nan=0.0, posinf=1e5, neginf=-1e5)


def nan_to_num() -> optax.GradientTransformation:
  """Replaces NaN gradient entries by 0 and ±inf by ±1e5 (NAN_TO_NUM); stateless."""
  return optax.stateless(lambda updates, params=None: jax.tree.map(
      lambda g: jnp.nan_to_num(g, **NAN_TO_NUM), updates))


def repairs_nonfinite(cfg: ml_collections.ConfigDict, net: str) -> bool:
  """Whether the optimizer of `net` replaces non-finite gradient entries (optim.<net>.nan_to_num),
  so that the train step applies its update instead of skipping it (engine/steps.py)."""
  return bool(cfg.optim[net].nan_to_num)


def scale_by_path(scales) -> optax.GradientTransformation:
  """Multiplies each update by the factor of the first (regex, factor) matching its param path."""
  rules = [(re.compile(r), float(f)) for r, f in scales]

  def scale(updates, params=None):
    del params

    def one(path, u):
      name = jax.tree_util.keystr(path, simple=True, separator="/")
      return u * next((f for r, f in rules if r.search(name)), 1.0)
    return jax.tree_util.tree_map_with_path(one, updates)

  return optax.stateless(scale)


def num_updates(steps: int, critic_steps: int | None, is_generator: bool) -> int:
  """Updates a network gets in `steps` iterations of the FastGen schedule (engine/loop.py:
  iteration k is a generator step iff k mod (critic_steps + 1) == 0; no critic: every step)."""
  if critic_steps is None:
    return steps if is_generator else 0
  gen = -(-steps // (critic_steps + 1))
  return gen if is_generator else steps - gen


def init_state(params: dict, txs: dict, extras: dict, ema_decays) -> dict:
  """Builds the state pytree from initial trainable params (dict net -> params)."""
  return {
      "step": jnp.zeros((), jnp.int32),
      "params": params,
      "opt": {n: txs[n].init(p) for n, p in params.items()},
      "ema": {ema_key(d): jax.tree.map(jnp.copy, params["generator"]) for d in ema_decays},
      "extras": extras,
      "nonfinite": {"total": jnp.zeros((), jnp.int32), "streak": jnp.zeros((), jnp.int32)},
  }


def update_count(opt_state) -> jax.Array:
  """Number of updates an optax AdamW state has applied (its ScaleByAdamState count); int32 []."""
  counts = [v for path, v in optax.tree_utils.tree_get_all_with_path(opt_state, "count")
            if getattr(path[-1], "tuple_name", None) == "ScaleByAdamState"]
  if len(counts) != 1:
    raise ValueError(f"expected one Adam state in the optimizer state, found {len(counts)}")
  return counts[0]


def ema_beta(decay: float, num_updates: jax.Array, rampup: float) -> jax.Array:
  """β for the num_updates-th update (1-based) of an EMA track with constant decay `decay`.

  rampup = 0: the constant β. rampup > 0: EDM's and SiD's half-life ramp-up (FastGen's
  'halflife' EMA): the half-life, in updates, is min(h, rampup · n) with h = ln ½ / ln β, so
  β_n = min(β, ½^(1 / (rampup · n))); early updates weigh the current parameters almost fully and
  the initial parameters do not linger in a short run. float32 [].
  """
  if rampup <= 0:
    return jnp.float32(decay)
  n = jnp.maximum(num_updates.astype(jnp.float32), 1.0)
  return jnp.minimum(jnp.float32(decay), 0.5 ** (1.0 / (rampup * n)))


def initial_share(decay: float, updates: int, rampup: float = 0.0) -> float:
  """Weight the EMA track `decay` still gives the initial parameters after `updates` generator
  updates: Π_{n=1..updates} β_n with β_n of `ema_beta` (1.0 for no update). With rampup = 0 it
  is decay^updates (a 0.99 track keeps 30 % after 120 updates); any rampup > 0 gives
  β_1 ≤ ½^(1/rampup) and the share decays fast. Float, computed in float64 on the host.
  """
  if updates <= 0:
    return 1.0
  n = np.arange(1, updates + 1, dtype=np.float64)
  beta = np.full_like(n, decay)
  if rampup > 0:
    beta = np.minimum(beta, 0.5 ** (1.0 / (rampup * n)))
  return float(np.exp(np.sum(np.log(beta))))


def update_emas(emas: dict, params, num_updates: jax.Array | None = None,
                rampup: float = 0.0) -> dict:
  """EMA of the generator for every track: e ← β e + (1 − β) θ (β from `ema_beta`)."""
  if rampup > 0 and num_updates is None:
    raise ValueError("an EMA ramp-up needs the number of generator updates")
  out = {}
  for k, v in emas.items():
    b = ema_beta(float(k), num_updates, rampup)
    out[k] = jax.tree.map(lambda e, p, b=b: (b * e + (1.0 - b) * p).astype(e.dtype), v, params)
  return out
