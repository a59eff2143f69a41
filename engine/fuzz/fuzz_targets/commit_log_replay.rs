//! Fuzz target: see `shoal_engine::fuzz::commit_log_replay`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| shoal_engine::fuzz::commit_log_replay(data));
