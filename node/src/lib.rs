//! shoal-node: the `shoal` server. One glommio executor per core, each a shard owning a
//! slice of the ring partitions and one storage engine; clients speak RESP2/RESP3 to any
//! shard, which serves keys it owns and forwards the rest over the shard mesh.
//!
//! Modules, from the socket inwards: [`server`] (executors, listeners, shutdown) →
//! [`conn`] (framing) → [`command`] (typed requests) → [`exec`] (routing, fan-out) →
//! [`mesh`] / [`frame`] / [`message`] (cross-shard requests) → [`shard`] → [`store`]
//! (the key/value layout in the engine).

#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod command;
pub mod config;
pub mod conn;
pub mod context;
pub mod driver;
pub mod exec;
pub mod frame;
pub mod glob;
pub mod info;
pub mod keylock;
pub mod mesh;
pub mod message;
pub mod peer;
pub mod port;
pub mod resp;
pub mod sched;
pub mod server;
pub mod shard;
pub mod store;
pub mod u64map;

pub use config::{Config, Flags};
pub use server::{ServerError, run};
