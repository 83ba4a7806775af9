"""Method registry: config.method.name -> the module holding that method's losses.

A method module defines GENERATOR_NETS, CRITIC_NETS, init_extras(cfg),
generator_loss(params, frozen, batch, key, extras, nets, cfg) and critic_loss(...), each
returning (loss, (metrics, new_extras)); optionally method_config(**overrides) (its defaults),
check_config(cfg) (its own fields), prepare(cfg, exp, workdir) (an experiment hook) and
FEW_STEP_STUDENTS = False where config.few_step cannot apply (default True).
Adding a method is one file in methods/ and one line here.
"""
from __future__ import annotations

from fdistill_jax.methods import dmd, edm_training, fdistill, kd, progressive, sid, sim

_METHODS = {
    "fdistill": fdistill,
    "edm_training": edm_training,
    "sid": sid,
    "sim": sim,
    "dmd": dmd,
    "kd": kd,
    "progressive": progressive,
}


def names() -> tuple[str, ...]:
  return tuple(_METHODS)


def get(name: str):
  if name not in _METHODS:
    raise ValueError(f"config.method.name={name!r} is unknown; allowed: {', '.join(_METHODS)}")
  return _METHODS[name]
