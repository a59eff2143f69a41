//! Fuzz target: see `shoal_engine::fuzz::sstable`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| shoal_engine::fuzz::sstable(data));
