//! Fuzz target: see `shoal_node::mesh::fuzz::frame_stream`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| shoal_node::mesh::fuzz::frame_stream(data));
