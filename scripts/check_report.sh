#!/usr/bin/env bash
# Opens qcc's analysis report (bundled MNIST model) in headless Chromium and checks the screenshot shows
# the plots (non-blank, many colours) and that the browser logged no console errors. Needs the Debian
# `chromium` package (apt-get install chromium) and the Python venv (scripts/python-env.sh, for Pillow).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v chromium > /dev/null; then
  echo "ERROR: chromium is not installed (apt-get install --no-install-recommends chromium)" >&2
  exit 1
fi
QCC=${QCC:-target/release/qcc}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
"$QCC" analyze examples/mnist/mnist_cnn.onnx -O2 --int8 --calib examples/mnist/digits --calib-samples 100 \
  --samples 4 --report "$out/report.html" > /dev/null
# This machine's network is closed: without the background-networking flags Chromium keeps retrying
# connections (and a fresh profile keeps runs independent).
chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run --disable-background-networking \
  --disable-component-update --disable-sync --user-data-dir="$out/profile" --enable-logging=stderr --v=0 \
  --window-size=1000,2600 --screenshot="$out/report.png" "file://$out/report.html" 2> "$out/browser.log" || {
  cat "$out/browser.log" >&2
  echo "ERROR: chromium could not render the report" >&2
  exit 1
}
if grep -E "CONSOLE.*(rror|Uncaught)" "$out/browser.log"; then
  echo "ERROR: the report logged console errors" >&2
  exit 1
fi
py=$(./scripts/python-env.sh)
"$py" - "$out/report.png" <<'PY'
import sys
import numpy as np
from PIL import Image
img = Image.open(sys.argv[1]).convert("RGB")
px = np.asarray(img).reshape(-1, 3)
ink = float((px != 255).any(axis=1).mean())
colours = len(np.unique(px, axis=0))
print(f"report screenshot {img.size[0]}x{img.size[1]}: {100 * ink:.1f}% non-white, {colours} colours")
if ink < 0.05 or colours < 50:
    sys.exit("ERROR: the screenshot looks blank: the plots did not render")
PY
echo "ok   the analysis report renders in Chromium"
