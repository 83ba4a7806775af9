#!/usr/bin/env bash
# Copy this checkout to every worker and install it into ~/fdistill_venv (idempotent).
set -euo pipefail
: "${TPU_NAME:?}" "${ZONE:?}"
root="$(cd "$(dirname "$0")/.." && pwd)"
# jax[tpu] pinned to the jax version setup.py pins (one place for the version).
jax_version=$(sed -n 's/.*"jax==\([0-9.]*\)".*/\1/p' "$root/setup.py")
: "${jax_version:?could not read the jax==X pin from $root/setup.py}"
tar -C "$root" --exclude=.venv --exclude=runs --exclude=.git -czf /tmp/fdistill_src.tgz .
gcloud compute tpus tpu-vm scp /tmp/fdistill_src.tgz "$TPU_NAME":~/ --zone="$ZONE" --worker=all
gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone="$ZONE" --worker=all --command '
  set -e; mkdir -p ~/fdistill && tar -C ~/fdistill -xzf ~/fdistill_src.tgz
  [ -d ~/fdistill_venv ] || python3 -m venv ~/fdistill_venv
  . ~/fdistill_venv/bin/activate && pip install -q -e ~/fdistill && pip install -q "jax[tpu]=='"$jax_version"'"'
