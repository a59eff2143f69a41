//! shoal-node: the `shoal` server. One glommio executor per core, each a shard owning a
//! slice of the ring partitions and one storage engine; clients speak RESP2/RESP3 to any
//! shard, which serves keys it owns and forwards the rest over the shard mesh.
//!
//! Modules by layer, in the order a request crosses them; each imports only layers below it:
//!
//! - [`server`]: start-up and shutdown (executors, listeners, the data directory), with
//!   [`server::port`] (claiming listening ports) and [`server::sched`] (scheduling policy).
//! - [`front`]: [`front::conn`] (RESP framing) → [`front::command`] (the command table and
//!   typed commands) → [`front::exec`] (routing, fan-out, replies); [`front::info`] renders
//!   INFO, [`front::context`] the causal contexts clients see, [`front::glob`] SCAN patterns.
//! - [`cluster`]: [`cluster::driver`] runs the shard's cluster protocol object and
//!   [`cluster::peer`] carries its frames between nodes.
//! - [`mesh`]: requests between the shards of one node, in [`mesh::frame`] frames carrying
//!   [`mesh::message`] payloads.
//! - [`shard`]: one shard's engine [`shard::store`], key locks ([`shard::keylock`]) and
//!   counters.
//! - Leaves used by every layer: [`config`] (settings), [`u64map`] (maps keyed by hashes).

#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod cluster;
pub mod config;
pub mod front;
pub mod mesh;
pub mod server;
pub mod shard;
pub mod u64map;

pub use config::{Config, Flags};
pub use server::{ServerError, run};
