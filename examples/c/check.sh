#!/usr/bin/env bash
# Builds examples/c against object files qcc writes and checks the application's output equals
# `qcc run` (the JIT) byte for byte on a few digits: the int8 MNIST CNN, and examples/c/hosted.qir
# (a reflect pad and a resize that run through the interpreter in libqcc_runtime.a, then a conv), float
# and int8, and examples/c/elementwise.onnx (integer adds and multiplies, broadcasting ones included,
# and sigmoid tables: steps generated whole by Cranelift; made by elementwise.py). Needs `cargo build --release` first (for target/release/qcc and
# target/release/libqcc_runtime.a). Run from the repository root.
set -euo pipefail
QCC=target/release/qcc
LIB=target/release/libqcc_runtime.a
[ -x "$QCC" ] && [ -f "$LIB" ] || { echo "check.sh: run cargo build --release first" >&2; exit 1; }
D=$(mktemp -d)
trap 'rm -rf "$D"' EXIT
CALIB=(--calib examples/mnist/digits --calib-samples 100)
check() {
  local what=$1
  shift
  # main.c includes mnist.h, so every model gets the symbol prefix mnist.
  "$QCC" "$@" -o "$D/mnist.o" --symbol-prefix mnist 2>/dev/null
  cc -O2 -Wall -Werror examples/c/main.c "$D/mnist.o" "$LIB" -I"$D" -lm -lpthread -ldl -o "$D/app"
  # The same graph for `qcc run` (the object file was compiled from it).
  "$QCC" "$@" -o "$D/model.qir" 2>/dev/null
  for i in 003 017 101 150; do
    x=examples/mnist/digits/digit_$i.npy
    "$D/app" "$x" "$D/out.f32" >/dev/null
    "$QCC" run "$D/model.qir" --input "$x" --output "$D/ref.npy"
    python3 - "$D/ref.npy" "$D/out.f32" "$what, digit $i" <<'PY'
import sys
ref = open(sys.argv[1], "rb").read()
hlen = int.from_bytes(ref[8:10], "little") if ref[6] == 1 else int.from_bytes(ref[8:12], "little")
data = ref[(10 if ref[6] == 1 else 12) + hlen:]
out = open(sys.argv[2], "rb").read()
if data != out:
    sys.exit(f"{sys.argv[3]}: the C application's output differs from qcc run")
PY
  done
  echo "examples/c: $what: the linked object file equals qcc run byte for byte on 4 digits"
}
check "int8 MNIST CNN" examples/mnist/mnist_cnn.onnx -O2 --int8 "${CALIB[@]}"
check "interpreted pad and resize, float" examples/c/hosted.qir -O2
check "interpreted pad and resize, int8" examples/c/hosted.qir -O2 --int8 "${CALIB[@]}"
check "generated integer adds, multiplies and tables" examples/c/elementwise.onnx -O2 --int8 "${CALIB[@]}"
