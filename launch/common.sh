# Sourced by the launch/ scripts (not run on its own): flag parsing, --dry-run, required names,
# and the Cloud TPU steps shared by tpu_*.sh and tpu_relaunch.sh.
# Every name comes from a flag (--zone=...) or its environment variable (ZONE); none is edited in.
DRY_RUN=${DRY_RUN:-0}
EXTRA=()

die() { echo "$(basename "$0"): $*" >&2; exit 2; }

# Print the "# Usage:" comment block of the calling script.
usage() { sed -n '/^# Usage:/,/^[^#]/{/^#/s/^# \{0,1\}//p}' "$0"; }

# run CMD ARG...: run it; with --dry-run print it instead, shell-quoted, on one line.
run() {
  if [[ $DRY_RUN == 1 ]]; then
    local s; s=$(printf '%q ' "$@"); echo "${s% }"
  else
    "$@"
  fi
}

# parse_flags SPEC... -- ARG...: SPEC is `flag=VAR` (a value: --flag=x or --flag x) or `flag!VAR`
# (a switch: sets VAR=1). Arguments after a lone `--` are kept in EXTRA (for fdistill_jax.main).
parse_flags() {
  local -A val=() bool=()
  local spec a name
  while [[ $1 != -- ]]; do
    spec=$1; shift
    if [[ $spec == *=* ]]; then val[${spec%%=*}]=${spec#*=}; else bool[${spec%%!*}]=${spec#*!}; fi
  done
  shift
  while (($#)); do
    a=$1; shift
    case $a in
      --)
        EXTRA=("$@")
        [[ " ${EXTRA[*]} " != *" --dry-run "* ]] || die "--dry-run must come before --"
        return 0 ;;
      --dry-run) DRY_RUN=1 ;;
      -h|--help) usage; exit 0 ;;
      --*=*)
        name=${a%%=*}; name=${name#--}
        [[ -n ${val[$name]:-} ]] || die "unknown flag ${a%%=*} (see --help)"
        printf -v "${val[$name]}" '%s' "${a#*=}" ;;
      --*)
        name=${a#--}
        if [[ -n ${bool[$name]:-} ]]; then
          printf -v "${bool[$name]}" '%s' 1
        elif [[ -n ${val[$name]:-} ]]; then
          (($#)) || die "$a needs a value"
          printf -v "${val[$name]}" '%s' "$1"; shift
        else
          die "unknown flag $a (see --help)"
        fi ;;
      *) die "unexpected argument '$a'; arguments for fdistill_jax.main go after --" ;;
    esac
  done
}

# need VAR flag: fail naming both the flag and the environment variable when VAR is empty.
need() { [[ -n ${!1:-} ]] || die "missing $1: pass --$2=... or set the environment variable $1"; }

# The repository root (this checkout), and the jax version setup.py pins (one place for it).
ROOT=${FDISTILL_ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}
jax_pin() {
  local v; v=$(sed -n 's/.*"jax==\([0-9.]*\)".*/\1/p' "$ROOT/setup.py")
  [[ -n $v ]] || die "could not read the jax==X pin from $ROOT/setup.py"
  echo "$v"
}

# ---- Cloud TPU -------------------------------------------------------------------------------
# shellcheck disable=SC2034  # used by the scripts that source this file
TPU_FLAGS=(tpu-name=TPU_NAME zone=ZONE project=PROJECT)
tpu_scope() {  # --zone/--project for every gcloud call; needs TPU_NAME and ZONE.
  need TPU_NAME tpu-name; need ZONE zone
  SCOPE=(--zone="$ZONE")
  [[ -z ${PROJECT:-} ]] || SCOPE+=(--project="$PROJECT")
}

tpu_create() {  # a TPU VM, or with QUEUED=1 a queued resource whose node is TPU_NAME.
  need ACCEL accelerator-type; need RUNTIME runtime-version
  local opt=()
  [[ ${SPOT:-0} != 1 ]] || opt+=(--spot)
  if [[ ${QUEUED:-0} == 1 ]]; then
    [[ ${PREEMPTIBLE:-0} != 1 ]] || die "--preemptible is for TPU VMs; queued resources take --spot"
    run gcloud compute tpus queued-resources create "${QUEUED_RESOURCE:-$TPU_NAME}" \
      --node-id="$TPU_NAME" "${SCOPE[@]}" --accelerator-type="$ACCEL" \
      --runtime-version="$RUNTIME" "${opt[@]}"
  else
    [[ ${PREEMPTIBLE:-0} != 1 ]] || opt+=(--preemptible)
    run gcloud compute tpus tpu-vm create "$TPU_NAME" "${SCOPE[@]}" --accelerator-type="$ACCEL" \
      --version="$RUNTIME" "${opt[@]}"
  fi
}

# Copy the code to every worker (this checkout as a tarball, or GIT_URL at GIT_REF) and install it
# into ~/fdistill_venv with jax[tpu] at setup.py's pin, then run PREP_COMMAND if given (e.g. copy
# the data and teacher to local disk). Idempotent: rerunning refreshes the code.
tpu_setup() {
  local fetch jax
  jax=$(jax_pin) || return
  if [[ -n ${GIT_REF:-} ]]; then
    need GIT_URL git-url
    fetch="{ [ -d ~/fdistill/.git ] || git clone --quiet $(printf %q "$GIT_URL") ~/fdistill; }"
    fetch+=" && git -C ~/fdistill fetch --quiet origin $(printf %q "$GIT_REF")"
    fetch+=" && git -C ~/fdistill checkout --quiet --force FETCH_HEAD"
  else
    local tgz="${TMPDIR:-/tmp}/fdistill_src_$TPU_NAME.tgz"
    run tar -C "$ROOT" --exclude=.venv --exclude=runs --exclude=.git -czf "$tgz" . || return
    run gcloud compute tpus tpu-vm scp "$tgz" "$TPU_NAME:fdistill_src.tgz" "${SCOPE[@]}" \
      --worker=all || return
    fetch="mkdir -p ~/fdistill && tar -C ~/fdistill -xzf ~/fdistill_src.tgz"
  fi
  local install="[ -d ~/fdistill_venv ] || python3 -m venv ~/fdistill_venv; "
  install+=". ~/fdistill_venv/bin/activate; "
  install+="pip install -q -e ~/fdistill\[gcs\] $(printf %q "jax[tpu]==$jax")"  # [gcs]: orbax step rotation on gs://
  run gcloud compute tpus tpu-vm ssh "$TPU_NAME" "${SCOPE[@]}" --worker=all --command \
    "set -e; $fetch; $install${PREP_COMMAND:+; $PREP_COMMAND}"
}

# Run fdistill_jax.main --distributed on every worker; each worker's output streams here and is
# kept in ~/fdistill_logs/<hostname>.log, copied to LOG_DIR (gs://... from the workers, or a local
# directory) even when the run fails. Returns the run's exit status.
tpu_run() {
  need CONFIG config; need WORKDIR workdir
  [[ $WORKDIR == gs://* ]] || echo "$(basename "$0"): warning: --workdir=$WORKDIR is not" \
    "gs://...; every worker must be able to write it" >&2
  local logs=${LOG_DIR:-$WORKDIR/logs} main remote rc=0
  main=$(printf '%q ' python -m fdistill_jax.main --distributed --config="$CONFIG" \
    --workdir="$WORKDIR" "${EXTRA[@]}")
  remote="cd ~/fdistill && . ~/fdistill_venv/bin/activate && mkdir -p ~/fdistill_logs && "
  remote+="set -o pipefail; ${main}2>&1 | tee ~/fdistill_logs/\$(hostname).log; rc=\$?"
  if [[ $logs == gs://* ]]; then
    remote+="; gcloud storage cp ~/fdistill_logs/\$(hostname).log $(printf %q "${logs%/}/")"
    remote+="; exit \$rc"
  else
    remote+="; exit \$rc"
  fi
  run gcloud compute tpus tpu-vm ssh "$TPU_NAME" "${SCOPE[@]}" --worker=all --command "$remote" \
    || rc=$?
  if [[ $logs != gs://* ]]; then
    run mkdir -p "$logs"
    run gcloud compute tpus tpu-vm scp "$TPU_NAME:fdistill_logs/*" "${logs%/}/" "${SCOPE[@]}" \
      --worker=all || true
  fi
  return "$rc"
}

tpu_delete() {  # the TPU VM, or with QUEUED=1 the queued resource and its node.
  if [[ ${QUEUED:-0} == 1 ]]; then
    run gcloud compute tpus queued-resources delete "${QUEUED_RESOURCE:-$TPU_NAME}" "${SCOPE[@]}" \
      --force --quiet
  else
    run gcloud compute tpus tpu-vm delete "$TPU_NAME" "${SCOPE[@]}" --quiet
  fi
}
