"""Flax port of NVIDIA EDM's networks (NVlabs/edm `training/networks.py`), written from the
architecture description, NHWC, with parameter names that map one to one onto EDM's state_dict.

* `build_edm_precond(precond_kwargs)`: EDMPrecond(**kwargs) as EDM's constructor takes them.
* `EDMPrecond`, `SongUNet` (DDPM++/NCSN++), `DhariwalUNet` (ADM), and the blocks in `layers`.

The pretrained EDM weights are CC BY-NC-SA 4.0 (NVIDIA); this code does not ship them.
"""
from fdistill_jax.models.edm.dhariwal import DhariwalUNet
from fdistill_jax.models.edm.precond import EDMPrecond, MODEL_TYPES, build_edm_precond
from fdistill_jax.models.edm.songunet import SongUNet

__all__ = ["DhariwalUNet", "EDMPrecond", "MODEL_TYPES", "SongUNet", "build_edm_precond"]
