#!/usr/bin/env bash
# Creates (once) the Python environment the CI-only checks and benchmarks use, with pinned versions.
# Prints the path of its python.
set -euo pipefail
venv="$(cd "$(dirname "$0")/.." && pwd)/target/venv"
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c "import onnxruntime, numpy, PIL" 2>/dev/null; then
  python3 -m venv "$venv" >&2
  "$venv/bin/pip" install -q onnxruntime==1.32.0 numpy==2.4.6 pillow==13.0.0 onnx==1.19.0 >&2
fi
echo "$venv/bin/python"
