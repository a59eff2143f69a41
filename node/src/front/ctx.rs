//! What the connections of one shard share, and what each connection keeps between its
//! commands.

use std::rc::Rc;
use std::time::Instant;

use shoal_cluster::consistency::Consistency;
use shoal_engine::Clock;

use crate::cluster::driver::Driver;
use crate::config::Config;
use crate::mesh::Mesh;
use crate::shard::Shard;

/// What a shard's engine and its connections share.
pub struct Ctx {
    pub shard: Rc<Shard>,
    pub mesh: Rc<Mesh>,
    pub config: Rc<Config>,
    pub clock: std::sync::Arc<dyn Clock>,
    pub started: Instant,
    /// The cluster driver; `None` when standalone.
    pub driver: Option<Rc<Driver>>,
}

/// Per-connection state that commands change.
#[derive(Debug)]
pub struct Session {
    pub id: u64,
    /// QUIT was received: reply, then close.
    pub quit: bool,
    /// Read and write levels set by CONSISTENCY (`None`: the node's defaults).
    pub levels: Option<(Consistency, Consistency)>,
}
