//! Checkpoints: a consistent copy of the database in another directory of the same file
//! system, for backups. The memtable is flushed first, so every write acknowledged before the
//! call is in a table; the tables are hard-linked (a table never changes once written, so
//! the copy costs no space until compaction replaces it in the database); a new manifest
//! lists exactly them; no log is needed.
//!
//! Crash-safe: the checkpoint is built in `DEST.tmp` ([`crate::filename::checkpoint_tmp`]),
//! made durable, then renamed to `DEST`. A crash leaves no `DEST`, or a whole one.

use std::path::Path;
use std::sync::Arc;

use super::Db;
use crate::error::IoContext;
use crate::filename;
use crate::fs::FileSystem;
use crate::{Error, Result};

impl<F: FileSystem> Db<F> {
    /// Writes a checkpoint of the database to `dest`, which must not exist, on the same file
    /// system (hard links do not cross file systems). It holds every write acknowledged
    /// before the call, and opens as a database of its own.
    pub async fn checkpoint(&self, dest: impl AsRef<Path>) -> Result<()> {
        self.check_open()?;
        let dest = std::path::absolute(dest.as_ref()).at(dest.as_ref())?;
        let tmp = filename::checkpoint_tmp(&dest);
        let inner = &*self.inner;
        for taken in [&dest, &tmp] {
            if inner.fs.list_dir(taken).await.is_ok() {
                return Err(Error::InvalidArgument(format!(
                    "checkpoint destination {} exists",
                    taken.display()
                )));
            }
        }
        self.flush().await?;
        // No table set change until the tables are linked; the version keeps every table it
        // lists from being deleted meanwhile.
        let _editing = inner.manifest_lock.lock().await;
        let (state, _version) = {
            let st = inner.lock();
            (st.manifest.clone(), Arc::clone(&st.current.version))
        };
        inner.fs.create_dir_all(&tmp).await.at(&tmp)?;
        for &number in state.tables.keys() {
            let from = filename::table(&inner.dir, number);
            let to = filename::table(&tmp, number);
            inner.fs.hard_link(&from, &to).await.at(&to)?;
        }
        crate::manifest::write_new(&inner.fs, &filename::manifest_dir(&tmp), &state).await?;
        inner.fs.sync_dir(&tmp).await.at(&tmp)?;
        inner.fs.rename(&tmp, &dest).await.at(&tmp)?;
        let parent = dest.parent().unwrap_or(Path::new("/"));
        inner.fs.sync_dir(parent).await.at(parent)?;
        Ok(())
    }
}
