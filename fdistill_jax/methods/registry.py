"""Method registry: config.method.name -> the module holding that method's losses.

A method module defines GENERATOR_NETS, CRITIC_NETS, init_extras(cfg),
generator_loss(params, frozen, batch, key, extras, nets, cfg) and critic_loss(...), each
returning (loss, (metrics, new_extras)).
"""
from __future__ import annotations

import importlib

_METHODS = {
    "fdistill": "fdistill_jax.methods.fdistill",
    "edm_training": "fdistill_jax.methods.edm_training",
    "sid": "fdistill_jax.methods.sid",
    "sim": "fdistill_jax.methods.sim",
    "dmd": "fdistill_jax.methods.dmd",
    "kd": "fdistill_jax.methods.kd",
    "progressive": "fdistill_jax.methods.progressive",
}


def names() -> tuple[str, ...]:
  return tuple(_METHODS)


def get(name: str):
  if name not in _METHODS:
    raise ValueError(f"config.method.name={name!r} is unknown; allowed: {', '.join(_METHODS)}")
  return importlib.import_module(_METHODS[name])
