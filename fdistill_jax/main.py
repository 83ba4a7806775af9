"""Command-line entry point.

  python -m fdistill_jax.main --config=configs/toy2d_js.py --workdir=runs/toy [--config.key=value]
      [--mode=train|eval|sample|ref] [--prompts=prompts.txt [--prompt_cache=DIR]]

The config is locked: an unknown key fails at parse time, and `config_checks.check` rejects
impossible values before anything is built or compiled. Multi-host runs call
`jax.distributed.initialize()` when --distributed is given or FDISTILL_DISTRIBUTED=1 is set
(the launch/ scripts do this); a single machine never needs it.
"""
from __future__ import annotations

import json
import os

from absl import app, flags, logging
from ml_collections import config_flags

# TensorFlow's C++ INFO lines (oneDNN notices) print when it is first imported, before flags are
# parsed; level 1 keeps its warnings. Set TF_CPP_MIN_LOG_LEVEL=0 yourself to see them.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file.",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and samples.")
_MODE = flags.DEFINE_enum("mode", "train", ["train", "eval", "sample", "ref"],
                          "train; eval (metrics of the latest checkpoint); sample (grid, npz, PNGs); "
                          "ref (FID reference statistics of config.dataset).")
_PROMPTS = flags.DEFINE_string(
    "prompts", None, "--mode=sample of a text-to-image config: a text file of prompts, one per "
    "line; writes one PNG per prompt and a captioned grid (evaluation/t2i_sampling.py).")
_PROMPT_CACHE = flags.DEFINE_string(
    "prompt_cache", None, "With --prompts: the prompt cache holding their T5 embeddings "
    "(default config.teacher.prompt_cache; write one with fdistill_jax.tools.encode_prompts).")
_DISTRIBUTED = flags.DEFINE_bool("distributed", False,
                                 "Call jax.distributed.initialize() (multi-host runs).")
_CACHE = flags.DEFINE_string(
    "compilation_cache", "user", "Persistent XLA compilation cache: 'user' (a per-user, per-host "
    "folder: $XDG_CACHE_HOME or ~/.cache/fdistill_jax/jax_cache/<hostname>), 'workdir' "
    "(<workdir>/jax_cache: only for a workdir no one else can write, since the cache holds "
    "native code that runs), a directory, or '' (off). See fdistill_jax/engine/compile_cache.py.")
_VERBOSE = flags.DEFINE_bool("verbose", False, "Keep the INFO logs of orbax, absl, grain and "
                             "TensorFlow (off by default: a progress bar and a summary show).")
flags.mark_flags_as_required(["config", "workdir"])
# An empty --workdir would put checkpoints, logs and the run lock in the current directory.
flags.register_validator("workdir", lambda v: v is None or bool(v.strip()),
                         message="--workdir is empty: name the directory for this run's "
                         "checkpoints, logs and samples (e.g. --workdir=runs/toy)")


def main(argv):
  del argv
  from fdistill_jax.engine import progress
  if not _VERBOSE.value:
    progress.quiet_libraries()
  import jax  # Imported here so XLA flags set by launchers apply before jax starts.
  if _DISTRIBUTED.value or os.environ.get("FDISTILL_DISTRIBUTED") == "1":
    env = os.environ
    if env.get("JAX_PLATFORMS") == "cpu":  # CPU-only clusters and tests: gloo collectives.
      jax.config.update("jax_cpu_collectives_implementation", "gloo")
    if "JAX_COORDINATOR_ADDRESS" in env:  # Explicit cluster (launch/multinode_gpu.sh, tests).
      jax.distributed.initialize(env["JAX_COORDINATOR_ADDRESS"], int(env["JAX_NUM_PROCESSES"]),
                                 int(env["JAX_PROCESS_ID"]))
    else:  # Cloud TPU, Slurm, Open MPI: auto-detected.
      jax.distributed.initialize()
  from fdistill_jax import compose, config_checks, config_defaults
  from fdistill_jax.engine import compile_cache
  if (cache := compile_cache.cache_dir(_CACHE.value, _WORKDIR.value)):
    compile_cache.enable(cache)
  cfg = config_defaults.resolve(_CONFIG.value)  # The optional fields, once (check does too).
  config_checks.check(cfg)
  if _PROMPTS.value and _MODE.value != "sample":
    raise app.UsageError("--prompts is for --mode=sample")
  logging.info("process %d/%d, %d devices; workdir %s", jax.process_index(),
               jax.process_count(), jax.device_count(), _WORKDIR.value)
  if _MODE.value == "train":
    out = compose.train(cfg, _WORKDIR.value)
  elif _MODE.value == "eval":
    out = compose.evaluate_checkpoint(cfg, _WORKDIR.value)
  elif _MODE.value == "sample":
    from fdistill_jax import modes
    out = modes.sample_checkpoint(cfg, _WORKDIR.value, _PROMPTS.value, _PROMPT_CACHE.value)
  else:
    from fdistill_jax import modes
    out = modes.reference_statistics(cfg, _WORKDIR.value)
  if jax.process_index() == 0 and _MODE.value in ("train", "eval") and "student" in out:
    print("\n" + progress.summary(out, progress.output_paths(_WORKDIR.value)))
  elif jax.process_index() == 0:
    print(json.dumps(out, indent=1, default=str))


if __name__ == "__main__":
  app.run(main)
