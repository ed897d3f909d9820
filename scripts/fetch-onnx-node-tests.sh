#!/usr/bin/env bash
# Fetches ONNX's backend node test data (model + inputs + expected outputs per case) from the onnx==1.19.0
# wheel on PyPI into a cache folder; tests/onnx_conformance.rs reads it from there.
set -euo pipefail
dest="${QCC_ONNX_NODE_TESTS:-$(cd "$(dirname "$0")/.." && pwd)/target/onnx-node-tests}"
if [ -f "$dest/.complete" ]; then
  echo "onnx node tests already in $dest"
  exit 0
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 -m pip download -q --no-deps --only-binary=:all: onnx==1.19.0 -d "$tmp"
whl=$(ls "$tmp"/onnx-1.19.0-*.whl | head -1)
python3 - "$whl" "$tmp/x" <<'PY'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    z.extractall(sys.argv[2], [n for n in z.namelist() if n.startswith("onnx/backend/test/data/node/")])
PY
rm -rf "$dest"
mkdir -p "$(dirname "$dest")"
mv "$tmp/x/onnx/backend/test/data/node" "$dest"
touch "$dest/.complete"
echo "onnx node tests: $(ls "$dest" | wc -l) cases in $dest"
