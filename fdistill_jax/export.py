"""Export a trained generator (or a teacher trained here) to PyTorch's EDM format.

  python -m fdistill_jax.export --config=configs/digits_js.py --workdir=runs/digits_js \
      --out=student.safetensors [--params=0.999|raw]

Writes EDMPrecond's state_dict (PyTorch names, OIHW layouts, resample_filter buffers included) as
`.safetensors` with the constructor kwargs in its metadata, or `.pt`. It loads with
`EDMPrecond(**precond_kwargs).load_state_dict(sd, strict=True)` in NVIDIA's EDM code, and back
here with `fdistill_jax.teachers.edm.load_edm`. A one-step student is then sampled as
`x = net(sigma_init * z, sigma_init, labels)` (sigma_init is written to the metadata too).
The file is written to a temporary name and renamed, so a failed export never leaves a partial
file over a good one.
"""
from __future__ import annotations

import json
import os

from absl import app, flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "The run's config.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "The run's workdir (latest checkpoint is used).")
_OUT = flags.DEFINE_string("out", None, "Output .safetensors or .pt path.")
_PARAMS = flags.DEFINE_string("params", None, "'raw' or an EMA decay; default config.eval.params.")
flags.mark_flags_as_required(["config", "workdir", "out"])


def export_generator(cfg, workdir: str, out: str, which: str | None = None) -> dict:
  """Writes the generator of the latest checkpoint in `workdir` to `out`; returns a summary."""
  import jax
  from safetensors.numpy import save_file

  from fdistill_jax.convert import edm_state_dict as esd
  from fdistill_jax import compose
  from fdistill_jax.models.edm import build_edm_precond
  if cfg.teacher.kind != "edm":
    raise ValueError(f"export needs an EDM-architecture run; config.teacher.kind={cfg.teacher.kind!r}")
  which = which or cfg.eval.params
  _, state = compose.load_trained(cfg, workdir)
  params = jax.device_get(compose.generator_params(state, which))
  kwargs = cfg.teacher.precond_kwargs.to_dict()
  module = build_edm_precond(kwargs)
  sd = esd.variables_to_state_dict({"params": params}, module)
  tmp = out + ".tmp" + os.path.splitext(out)[1]
  if out.endswith(".safetensors"):
    meta = {"precond_kwargs": json.dumps(esd._jsonable(kwargs)),  # pylint: disable=protected-access
            "sigma_init": str(cfg.diffusion.sigma_init), "step": str(int(state["step"])),
            "params": which, "method": cfg.method.name}
    save_file(sd, tmp, metadata=meta)
  else:
    esd.write_state_dict(tmp, sd, kwargs)
  os.replace(tmp, out)
  return {"out": out, "step": int(state["step"]), "params": which, "tensors": len(sd)}


def main(argv):
  del argv
  print(export_generator(_CONFIG.value, _WORKDIR.value, _OUT.value, _PARAMS.value))


if __name__ == "__main__":
  app.run(main)
