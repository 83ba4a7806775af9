"""Validation of a config before anything is built or compiled.

Each check names the config field, the bad value and what is allowed, so a typo fails in a second
instead of after minutes of compilation. This module keeps the engine-wide checks (optimisers,
train loop, mesh, σ range, EMA selection); every method, teacher kind and data source checks its
own fields in its own module (`check_config(cfg)`), and `check` calls them.
"""
from __future__ import annotations

import math

import jax

from fdistill_jax import experiments, validation
from fdistill_jax.methods import registry


ConfigError = validation.ConfigError
_need = validation.need


def check(cfg, num_devices: int | None = None) -> None:
  """Raises ConfigError on the first invalid field."""
  num_devices = num_devices or jax.device_count()
  m = cfg.method
  _need(m.name in registry.names(), "method.name", m.name, f"allowed: {registry.names()}")
  if "critic_steps" in m:
    _need(isinstance(m.critic_steps, int) and m.critic_steps >= 1, "method.critic_steps",
          m.critic_steps, "an int >= 1 (critic steps per generator step)")
  for net in cfg.optim:
    o = cfg.optim[net]
    _need(o.lr > 0, f"optim.{net}.lr", o.lr, "must be > 0")
    _need(0 <= o.b1 < 1 and 0 <= o.b2 < 1, f"optim.{net}.b1/b2", (o.b1, o.b2), "must be in [0, 1)")
    _need(o.weight_decay >= 0, f"optim.{net}.weight_decay", o.weight_decay, "must be >= 0")
    _need(o.get("schedule", "constant") in ("constant", "cosine"), f"optim.{net}.schedule",
          o.get("schedule"), "'constant' or 'cosine'")
    _need(0 <= o.get("end_lr_ratio", 0.0) <= 1, f"optim.{net}.end_lr_ratio",
          o.get("end_lr_ratio"), "must be in [0, 1]")
    _need(all(len(r) == 2 and isinstance(r[0], str) and r[1] > 0 for r in o.get("lr_scales", ())),
          f"optim.{net}.lr_scales", o.get("lr_scales"),
          "pairs (regex on the param path, factor > 0)")
  t = cfg.train
  _need(t.steps >= 1, "train.steps", t.steps, "must be >= 1")
  _need(t.batch_size >= 1, "train.batch_size", t.batch_size, "must be >= 1")
  _need(t.batch_size % num_devices == 0, "train.batch_size", t.batch_size,
        f"must be divisible by the {num_devices} devices")
  ga = t.get("grad_accum", 1)
  _need(ga >= 1 and (t.batch_size // num_devices) % ga == 0, "train.grad_accum", ga,
        f"must divide the per-device batch {t.batch_size // num_devices}")
  _need(all(0 < d < 1 for d in t.ema_decays), "train.ema_decays", t.ema_decays,
        "each decay must be in (0, 1)")
  _need(t.get("ema_rampup", 0.0) >= 0, "train.ema_rampup", t.get("ema_rampup"),
        "a ramp-up ratio >= 0 (0 = constant β; EDM and SiD use 0.05)")
  _need(t.log_every >= 1, "train.log_every", t.log_every, "must be >= 1")
  _need(cfg.mesh.fsdp >= 1 and num_devices % cfg.mesh.fsdp == 0, "mesh.fsdp", cfg.mesh.fsdp,
        f"must divide the {num_devices} devices")
  d = cfg.diffusion
  _need(0 < d.sigma_min < d.sigma_max, "diffusion.sigma_min/sigma_max",
        (d.sigma_min, d.sigma_max), "need 0 < sigma_min < sigma_max")
  _need(d.sigma_init > 0, "diffusion.sigma_init", d.sigma_init, "must be > 0")
  _need(d.sigma_data > 0, "diffusion.sigma_data", d.sigma_data, "must be > 0")
  _check_engine_limits(cfg)
  method = registry.get(m.name)
  if hasattr(method, "check_config"):
    method.check_config(cfg)
  _need(cfg.teacher.kind in experiments.KINDS, "teacher.kind", cfg.teacher.kind,
        f"allowed: {experiments.KINDS}")
  experiments.check_config(cfg)


def _is_int(v) -> bool:
  return isinstance(v, int) and not isinstance(v, bool)


def _finite_number(v) -> bool:
  return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _check_engine_limits(cfg) -> None:
  """Values that type-check but cannot work: retention that would delete every checkpoint, a
  non-finite halt that can never trigger, infinite noise levels, an unknown evaluation track."""
  t = cfg.train
  _need(_is_int(t.keep_checkpoints) and t.keep_checkpoints >= 1, "train.keep_checkpoints",
        t.keep_checkpoints, "an int >= 1 (orbax keeps this many newest steps and deletes the rest; "
        "0 would delete every checkpoint, including earlier runs' in the workdir)")
  _need(_is_int(t.ckpt_every) and t.ckpt_every >= 0, "train.ckpt_every", t.ckpt_every,
        "an int >= 0 (0: only the final step)")
  _need(_is_int(t.max_nonfinite_streak) and t.max_nonfinite_streak >= 1,
        "train.max_nonfinite_streak", t.max_nonfinite_streak,
        "an int >= 1 (non-finite steps in a row before the run halts)")
  for k in ("restart_from_scratch", "adopt_unverified_checkpoints"):
    if k in t:
      _need(isinstance(t[k], bool), f"train.{k}", t[k], "True or False")
  for k in ("sigma_min", "sigma_max", "sigma_data", "sigma_init"):
    if k in cfg.diffusion:
      v = cfg.diffusion[k]
      _need(_finite_number(v), f"diffusion.{k}", v, "a finite number")
  ev, decays = cfg.eval.params, tuple(t.ema_decays)
  try:
    ok = ev == "raw" or float(ev) in [float(x) for x in decays]
  except (TypeError, ValueError):
    ok = False
  _need(ok, "eval.params", ev, f"'raw' or one of train.ema_decays {decays} (e.g. '{decays[0]}')"
        if decays else "'raw' (train.ema_decays is empty)")

