//! Which nodes an endpoint believes are up: a node the transport could not deliver to is
//! down until a frame arrives from it.

use std::collections::BTreeSet;

use crate::NodeId;

#[derive(Debug, Default)]
pub(crate) struct Liveness {
    down: BTreeSet<NodeId>,
}

impl Liveness {
    pub(crate) fn is_up(&self, node: NodeId) -> bool {
        !self.down.contains(&node)
    }

    /// A frame could not be delivered to `node`.
    pub(crate) fn unreachable(&mut self, node: NodeId) {
        self.down.insert(node);
    }

    /// A frame arrived from `node`: it is running.
    pub(crate) fn heard_from(&mut self, node: NodeId) {
        if !self.down.is_empty() {
            self.down.remove(&node);
        }
    }
}
