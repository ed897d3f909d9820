#!/usr/bin/env bash
# Side-by-side latency of qcc and ONNX Runtime (fp32 and int8, 1 and 2 threads); see compare_ort.py.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=$(scripts/python-env.sh)
cargo build --release -q
exec "$PY" bench/compare_ort.py "$@"
