//! Fuzz target: arbitrary bytes as an ONNX model through import, verification and the -O2 pipeline.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| qcc::fuzzing::import_onnx(data));
