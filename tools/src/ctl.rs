//! `shoal-ctl`: inspects a cluster. `ring` computes from a configuration with the server's own
//! code (`shoal_node::config` reads the file, `shoal_cluster::ring` places the partitions), so
//! what it prints is what the nodes do; `status` asks a live node.

pub mod ring;
pub mod status;

use shoal_node::config::ConfigError;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CtlError {
    /// The server would refuse this configuration too.
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("not a cluster configuration: it has no [[nodes]], so there is no ring")]
    NotACluster,
    #[error("--key: {0}")]
    Key(String),
    #[error("cannot reach {addr}: {source}")]
    Unreachable {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("the node answered: {0}")]
    Reply(String),
    #[error("the node is standalone, not a cluster member")]
    NotAMember,
    #[error("encoding JSON: {0}")]
    Json(#[from] serde_json::Error),
}
