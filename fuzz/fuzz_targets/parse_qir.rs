//! Fuzz target: arbitrary bytes as .qir text through the parser, the printer (which must round-trip)
//! and the -O2 pipeline.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| qcc::fuzzing::parse_qir(data));
