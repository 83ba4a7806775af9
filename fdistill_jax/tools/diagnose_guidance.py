"""Per-σ guidance diagnostics of a text-to-image (or any guided) distillation run.

  python -m fdistill_jax.tools.diagnose_guidance --config=configs/digits_t2i_js.py \\
      --workdir=runs/digits_t2i_js [--step=N | --init] [--batch=256] [--config.key=value]

Loads the run's checkpoint (latest, `--step`, or with `--init` the initial state: student and
fake score = the teacher copy) and prints, per σ, how much of the guidance push its fake score
has matched on the student's samples and the teacher's own x0 error on real data
(fdistill_jax/evaluation/guidance.py says what each column is). Writes the table as JSON to
workdir/guidance_<step>.json. The guidance scale is the method's (method.guidance_scale, or
SiD-LSG's kappa_real with kappa_fake on the fake score).
"""
from __future__ import annotations

import json
import os

from absl import app, flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "The run's config.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "The run's workdir.")
_STEP = flags.DEFINE_integer("step", None, "Checkpoint step (default: the latest).")
_INIT = flags.DEFINE_bool("init", False, "Diagnose the initial state instead of a checkpoint.")
_BATCH = flags.DEFINE_integer("batch", 256, "Samples (training prompts) per σ.")
flags.mark_flags_as_required(["config", "workdir"])


def guidance_scales(method_cfg) -> tuple[float, float]:
  """(teacher's w, fake score's guidance) as the method applies them in its generator loss."""
  if "kappa_real" in method_cfg:
    return float(method_cfg.kappa_real), float(method_cfg.get("kappa_fake", 1.0))
  return float(method_cfg.get("guidance_scale", 1.0)), 1.0


def main(argv):
  del argv
  import jax
  from fdistill_jax import compose
  from fdistill_jax.engine import progress
  from fdistill_jax.evaluation import guidance
  progress.quiet_libraries()
  import numpy as np
  cfg = _CONFIG.value
  if _INIT.value:
    exp, _ = compose.build(cfg, _WORKDIR.value, prepare=False)
    params = exp.init_params(jax.random.fold_in(jax.random.PRNGKey(cfg.seed), 1))
    step = 0
  else:
    exp, state = compose.load_trained(cfg, _WORKDIR.value, _STEP.value)
    params, step = state["params"], int(state["step"])
  w, fake_w = guidance_scales(cfg.method)
  # Training batches (data and conditions) until --batch samples: the run's own batch size, so
  # a restored input pipeline keeps its configuration.
  parts = [jax.device_get(exp.batch(10 ** 6 + i))
           for i in range(-(-_BATCH.value // cfg.train.batch_size))]
  batch = jax.tree.map(lambda *a: np.concatenate(a)[:_BATCH.value], *parts)
  real = cfg.dataset.name not in ("prompts", "synthetic")
  rows = guidance.diagnose(exp.nets, params, exp.frozen, batch, jax.random.PRNGKey(0), w, fake_w,
                           real=real)
  print(f"step {step}, teacher guidance w = {w}, fake-score guidance {fake_w}")
  print(guidance.table(rows))
  path = os.path.join(_WORKDIR.value, f"guidance_{step:07d}.json")
  with open(path, "w", encoding="utf-8") as f:
    json.dump({"step": step, "w": w, "fake_guidance": fake_w, "rows": rows}, f, indent=1)
  print(path)


if __name__ == "__main__":
  app.run(main)
