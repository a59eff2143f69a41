//! shoal-tools: operator tools for Shoal. The library holds what the binaries share; so far
//! the file dumps behind `sstable-dump`.

pub mod dump;
