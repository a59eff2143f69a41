//! shoal-benches: side-by-side comparisons of Shoal with its peers on the same machine in the
//! same run (RocksDB's `db_bench`, fjall, Redis, a standalone node against a cluster), reported
//! as ratios to the peer.

#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod cluster_compare;
pub mod cluster_failure;
pub mod engine_compare;
pub mod peer_compare;
pub mod proc;
pub mod redis_compare;
pub mod resp_echo;
