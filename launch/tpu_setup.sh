#!/usr/bin/env bash
# Usage: tpu_setup.sh --tpu-name=NAME --zone=ZONE [--project=P] [--git-url=URL --git-ref=REF]
#          [--prep-command=CMD] [--dry-run]
# On every worker (--worker=all): puts the code in ~/fdistill (this checkout copied as a tarball,
# or a git clone of URL at REF), makes ~/fdistill_venv if missing and installs the package with
# jax[tpu] at the jax version setup.py pins. Idempotent: rerun it after a code change or a
# recreated slice. --prep-command runs last on every worker (e.g. copying the data and teacher
# from the bucket to local disk). Environment variables: TPU_NAME ZONE PROJECT GIT_URL GIT_REF
# PREP_COMMAND.
# --dry-run prints the commands instead of running them.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=common.sh
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"
parse_flags "${TPU_FLAGS[@]}" git-url=GIT_URL git-ref=GIT_REF prep-command=PREP_COMMAND -- "$@"
tpu_scope
tpu_setup
