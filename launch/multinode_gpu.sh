#!/usr/bin/env bash
# One process per node, all local GPUs each. Needs COORDINATOR (host:port), NNODES, NODE_RANK.
set -euo pipefail
: "${COORDINATOR:?}" "${NNODES:?}" "${NODE_RANK:?}"
export JAX_COORDINATOR_ADDRESS="$COORDINATOR" JAX_NUM_PROCESSES="$NNODES" JAX_PROCESS_ID="$NODE_RANK"
export FDISTILL_DISTRIBUTED=1
exec python -m fdistill_jax.main "$@"
