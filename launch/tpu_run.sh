#!/usr/bin/env bash
# Run fdistill_jax.main on every worker of the slice; arguments are passed to main.py.
set -euo pipefail
: "${TPU_NAME:?}" "${ZONE:?}"
args=$(printf '%q ' "$@")
gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone="$ZONE" --worker=all --command "
  cd ~/fdistill && . ~/fdistill_venv/bin/activate &&
  FDISTILL_DISTRIBUTED=1 TFDS_DATA_DIR=\${TFDS_DATA_DIR:-} python -m fdistill_jax.main $args"
