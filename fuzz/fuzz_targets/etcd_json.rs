//! Fuzz target: `spine_dash::fuzzing::etcd_json` (see `scripts/fuzz.sh`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| spine_dash::fuzzing::etcd_json(data));
