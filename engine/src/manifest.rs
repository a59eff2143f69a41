//! The manifest: the durable history of which SSTables make up the database.
//!
//! It is a [`Log`] of its own (directory `manifest/`) whose records are [`Edit`]s. An edit is
//! appended and synced *after* the tables it adds are durable and *before* the tables it
//! removes are deleted, so a crash at any point neither loses nor resurrects a table. Replay
//! applies edits in order; a [`Edit::Snapshot`] resets the state, which lets the manifest be
//! compacted by writing a snapshot and releasing the segments before it.
//!
//! Edit layout (format version 1; integers little-endian, byte strings `u32` length-prefixed):
//!
//! | field      | type  | meaning                                               |
//! |------------|-------|-------------------------------------------------------|
//! | version    | u8    | `EDIT_FORMAT_VERSION`                                 |
//! | tag        | u8    | 1 = snapshot, 2 = change                              |
//! | log_start  | u64   | first commit-log record not yet in an SSTable         |
//! | next_file  | u64   | next unused file number                               |
//! | last_seq   | u64   | highest sequence number in any SSTable                |
//! | added      | u32 n | then n × table (below)                                |
//! | removed    | u32 m | then m × u64 table number (always 0 in a snapshot)    |
//!
//! Table: number u64 · level u32 · file_size u64 · entries u64 · tombstones u64 ·
//! min_seq u64 · max_seq u64 · smallest key bytes · largest key bytes.
//!
//! Record framing and checksums are the log's.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::coding::{Reader, put_bytes, put_u32, put_u64};
use crate::fs::FileSystem;
use crate::log::{Log, LogOptions, Preallocation, ReplayFrom};
use crate::types::SeqNo;
use crate::{Error, Result};

const EDIT_FORMAT_VERSION: u8 = 1;
const TAG_SNAPSHOT: u8 = 1;
const TAG_CHANGE: u8 = 2;

/// Manifest segments are small: edits are a few hundred bytes and snapshots bound the total.
pub(crate) const SEGMENT_BYTES: u64 = 1 << 20;
/// A manifest opens with a segment this small: most opens add no edit at all.
const MANIFEST_SEGMENT_BYTES_MIN: u64 = 16 << 10;

/// Edits between snapshots: bounds replay time and the manifest's size.
const EDITS_PER_SNAPSHOT: u64 = 256;

/// Levels of the LSM tree: L0 holds flushed memtables (may overlap), L1.. are sorted runs.
pub const LEVELS: u32 = 7;

/// What the manifest knows about one SSTable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableMeta {
    /// Its file number (`NNNNNN.sst`).
    pub number: u64,
    /// Its level.
    pub level: u32,
    /// Its length in bytes.
    pub file_size: u64,
    /// Versions in it.
    pub entries: u64,
    /// Tombstones among them.
    pub tombstones: u64,
    /// Smallest sequence number in it.
    pub min_seq: SeqNo,
    /// Largest sequence number in it.
    pub max_seq: SeqNo,
    /// Smallest user key in it.
    pub smallest: Vec<u8>,
    /// Largest user key in it.
    pub largest: Vec<u8>,
}

impl TableMeta {
    /// The manifest's record of a table just written at `level`.
    pub fn from_properties(
        number: u64,
        level: u32,
        props: &crate::sstable::TableProperties,
    ) -> TableMeta {
        TableMeta {
            number,
            level,
            file_size: props.file_size,
            entries: props.entries,
            tombstones: props.tombstones,
            min_seq: props.min_seq,
            max_seq: props.max_seq,
            smallest: props.smallest_key.clone(),
            largest: props.largest_key.clone(),
        }
    }
}

/// The table set and counters the manifest describes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ManifestState {
    /// Every table, by number.
    pub tables: BTreeMap<u64, TableMeta>,
    /// First commit-log record not yet in a table.
    pub log_start: u64,
    /// Next unused file number.
    pub next_file: u64,
    /// Highest sequence number in any table.
    pub last_seq: SeqNo,
}

/// One record of the manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Edit {
    /// The whole state.
    Snapshot(ManifestState),
    /// Tables added and removed together, with the counters after the change.
    Change {
        /// Tables added.
        added: Vec<TableMeta>,
        /// Numbers of the tables removed.
        removed: Vec<u64>,
        /// First commit-log record not yet in a table, after the change.
        log_start: u64,
        /// Next unused file number, after the change.
        next_file: u64,
        /// Highest sequence number in any table, after the change.
        last_seq: SeqNo,
    },
}

impl ManifestState {
    /// Applies an edit, refusing ones that contradict the state (a replayed manifest that
    /// does so is corrupt).
    pub fn apply(&mut self, edit: Edit) -> std::result::Result<(), String> {
        match edit {
            Edit::Snapshot(state) => {
                for (&number, table) in &state.tables {
                    if number != table.number {
                        return Err(format!("table {} listed as {number}", table.number));
                    }
                    check_added(table, state.next_file)?;
                }
                *self = state;
            }
            Edit::Change {
                added,
                removed,
                log_start,
                next_file,
                last_seq,
            } => {
                for number in removed {
                    if self.tables.remove(&number).is_none() {
                        return Err(format!("removes unknown table {number}"));
                    }
                }
                for table in added {
                    check_added(&table, next_file)?;
                    if let Some(old) = self.tables.insert(table.number, table) {
                        return Err(format!("adds table {} twice", old.number));
                    }
                }
                if log_start < self.log_start {
                    return Err(format!("log start moves back to {log_start}"));
                }
                self.log_start = log_start;
                self.next_file = self.next_file.max(next_file);
                self.last_seq = self.last_seq.max(last_seq);
            }
        }
        Ok(())
    }
}

/// What every table an edit lists must satisfy, snapshot or change: a level that exists and a
/// number the edit's own `next_file` has handed out.
fn check_added(table: &TableMeta, next_file: u64) -> std::result::Result<(), String> {
    if table.level >= LEVELS {
        return Err(format!("table {} at level {}", table.number, table.level));
    }
    if table.number >= next_file {
        return Err(format!("table {} not below next_file", table.number));
    }
    Ok(())
}

impl Edit {
    /// Appends the edit's encoding (layout at the top of this module) to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.push(EDIT_FORMAT_VERSION);
        let (tag, added, removed, log_start, next_file, last_seq): (
            _,
            Vec<&TableMeta>,
            &[u64],
            _,
            _,
            _,
        ) = match self {
            Edit::Snapshot(s) => (
                TAG_SNAPSHOT,
                s.tables.values().collect(),
                &[],
                s.log_start,
                s.next_file,
                s.last_seq,
            ),
            Edit::Change {
                added,
                removed,
                log_start,
                next_file,
                last_seq,
            } => (
                TAG_CHANGE,
                added.iter().collect(),
                removed,
                *log_start,
                *next_file,
                *last_seq,
            ),
        };
        out.push(tag);
        put_u64(out, log_start);
        put_u64(out, next_file);
        put_u64(out, last_seq);
        put_u32(out, added.len() as u32);
        for t in added {
            put_u64(out, t.number);
            put_u32(out, t.level);
            put_u64(out, t.file_size);
            put_u64(out, t.entries);
            put_u64(out, t.tombstones);
            put_u64(out, t.min_seq);
            put_u64(out, t.max_seq);
            put_bytes(out, &t.smallest);
            put_bytes(out, &t.largest);
        }
        put_u32(out, removed.len() as u32);
        for n in removed {
            put_u64(out, *n);
        }
    }

    /// Decodes one edit; `None` when the bytes are not a well-formed edit.
    pub fn decode(payload: &[u8]) -> Option<Edit> {
        let mut r = Reader::new(payload);
        if r.u8()? != EDIT_FORMAT_VERSION {
            return None;
        }
        let tag = r.u8()?;
        let log_start = r.u64()?;
        let next_file = r.u64()?;
        let last_seq = r.u64()?;
        let n = r.u32()?;
        let mut added = Vec::new();
        for _ in 0..n {
            added.push(TableMeta {
                number: r.u64()?,
                level: r.u32()?,
                file_size: r.u64()?,
                entries: r.u64()?,
                tombstones: r.u64()?,
                min_seq: r.u64()?,
                max_seq: r.u64()?,
                smallest: r.bytes()?.to_vec(),
                largest: r.bytes()?.to_vec(),
            });
        }
        let m = r.u32()?;
        let mut removed = Vec::new();
        for _ in 0..m {
            removed.push(r.u64()?);
        }
        if !r.is_empty() {
            return None;
        }
        match tag {
            TAG_SNAPSHOT if removed.is_empty() => {
                let listed = added.len();
                let tables: BTreeMap<u64, TableMeta> =
                    added.into_iter().map(|t| (t.number, t)).collect();
                // A table listed twice would otherwise vanish into one entry unnoticed.
                (tables.len() == listed).then_some(Edit::Snapshot(ManifestState {
                    tables,
                    log_start,
                    next_file,
                    last_seq,
                }))
            }
            TAG_CHANGE => Some(Edit::Change {
                added,
                removed,
                log_start,
                next_file,
                last_seq,
            }),
            _ => None,
        }
    }
}

/// The manifest log plus the bookkeeping that decides when to compact it.
pub struct Manifest<F: FileSystem> {
    log: Log<F>,
    dir: PathBuf,
    edits_since_snapshot: parking_lot::Mutex<u64>,
}

impl<F: FileSystem> Manifest<F> {
    /// Replays the manifest in `db_dir/manifest`, creating it (with an empty snapshot) when
    /// there is none.
    pub async fn open(fs: Arc<F>, db_dir: &Path) -> Result<(Manifest<F>, ManifestState)> {
        let dir = crate::filename::manifest_dir(db_dir);
        let mut state = ManifestState::default();
        let mut edits = 0u64;
        let mut records = 0u64;
        // Segments are released only before a snapshot, so the oldest one left holds one,
        // possibly after edits whose predecessors are gone: those edits are superseded by
        // the snapshot and cannot be applied to anything; replay starts at the snapshot.
        let mut snapshot_seen = false;
        let log = Log::open(
            fs,
            dir.clone(),
            LogOptions {
                segment_bytes_min: MANIFEST_SEGMENT_BYTES_MIN,
                segment_bytes: SEGMENT_BYTES,
                // Every edit is synced.
                preallocation: Preallocation::ZeroFill,
            },
            ReplayFrom::Oldest,
            |record_no, payload| {
                let edit = Edit::decode(payload)
                    .ok_or_else(|| Error::corruption(&dir, record_no, "malformed manifest edit"))?;
                records += 1;
                let is_snapshot = matches!(edit, Edit::Snapshot(_));
                snapshot_seen |= is_snapshot;
                if !snapshot_seen {
                    return Ok(());
                }
                edits = if is_snapshot { 0 } else { edits + 1 };
                state
                    .apply(edit)
                    .map_err(|what| Error::corruption(&dir, record_no, what))
            },
        )
        .await?;
        if records > 0 && !snapshot_seen {
            return Err(Error::corruption(&dir, 0, "no snapshot in the manifest"));
        }
        let manifest = Manifest {
            log,
            dir,
            edits_since_snapshot: parking_lot::Mutex::new(edits),
        };
        if records == 0 {
            manifest.write_snapshot(&state).await?;
        }
        Ok((manifest, state))
    }

    /// Makes `edit` durable. `state_after` is the state with the edit applied; it becomes the
    /// next snapshot when enough edits have accumulated. Callers serialise edits.
    pub async fn record(&self, edit: &Edit, state_after: &ManifestState) -> Result<()> {
        let mut payload = Vec::new();
        edit.encode(&mut payload);
        let record = self.log.append(&payload)?;
        self.log.sync(record).await?;
        let due = {
            let mut edits = self.edits_since_snapshot.lock();
            *edits += 1;
            *edits >= EDITS_PER_SNAPSHOT
        };
        if due {
            self.write_snapshot(state_after).await?;
        }
        Ok(())
    }

    async fn write_snapshot(&self, state: &ManifestState) -> Result<()> {
        let mut payload = Vec::new();
        Edit::Snapshot(state.clone()).encode(&mut payload);
        let record = self.log.append(&payload)?;
        self.log.sync(record).await?;
        *self.edits_since_snapshot.lock() = 0;
        self.log.release_before(record).await
    }

    /// The manifest's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Closes the manifest's log cleanly (see [`Log::close`]): edits after this are refused.
    pub async fn close(&self) -> Result<()> {
        self.log.close().await
    }
}

/// Writes a new manifest in `dir` (which holds none) whose one record is a snapshot of
/// `state`, durably, closed cleanly: for a repair or a checkpoint, which build a database's
/// manifest from a table set rather than from edits.
pub(crate) async fn write_new<F: FileSystem>(
    fs: &Arc<F>,
    dir: &Path,
    state: &ManifestState,
) -> Result<()> {
    let log = Log::open(
        Arc::clone(fs),
        dir.to_path_buf(),
        LogOptions {
            segment_bytes_min: SEGMENT_BYTES,
            segment_bytes: SEGMENT_BYTES,
            preallocation: Preallocation::ZeroFill,
        },
        ReplayFrom::Oldest,
        |_, _| {
            Err(crate::Error::corruption(
                dir,
                0,
                "a manifest is already there",
            ))
        },
    )
    .await?;
    let mut payload = Vec::new();
    Edit::Snapshot(state.clone()).encode(&mut payload);
    let record = log.append(&payload)?;
    log.sync(record).await?;
    log.close().await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(number: u64, level: u32) -> TableMeta {
        TableMeta {
            number,
            level,
            file_size: 4096 * number,
            entries: 10,
            tombstones: 1,
            min_seq: number,
            max_seq: number + 9,
            smallest: format!("a{number}").into_bytes(),
            largest: format!("z{number}").into_bytes(),
        }
    }

    #[test]
    fn edits_round_trip_and_apply() {
        let change = Edit::Change {
            added: vec![table(3, 0), table(4, 1)],
            removed: vec![],
            log_start: 17,
            next_file: 5,
            last_seq: 99,
        };
        let mut buf = Vec::new();
        change.encode(&mut buf);
        assert_eq!(Edit::decode(&buf), Some(change.clone()));
        let mut state = ManifestState::default();
        state.apply(change).unwrap();
        assert_eq!(state.tables.len(), 2);
        let snapshot = Edit::Snapshot(state.clone());
        buf.clear();
        snapshot.encode(&mut buf);
        assert_eq!(Edit::decode(&buf), Some(snapshot));
        for cut in 0..buf.len() {
            assert_eq!(Edit::decode(&buf[..cut]), None);
        }
    }

    /// A snapshot written in the middle of a segment releases the segments before it; the
    /// edits ahead of it in its own segment refer to tables only the released segments
    /// added. Reopening must start at the snapshot.
    #[test]
    fn reopens_after_a_snapshot_in_the_middle_of_a_segment() {
        futures_lite::future::block_on(async {
            let fs = Arc::new(crate::fs::FaultFs::new());
            let db = Path::new("/db");
            let mut number = 0;
            let mut expected = ManifestState::default();
            // Each open starts a new segment: the second session's snapshot (edit 256 since
            // the first snapshot) lands mid-segment.
            for session_edits in [100, 200, 10] {
                let (manifest, state) = Manifest::open(Arc::clone(&fs), db).await.unwrap();
                assert_eq!(state, expected);
                for _ in 0..session_edits {
                    // Add a table and remove the previous one: every edit depends on the last.
                    number += 1;
                    let edit = Edit::Change {
                        added: vec![table(number, 1)],
                        removed: if number > 1 { vec![number - 1] } else { vec![] },
                        log_start: 0,
                        next_file: number + 1,
                        last_seq: number,
                    };
                    expected.apply(edit.clone()).unwrap();
                    manifest.record(&edit, &expected).await.unwrap();
                }
            }
            let (_, state) = Manifest::open(fs, db).await.unwrap();
            assert_eq!(state, expected);
            assert_eq!(state.tables.len(), 1);
        });
    }

    #[test]
    fn contradictions_are_refused() {
        let mut state = ManifestState::default();
        let remove_unknown = Edit::Change {
            added: vec![],
            removed: vec![9],
            log_start: 0,
            next_file: 10,
            last_seq: 0,
        };
        assert!(state.apply(remove_unknown).is_err());
        let beyond_next_file = Edit::Change {
            added: vec![table(12, 0)],
            removed: vec![],
            log_start: 0,
            next_file: 10,
            last_seq: 0,
        };
        assert!(state.apply(beyond_next_file).is_err());
    }

    /// A snapshot is checked as a change is: a replayed snapshot listing a table at a level
    /// that does not exist, or at a number not below its `next_file`, is refused (reported as
    /// corruption by the replay), not installed to panic the first reader that indexes levels.
    #[test]
    fn snapshot_contradictions_are_refused() {
        let snapshot = |tables: Vec<TableMeta>, next_file| {
            Edit::Snapshot(ManifestState {
                tables: tables.into_iter().map(|t| (t.number, t)).collect(),
                log_start: 0,
                next_file,
                last_seq: 0,
            })
        };
        let mut state = ManifestState::default();
        state.apply(snapshot(vec![table(3, 1)], 4)).unwrap();
        assert_eq!(state.tables.len(), 1);
        let before = state.clone();
        for bad in [
            snapshot(vec![table(3, LEVELS)], 4),
            snapshot(vec![table(3, 1)], 3),
            snapshot(vec![table(2, 0), table(9, 1)], 5),
        ] {
            assert!(state.apply(bad.clone()).is_err(), "{bad:?}");
            assert_eq!(state, before, "a refused snapshot changes nothing");
        }
        // Through a replayed manifest the refusal is corruption, not a panic.
        let mut payload = Vec::new();
        snapshot(vec![table(3, LEVELS + 5)], 4).encode(&mut payload);
        let decoded = Edit::decode(&payload).unwrap();
        assert!(ManifestState::default().apply(decoded).is_err());
        // A table listed twice in a snapshot is malformed.
        let mut payload = Vec::new();
        snapshot(vec![table(3, 1)], 4).encode(&mut payload);
        let mut twice = payload.clone();
        let count_at = 1 + 1 + 8 * 3;
        twice[count_at..count_at + 4].copy_from_slice(&2u32.to_le_bytes());
        let table_bytes = payload.len() - count_at - 4 - 4;
        let listed = payload[count_at + 4..count_at + 4 + table_bytes].to_vec();
        twice.splice(count_at + 4..count_at + 4, listed);
        assert_eq!(Edit::decode(&twice), None);
    }
}
