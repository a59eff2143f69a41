//! `shoal-ctl`: inspects a cluster from its configuration. Everything is computed with the
//! server's own code (`shoal_node::config` reads the file, `shoal_cluster::ring` places the
//! partitions), so what the tool prints is what the nodes do.

pub mod ring;

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
    #[error("encoding JSON: {0}")]
    Json(#[from] serde_json::Error),
}
