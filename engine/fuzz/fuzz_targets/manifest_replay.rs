//! Fuzz target: see `shoal_engine::fuzz::manifest_replay`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| shoal_engine::fuzz::manifest_replay(data));
