//! Fuzz target: `spine_dash::fuzzing::consul_json` (see `scripts/fuzz.sh`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| spine_dash::fuzzing::consul_json(data));
