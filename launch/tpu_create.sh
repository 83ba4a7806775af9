#!/usr/bin/env bash
# Usage: tpu_create.sh --tpu-name=NAME --zone=ZONE --accelerator-type=v5p-64 --runtime-version=V
#          [--project=P] [--spot | --preemptible] [--queued [--queued-resource=ID]] [--dry-run]
# Creates a Cloud TPU VM slice, or with --queued a queued resource (node id NAME; the request waits
# for capacity; --spot for spot capacity). Each flag can instead come from its environment
# variable: TPU_NAME ZONE ACCEL RUNTIME PROJECT SPOT=1 PREEMPTIBLE=1 QUEUED=1 QUEUED_RESOURCE.
# --dry-run prints the gcloud command instead of running it.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=common.sh
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"
parse_flags "${TPU_FLAGS[@]}" accelerator-type=ACCEL runtime-version=RUNTIME spot!SPOT \
  preemptible!PREEMPTIBLE queued!QUEUED queued-resource=QUEUED_RESOURCE -- "$@"
tpu_scope
tpu_create
