#!/usr/bin/env bash
# The GPU suite of issue 31 on a fresh machine: install carried wheels (no network there), show
# the card, then run fdistill_jax.benchmarks.gpu_suite under a hard timeout.
#
#   bash fdistill_jax/benchmarks/gpu_suite.sh OUT_DIR [gpu_suite flags, e.g. --budget_s=600]
#
# Environment: PYTHON (default python3: on the device image the one that has torch and jax),
# WHEELS (default ./wheels: every *.whl there is installed with --no-index --no-deps first; see
# BENCHMARKS.md "GPU figures" for what the device image lacks), TRACE_DIR (profiler traces,
# default /tmp/gpu_suite_traces) and CACHE_DIR (the compilation cache; default the suite's own
# per-user folder, ~/.cache/fdistill_jax/gpu_suite_jax_cache/<hostname>, not a shared /tmp path:
# it holds native code the suite runs): both kept out of OUT_DIR, which should hold only the JSON
# and log.
# Exit status: the suite's (2: preflight refused, the reasons printed and in OUT_DIR/gpu_suite.json;
# 124: the hard timeout, everything measured until then is in the JSON).
set -u
cd "$(dirname "$0")/../.." || exit 1
OUT=${1:?usage: gpu_suite.sh OUT_DIR [flags]}
shift
PY=${PYTHON:-python3}
WHEELS=${WHEELS:-wheels}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
mkdir -p "$OUT"

if compgen -G "$WHEELS/*.whl" > /dev/null; then
  echo "== installing carried wheels from $WHEELS"
  "$PY" -m pip install --no-index --no-deps --quiet "$WHEELS"/*.whl || echo "pip install failed"
fi
echo "== card"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 || true
"$PY" - <<'PYEOF' 2>&1 | tail -n 5
import importlib.metadata as md
for p in ("jax", "jaxlib", "jax-cuda12-plugin", "jax-cuda13-plugin", "flax", "torch"):
  try:
    print(f"{p} {md.version(p)}")
  except md.PackageNotFoundError:
    print(f"{p} not installed")
PYEOF

BUDGET=600
for a in "$@"; do
  case "$a" in --budget_s=*) BUDGET=${a#--budget_s=} ;; esac
done
LIMIT=$(( ${BUDGET%.*} + 180 ))  # Compiles cannot be interrupted: the suite plans, this enforces.
echo "== gpu_suite, budget ${BUDGET} s, hard limit ${LIMIT} s"
timeout -k 30 "$LIMIT" "$PY" -m fdistill_jax.benchmarks.gpu_suite --out="$OUT" \
  --trace_dir="${TRACE_DIR:-/tmp/gpu_suite_traces}" \
  ${CACHE_DIR:+--cache_dir="$CACHE_DIR"} "$@" 2>&1 | tee "$OUT/gpu_suite.log"
exit "${PIPESTATUS[0]}"
