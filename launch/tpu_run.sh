#!/usr/bin/env bash
# Usage: tpu_run.sh --tpu-name=NAME --zone=ZONE --config=configs/X.py --workdir=gs://BUCKET/runs/R
#          [--project=P] [--log-dir=gs://... | DIR] [--dry-run] [-- MAIN_ARGS...]
# Runs `python -m fdistill_jax.main --distributed --config=... --workdir=...` on every worker of
# the slice (MAIN_ARGS, e.g. --config.teacher.checkpoint=gs://..., are passed on). The output of all
# workers streams here; each worker's log is also copied to --log-dir (default WORKDIR/logs; a gs://
# dir is written by the workers, a local dir is filled by scp afterwards), also when the run fails.
# Rerunning the same command resumes from the last checkpoint in the workdir.
# Environment variables: TPU_NAME ZONE PROJECT CONFIG WORKDIR LOG_DIR.
# --dry-run prints the commands instead of running them.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=common.sh
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"
parse_flags "${TPU_FLAGS[@]}" config=CONFIG workdir=WORKDIR log-dir=LOG_DIR -- "$@"
tpu_scope
tpu_run
