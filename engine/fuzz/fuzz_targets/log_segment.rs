//! Fuzz target: see `shoal_engine::fuzz::log_segment`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| shoal_engine::fuzz::log_segment(data));
