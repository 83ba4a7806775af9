#!/usr/bin/env bash
set -euo pipefail
: "${TPU_NAME:?}" "${ZONE:?}"
gcloud compute tpus tpu-vm delete "$TPU_NAME" --zone="$ZONE" --quiet
