//! The node's data directory: every file and folder it holds, in one place.
//!
//! ```text
//! <data_dir>/                       (layout version 1, `--data-dir`)
//! ├── SHOAL-LAYOUT                  what the data was placed by (below)
//! ├── SHOAL-GENERATION              a cluster member's incarnation: decimal, one line
//! ├── *.tmp                         one of the above being written (renamed into place)
//! └── shard-<n>/                    shard n's engine, n = 0..shards
//!     ├── ...                       the engine's files (`shoal_engine::filename`)
//!     └── system/                   a cluster member's system engine (hints), same files
//! ```
//!
//! `SHOAL-LAYOUT` is text, one `key=value` per line:
//!
//! | key          | meaning                                                   | since |
//! |--------------|-----------------------------------------------------------|-------|
//! | `layout`     | this layout's version; absent means 1                     | 1     |
//! | `shards`     | shard count: partition p lives in `shard-<p % shards>`    | 1     |
//! | `partitions` | ring partitions Q                                         | 1     |
//! | `node`       | the cluster member's name (absent: a standalone node)     | 1     |
//!
//! Data placed under one shard or partition count is not found under another, and a member's
//! data carries its node id in every version vector: a node refuses to start on a directory
//! whose file says otherwise. The file is written once, durably, on first start.

use std::path::{Path, PathBuf};

/// The version of the layout drawn above. Stored in `SHOAL-LAYOUT`; never reuse a value.
pub const LAYOUT_VERSION: u32 = 1;
/// The file recording the layout.
pub const LAYOUT_FILE: &str = "SHOAL-LAYOUT";
/// The file recording a member's latest generation.
pub const GENERATION_FILE: &str = "SHOAL-GENERATION";
/// A shard's system engine, inside its directory.
const SYSTEM_DIR: &str = "system";

/// What a data directory was placed by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    pub shards: usize,
    pub partitions: u32,
    /// The cluster member's name; `None` for a standalone node.
    pub node: Option<String>,
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LayoutError {
    #[error("data directory {dir}: {source}")]
    Io {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("data directory {dir}: {LAYOUT_FILE} line {line:?} is not key=value with a known key")]
    Malformed { dir: PathBuf, line: String },
    #[error("data directory {dir}: layout version {found}, this build reads {LAYOUT_VERSION}")]
    Version { dir: PathBuf, found: String },
    #[error(
        "data directory {dir}: was created with {have}, not {want} (shards, partitions and the node cannot change)"
    )]
    Mismatch {
        dir: PathBuf,
        have: String,
        want: String,
    },
}

/// Shard `n`'s engine directory.
pub fn shard_dir(data_dir: &Path, n: usize) -> PathBuf {
    data_dir.join(format!("shard-{n}"))
}

/// Shard `n`'s system engine directory (a cluster member's hints).
pub fn system_dir(data_dir: &Path, n: usize) -> PathBuf {
    shard_dir(data_dir, n).join(SYSTEM_DIR)
}

/// This start's generation, recorded durably before it is used: greater than every earlier
/// start's, and at least the wall clock's seconds, so a member whose directory was replaced
/// still starts newer than its old incarnation (as Cassandra's generations do).
pub fn next_generation(data_dir: &Path, unix_secs: u64) -> Result<u64, LayoutError> {
    let path = data_dir.join(GENERATION_FILE);
    let io = |source| LayoutError::Io {
        dir: data_dir.to_path_buf(),
        source,
    };
    let previous = match std::fs::read_to_string(&path) {
        Ok(text) => text
            .trim()
            .parse::<u64>()
            .map_err(|_| LayoutError::Malformed {
                dir: data_dir.to_path_buf(),
                line: text.trim().to_owned(),
            })?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
        Err(e) => return Err(io(e)),
    };
    let generation = (previous + 1).max(unix_secs);
    write_durably(&path, format!("{generation}\n").as_bytes()).map_err(io)?;
    Ok(generation)
}

impl Layout {
    /// Creates `data_dir` if needed and checks (or, on first start, records) its layout.
    /// Returns the directory's absolute path: glommio's directory sync fails with EBADF on
    /// relative paths.
    pub fn prepare(&self, data_dir: &Path) -> Result<PathBuf, LayoutError> {
        let io = |source| LayoutError::Io {
            dir: data_dir.to_path_buf(),
            source,
        };
        std::fs::create_dir_all(data_dir).map_err(io)?;
        let dir = std::fs::canonicalize(data_dir).map_err(io)?;
        let path = dir.join(LAYOUT_FILE);
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                let have = Layout::parse(&dir, &text)?;
                if have != *self {
                    return Err(LayoutError::Mismatch {
                        dir,
                        have: have.describe(),
                        want: self.describe(),
                    });
                }
                Ok(dir)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                write_durably(&path, self.render().as_bytes()).map_err(io)?;
                Ok(dir)
            }
            Err(e) => Err(io(e)),
        }
    }

    fn render(&self) -> String {
        let mut text = format!(
            "layout={LAYOUT_VERSION}\nshards={}\npartitions={}\n",
            self.shards, self.partitions
        );
        if let Some(node) = &self.node {
            text.push_str(&format!("node={node}\n"));
        }
        text
    }

    fn parse(dir: &Path, text: &str) -> Result<Layout, LayoutError> {
        let malformed = |line: &str| LayoutError::Malformed {
            dir: dir.to_path_buf(),
            line: line.to_owned(),
        };
        let mut layout = Layout {
            shards: 0,
            partitions: 0,
            node: None,
        };
        for line in text.lines().filter(|l| !l.is_empty()) {
            let (key, value) = line.split_once('=').ok_or_else(|| malformed(line))?;
            match key {
                "layout" if value == LAYOUT_VERSION.to_string() => {}
                "layout" => {
                    return Err(LayoutError::Version {
                        dir: dir.to_path_buf(),
                        found: value.to_owned(),
                    });
                }
                "shards" => layout.shards = value.parse().map_err(|_| malformed(line))?,
                "partitions" => layout.partitions = value.parse().map_err(|_| malformed(line))?,
                "node" => layout.node = Some(value.to_owned()),
                _ => return Err(malformed(line)),
            }
        }
        Ok(layout)
    }

    fn describe(&self) -> String {
        let mut text = format!("shards={}, partitions={}", self.shards, self.partitions);
        if let Some(node) = &self.node {
            text.push_str(&format!(", node={node}"));
        }
        text
    }
}

fn write_durably(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes)?;
    std::fs::File::open(&tmp)?.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(parent) = path.parent() {
        std::fs::File::open(parent)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(node: Option<&str>) -> Layout {
        Layout {
            shards: 2,
            partitions: 256,
            node: node.map(str::to_owned),
        }
    }

    #[test]
    fn first_start_records_and_later_starts_check() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let abs = layout(Some("n1")).prepare(&data).unwrap();
        assert!(abs.is_absolute());
        let text = std::fs::read_to_string(data.join(LAYOUT_FILE)).unwrap();
        assert_eq!(text, "layout=1\nshards=2\npartitions=256\nnode=n1\n");
        layout(Some("n1")).prepare(&data).unwrap();
        let refused = layout(Some("n2")).prepare(&data).unwrap_err();
        assert!(
            refused
                .to_string()
                .contains("node=n1, not shards=2, partitions=256, node=n2"),
            "{refused}"
        );
        assert!(matches!(
            layout(None).prepare(&data),
            Err(LayoutError::Mismatch { .. })
        ));
    }

    #[test]
    fn generations_grow_across_starts_and_follow_the_clock() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(next_generation(dir.path(), 100).unwrap(), 100);
        assert_eq!(
            next_generation(dir.path(), 100).unwrap(),
            101,
            "same second, still newer"
        );
        assert_eq!(
            next_generation(dir.path(), 50).unwrap(),
            102,
            "a clock stepped back"
        );
        assert_eq!(next_generation(dir.path(), 5000).unwrap(), 5000);
    }

    #[test]
    fn a_file_without_a_version_is_version_1() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(LAYOUT_FILE), "shards=2\npartitions=256\n").unwrap();
        layout(None).prepare(dir.path()).unwrap();
    }

    #[test]
    fn unknown_versions_and_keys_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(LAYOUT_FILE);
        std::fs::write(&path, "layout=2\nshards=2\npartitions=256\n").unwrap();
        assert!(matches!(
            layout(None).prepare(dir.path()),
            Err(LayoutError::Version { .. })
        ));
        std::fs::write(&path, "shards=2\npartitions=256\ncolour=blue\n").unwrap();
        assert!(matches!(
            layout(None).prepare(dir.path()),
            Err(LayoutError::Malformed { .. })
        ));
    }
}
