//! Fuzz target: see `shoal_engine::fuzz::block`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| shoal_engine::fuzz::block(data));
