#!/usr/bin/env bash
# Builds examples/c against an object file qcc writes and checks the application's output equals
# `qcc run` (the JIT) byte for byte on a few digits. Needs `cargo build --release` first (for
# target/release/qcc and target/release/libqcc_runtime.a). Run from the repository root.
set -euo pipefail
QCC=target/release/qcc
LIB=target/release/libqcc_runtime.a
[ -x "$QCC" ] && [ -f "$LIB" ] || { echo "check.sh: run cargo build --release first" >&2; exit 1; }
D=$(mktemp -d)
trap 'rm -rf "$D"' EXIT
MODEL=(examples/mnist/mnist_cnn.onnx -O2 --int8 --calib examples/mnist/digits --calib-samples 100)
"$QCC" "${MODEL[@]}" -o "$D/mnist.o"
cc -O2 -Wall -Werror examples/c/main.c "$D/mnist.o" "$LIB" -I"$D" -lm -lpthread -ldl -o "$D/mnist_app"
# The same quantized graph for `qcc run` (the object file was compiled from it).
"$QCC" "${MODEL[@]}" -o "$D/mnist.qir"
for i in 003 017 101 150; do
  x=examples/mnist/digits/digit_$i.npy
  "$D/mnist_app" "$x" "$D/out.f32" >/dev/null
  "$QCC" run "$D/mnist.qir" --input "$x" --output "$D/ref.npy"
  python3 - "$D/ref.npy" "$D/out.f32" "$i" <<'PY'
import sys
ref = open(sys.argv[1], "rb").read()
hlen = int.from_bytes(ref[8:10], "little") if ref[6] == 1 else int.from_bytes(ref[8:12], "little")
data = ref[(10 if ref[6] == 1 else 12) + hlen:]
out = open(sys.argv[2], "rb").read()
if data != out:
    sys.exit(f"digit {sys.argv[3]}: the C application's output differs from qcc run")
PY
done
echo "examples/c: the linked object file equals qcc run byte for byte on 4 digits"
