#!/usr/bin/env bash
# Usage: multinode_gpu.sh --coordinator=HOST:PORT --num-processes=N --process-id=I
#          --config=configs/X.py --workdir=DIR [--dry-run] [-- MAIN_ARGS...]
# Plain multi-node GPU run without Slurm: start it once on every node (process ids 0..N-1, the
# coordinator is process 0's host and a free port). One process per node drives all of that
# node's GPUs. main.py's --distributed calls jax.distributed.initialize with
# JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES and JAX_PROCESS_ID. The workdir must be shared by
# all nodes; rerunning resumes.
# Environment variables: COORDINATOR NUM_PROCESSES PROCESS_ID CONFIG WORKDIR.
# --dry-run prints the command instead of running it.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=common.sh
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"
parse_flags coordinator=COORDINATOR num-processes=NUM_PROCESSES process-id=PROCESS_ID \
  config=CONFIG workdir=WORKDIR -- "$@"
need COORDINATOR coordinator; need NUM_PROCESSES num-processes; need PROCESS_ID process-id
need CONFIG config; need WORKDIR workdir
[[ $COORDINATOR == *:* ]] || die "--coordinator must be HOST:PORT, got '$COORDINATOR'"
run env JAX_COORDINATOR_ADDRESS="$COORDINATOR" JAX_NUM_PROCESSES="$NUM_PROCESSES" \
  JAX_PROCESS_ID="$PROCESS_ID" python -m fdistill_jax.main --distributed --config="$CONFIG" \
  --workdir="$WORKDIR" "${EXTRA[@]}"
