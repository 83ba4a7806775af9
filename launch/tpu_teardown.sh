#!/usr/bin/env bash
# Usage: tpu_teardown.sh --tpu-name=NAME --zone=ZONE [--project=P]
#          [--queued [--queued-resource=ID]] [--dry-run]
# Deletes the TPU VM, or with --queued the queued resource and its node. The workdir in the
# bucket is kept. Environment variables: TPU_NAME ZONE PROJECT QUEUED=1 QUEUED_RESOURCE.
# --dry-run prints the gcloud command instead of running it.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=common.sh
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"
parse_flags "${TPU_FLAGS[@]}" queued!QUEUED queued-resource=QUEUED_RESOURCE -- "$@"
tpu_scope
tpu_delete
