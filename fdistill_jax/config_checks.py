"""Validation of a config before anything is built or compiled.

Each check names the config field, the bad value and what is allowed, so a typo fails in a second
instead of after minutes of compilation.
"""
from __future__ import annotations

import math

import jax

from fdistill_jax import divergences
from fdistill_jax.methods import registry


class ConfigError(ValueError):
  pass


def _need(cond: bool, field: str, value, allowed: str) -> None:
  if not cond:
    raise ConfigError(f"config.{field}={value!r} is invalid: {allowed}")


def check(cfg, num_devices: int | None = None) -> None:
  """Raises ConfigError on the first invalid field."""
  num_devices = num_devices or jax.device_count()
  m = cfg.method
  _need(m.name in registry.names(), "method.name", m.name, f"allowed: {registry.names()}")
  if "divergence" in m:
    _need(m.divergence in divergences.NAMES, "method.divergence", m.divergence,
          f"allowed: {divergences.NAMES}")
  if "critic_steps" in m:
    _need(isinstance(m.critic_steps, int) and m.critic_steps >= 1, "method.critic_steps",
          m.critic_steps, "an int >= 1 (critic steps per generator step)")
  if "disc_features" in m:
    _need(m.disc_features in ("teacher", "fake_score"), "method.disc_features", m.disc_features,
          "allowed: 'teacher', 'fake_score'")
  if "dsm_weighting" in m:
    _need(m.dsm_weighting in ("none", "edm"), "method.dsm_weighting", m.dsm_weighting,
          "allowed: 'none', 'edm'")
  if "ratio_ema" in m:
    _need(0.0 <= m.ratio_ema < 1.0, "method.ratio_ema", m.ratio_ema, "must be in [0, 1)")
    _need(0 < m.ratio_lower < m.ratio_upper, "method.ratio_lower/ratio_upper",
          (m.ratio_lower, m.ratio_upper), "need 0 < ratio_lower < ratio_upper")
    _need(m.ratio_bins >= 1, "method.ratio_bins", m.ratio_bins, "must be >= 1")
  for net in cfg.optim:
    o = cfg.optim[net]
    _need(o.lr > 0, f"optim.{net}.lr", o.lr, "must be > 0")
    _need(0 <= o.b1 < 1 and 0 <= o.b2 < 1, f"optim.{net}.b1/b2", (o.b1, o.b2), "must be in [0, 1)")
    _need(o.weight_decay >= 0, f"optim.{net}.weight_decay", o.weight_decay, "must be >= 0")
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
  _need(t.log_every >= 1, "train.log_every", t.log_every, "must be >= 1")
  _need(cfg.mesh.fsdp >= 1 and num_devices % cfg.mesh.fsdp == 0, "mesh.fsdp", cfg.mesh.fsdp,
        f"must divide the {num_devices} devices")
  d = cfg.diffusion
  _need(0 < d.sigma_min < d.sigma_max, "diffusion.sigma_min/sigma_max",
        (d.sigma_min, d.sigma_max), "need 0 < sigma_min < sigma_max")
  _need(d.sigma_init > 0, "diffusion.sigma_init", d.sigma_init, "must be > 0")
  _need(d.sigma_data > 0, "diffusion.sigma_data", d.sigma_data, "must be > 0")
  _check_engine_limits(cfg)
  _check_peer_methods(cfg)
  _check_experiment(cfg)


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


def _check_peer_methods(cfg) -> None:
  """Keys of the sid / sim / dmd / kd / progressive methods (present only in their configs)."""
  m = cfg.method
  if "alpha" in m:
    _need(m.alpha >= 0, "method.alpha", m.alpha, "must be >= 0 (SiD uses 1.2, or 1.0)")
  if "t_max" in m:
    _need(0 < m.t_max <= 1000, "method.t_max", m.t_max, "must be in (0, 1000]")
  if "fake_p_std" in m:
    _need(m.fake_p_std > 0, "method.fake_p_std", m.fake_p_std, "must be > 0")
  for k in ("kappa_train_fake", "kappa_fake", "kappa_real"):
    if k in m:
      _need(m[k] >= 0, f"method.{k}", m[k], "a guidance scale >= 0 (1 = no guidance)")
  if "cond_drop" in m:
    _need(0 <= m.cond_drop < 1, "method.cond_drop", m.cond_drop, "must be in [0, 1)")
  if "distance" in m:
    _need(m.distance in ("l2", "pseudo_huber"), "method.distance", m.distance,
          "allowed: 'l2', 'pseudo_huber'")
    _need(m.huber_c > 0 or m.distance == "l2", "method.huber_c", m.huber_c,
          "must be > 0 (score units) for pseudo_huber")
  if "weighting" in m:
    _need(m.weighting in ("none", "sid", "truncated_snr", "snr_plus_one"), "method.weighting",
          m.weighting, "allowed: 'none', 'sid' (sim); 'truncated_snr', 'snr_plus_one', 'none' (pd)")
  if "form" in m:
    _need(m.form in ("exact", "sp"), "method.form", m.form, "allowed: 'exact', 'sp'")
  if "reg_distance" in m:
    _need(m.reg_distance in ("l2", "l1", "pseudo_huber"), "method.reg_distance", m.reg_distance,
          "allowed: 'l2', 'l1', 'pseudo_huber'")
  if "pairs_num" in m:
    _need(m.pairs_num >= 1 and m.pairs_shard_size >= 1, "method.pairs_num/pairs_shard_size",
          (m.pairs_num, m.pairs_shard_size), "both must be >= 1")
    _need(m.pairs_steps >= 1, "method.pairs_steps", m.pairs_steps, "Heun steps, must be >= 1")
  if m.name == "dmd":
    _need(m.get("divergence") == "rkl", "method.divergence", m.get("divergence"),
          "method dmd needs 'rkl'")
    _need(not cfg.disc.enabled, "disc.enabled", cfg.disc.enabled, "method dmd has no GAN: False")
  if "pd_base_steps" in m:
    b = m.pd_base_steps
    _need(b >= 2 and not b & (b - 1), "method.pd_base_steps", b, "a power of 2 >= 2")
    _need(m.student_steps >= 1 and b % m.student_steps == 0, "method.student_steps",
          m.student_steps, f"must divide pd_base_steps={b}")
    _need(m.pd_final_steps >= 1 and b % m.pd_final_steps == 0, "method.pd_final_steps",
          m.pd_final_steps, f"must divide pd_base_steps={b}")
    _need(m.prediction in ("x", "v"), "method.prediction", m.prediction, "allowed: 'x', 'v'")
    _need(cfg.diffusion.sigma_init == cfg.diffusion.sigma_max, "diffusion.sigma_init",
          cfg.diffusion.sigma_init, "progressive students start at sigma_max: set it equal")


def _check_experiment(cfg) -> None:
  """Teacher, data, discriminator and evaluation fields of image experiments."""
  from fdistill_jax import experiments
  t = cfg.teacher
  _need(t.kind in experiments.KINDS, "teacher.kind", t.kind, f"allowed: {experiments.KINDS}")
  if t.kind != "edm":
    return
  _need(t.get("dtype", "float32") in ("float32", "bfloat16"), "teacher.dtype", t.get("dtype"),
        "allowed: 'float32', 'bfloat16'")
  allowed = ("digits", "tfds", "edm_zip", "folder", "arrays", "synthetic")
  _need(cfg.dataset.name in allowed, "dataset.name", cfg.dataset.name, f"allowed: {allowed}")
  if cfg.disc.enabled:
    _need(len(cfg.disc.feature_keys) > 0, "disc.feature_keys", cfg.disc.feature_keys,
          "name at least one feature map ('enc<res>' or 'bottleneck')")
  _need(cfg.eval.sampler in ("one_step", "heun"), "eval.sampler", cfg.eval.sampler,
        "allowed: 'one_step', 'heun'")

