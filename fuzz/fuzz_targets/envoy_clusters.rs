//! Fuzz target: `spine_dash::fuzzing::envoy_clusters` (see `scripts/fuzz.sh`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| spine_dash::fuzzing::envoy_clusters(data));
