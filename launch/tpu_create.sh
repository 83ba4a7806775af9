#!/usr/bin/env bash
# Create a Cloud TPU VM slice. Needs: TPU_NAME, ZONE, ACCEL (e.g. v5p-64), RUNTIME; optional PROJECT.
set -euo pipefail
: "${TPU_NAME:?}" "${ZONE:?}" "${ACCEL:?}" "${RUNTIME:?}"
gcloud compute tpus tpu-vm create "$TPU_NAME" --zone="$ZONE" --accelerator-type="$ACCEL" \
  --version="$RUNTIME" ${PROJECT:+--project="$PROJECT"} ${SPOT:+--spot}
