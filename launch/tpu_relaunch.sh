#!/usr/bin/env bash
# Usage: tpu_relaunch.sh --tpu-name=NAME --zone=ZONE --accelerator-type=T --runtime-version=V
#          --config=configs/X.py --workdir=gs://BUCKET/runs/R [--project=P] [--spot]
#          [--queued-resource=ID] [--max-restarts=N (default 5)] [--poll-seconds=S (default 60)]
#          [--log-dir=...] [--git-url=URL --git-ref=REF] [--prep-command=CMD]
#          [--delete-when-done] [--dry-run]
#          [-- MAIN_ARGS...]
# Restart on preemption: creates a queued resource (unless it exists), polls its state (gcloud ... describe) until
# ACTIVE, then runs tpu_setup and tpu_run. When the queued resource is found SUSPENDED, FAILED or
# gone (preempted), it is deleted and recreated and the same command is run again, which resumes
# from the last checkpoint in the workdir; at most --max-restarts times. A run that fails while the
# resource is still ACTIVE is a real failure: its exit status is returned. Environment variables
# as for the other tpu_*.sh scripts, plus MAX_RESTARTS and POLL_SECONDS.
# --dry-run prints the commands instead of running them; the read-only state poll still runs.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=common.sh
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"
parse_flags "${TPU_FLAGS[@]}" accelerator-type=ACCEL runtime-version=RUNTIME spot!SPOT \
  queued-resource=QUEUED_RESOURCE config=CONFIG workdir=WORKDIR log-dir=LOG_DIR \
  git-url=GIT_URL git-ref=GIT_REF prep-command=PREP_COMMAND max-restarts=MAX_RESTARTS \
  poll-seconds=POLL_SECONDS \
  delete-when-done!DELETE_WHEN_DONE -- "$@"
# shellcheck disable=SC2034  # QUEUED is read by tpu_create / tpu_delete in common.sh
QUEUED=1 QR=${QUEUED_RESOURCE:-${TPU_NAME:-}} MAX_RESTARTS=${MAX_RESTARTS:-5}
POLL_SECONDS=${POLL_SECONDS:-60}
[[ $MAX_RESTARTS =~ ^[0-9]+$ ]] || die "--max-restarts must be a number, got '$MAX_RESTARTS'"
tpu_scope; need CONFIG config; need WORKDIR workdir; need ACCEL accelerator-type
need RUNTIME runtime-version

# ACCEPTED, WAITING_FOR_RESOURCES, PROVISIONING, ACTIVE, SUSPENDED, FAILED, ... or MISSING.
state() {
  local s
  s=$(gcloud compute tpus queued-resources describe "$QR" "${SCOPE[@]}" \
    --format='value(state.state)' 2>/dev/null) || s=MISSING
  echo "${s:-MISSING}"
}

restarts=0
# A rerun of this script (e.g. after the machine driving it went down) keeps an existing resource.
[[ $(state) != MISSING ]] || tpu_create
while :; do
  s=$(state)
  echo "tpu_relaunch: queued resource $QR is $s" >&2
  case $s in
    ACCEPTED|WAITING_FOR_RESOURCES|PROVISIONING|CREATING)
      run sleep "$POLL_SECONDS"; continue ;;
    ACTIVE)
      rc=0
      tpu_setup || rc=$?
      ((rc)) || tpu_run || rc=$?
      s=$(state)
      if [[ $s == ACTIVE ]]; then
        echo "tpu_relaunch: run finished with exit status $rc" >&2
        if ((rc == 0)) && [[ ${DELETE_WHEN_DONE:-0} == 1 ]]; then tpu_delete; fi
        exit "$rc"
      fi
      echo "tpu_relaunch: run ended (exit status $rc) with the queued resource $s: preempted" >&2 ;;
  esac
  restarts=$((restarts + 1))
  ((restarts <= MAX_RESTARTS)) ||
    die "queued resource $QR is $s after $MAX_RESTARTS restarts (--max-restarts); giving up"
  echo "tpu_relaunch: recreating $QR (restart $restarts of $MAX_RESTARTS)" >&2
  [[ $s == MISSING ]] || tpu_delete
  tpu_create
done
