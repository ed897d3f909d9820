#!/usr/bin/env bash
# The core test suite: what a new user runs and what CI calls first. Needs no ../shared.
# Fetches ONNX's node conformance data (from the onnx wheel on PyPI) into target/ once, then runs every
# test in the workspace and prints the conformance, filetest and fuzz-smoke counts.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/fetch-onnx-node-tests.sh
cargo test --workspace --locked -- --show-output
