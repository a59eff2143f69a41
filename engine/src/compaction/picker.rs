//! Which compaction to run next: a pure function of the table set, so it is unit-tested
//! without files.
//!
//! Leveled compaction. L0 holds flushed memtables, which may overlap each other; every level
//! below is one sorted run of disjoint tables whose target size grows by `ratio` per level.
//! Each level gets a score: L0 its table count over the compaction trigger, L1.. their bytes
//! over their target. The level with the highest score at or above 1 is compacted:
//! - L0: every L0 table, with the L1 tables they overlap, into L1 (taking all of L0 keeps
//!   newer-over-older order trivially: L0 tables may overlap in any way).
//! - Ln (n ≥ 1): the table that overlaps the fewest bytes of Ln+1 per byte of its own, with
//!   those tables; among equals, the next after the level's cursor (round robin over the key
//!   space, so that equal ranges take turns).
//!
//! A table that overlaps nothing in the next level moves there by a manifest edit alone
//! (a "trivial move"): sequential loads never rewrite data. Every other table of its level that
//! overlaps nothing below moves with it, as RocksDB extends a trivial move.
//!
//! Free tables do not move ahead of the merges L0 waits for (RocksDB moves L1 into an empty
//! L2 mid-fill): that writes less during a fill but more in the overwrites and mixed loads
//! that follow (the write-amplification runs are in `docs/measurements.md`).
//!
//! The invariants the levels keep, which the merge relies on: within a level ≥ 1 all versions
//! of a user key are in one table (outputs are cut only between user keys), and every version
//! in level n is newer than every version of the same key in level n+1.

use crate::manifest::{LEVELS, TableMeta};

/// The deepest level; it has no size target and is never compacted further down.
pub const LAST_LEVEL: u32 = LEVELS - 1;

/// The size rules of the tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    /// L0 tables that start an L0 compaction.
    pub l0_trigger: usize,
    /// Target size of L1.
    pub level1_bytes: u64,
    /// Each level's target over the one above's.
    pub ratio: u64,
}

impl Shape {
    /// The shape `o` asks for.
    pub fn from_options(o: &crate::Options) -> Shape {
        Shape {
            l0_trigger: o.l0_compaction_trigger.max(1),
            level1_bytes: o.level1_bytes.max(1),
            ratio: o.level_size_ratio.max(2),
        }
    }

    /// Target bytes of a level ≥ 1; the last level has none.
    pub fn target_bytes(&self, level: u32) -> u64 {
        debug_assert!(level >= 1);
        if level >= LAST_LEVEL {
            return u64::MAX;
        }
        (1..level).fold(self.level1_bytes, |t, _| t.saturating_mul(self.ratio))
    }

    /// How urgently `level` needs compaction; 1.0 and above means now.
    pub fn score(&self, levels: &[Vec<&TableMeta>], level: u32) -> f64 {
        let tables = &levels[level as usize];
        if level == 0 {
            return tables.len() as f64 / self.l0_trigger as f64;
        }
        if level >= LAST_LEVEL {
            return 0.0;
        }
        level_bytes(tables) as f64 / self.target_bytes(level) as f64
    }

    /// Bytes above target summed over the levels: roughly what compaction still has to move.
    pub fn pending_bytes(&self, levels: &[Vec<&TableMeta>]) -> u64 {
        let mut pending = 0u64;
        if levels[0].len() >= self.l0_trigger {
            pending += level_bytes(&levels[0]);
        }
        for level in 1..LAST_LEVEL {
            let bytes = level_bytes(&levels[level as usize]);
            pending += bytes.saturating_sub(self.target_bytes(level));
        }
        pending
    }
}

/// Total file size of `tables`.
pub fn level_bytes(tables: &[&TableMeta]) -> u64 {
    tables.iter().map(|t| t.file_size).sum()
}

/// The compaction to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Choice {
    /// Re-file `tables` (of one level, in key order) at level `to` unchanged: nothing there
    /// overlaps any of them.
    Move {
        /// The tables, as they are now.
        tables: Vec<TableMeta>,
        /// The level they move to.
        to: u32,
    },
    /// Merge tables into new ones one level down.
    Merge(Job),
}

/// A merge of `inputs` (from `level`) with the `overlapping` tables of `output_level`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    /// The level the inputs come from.
    pub level: u32,
    /// The level the outputs go to.
    pub output_level: u32,
    /// From `level`: L0 newest first, otherwise in key order.
    pub inputs: Vec<TableMeta>,
    /// From `output_level`, in key order.
    pub overlapping: Vec<TableMeta>,
    /// No deeper level holds any key in the job's range, so a tombstone written here shadows
    /// nothing and may be dropped.
    pub bottommost: bool,
}

impl Job {
    /// Every input table, from both levels.
    pub fn tables(&self) -> impl Iterator<Item = &TableMeta> {
        self.inputs.iter().chain(&self.overlapping)
    }

    /// Bytes of every input table.
    pub fn input_bytes(&self) -> u64 {
        self.tables().map(|t| t.file_size).sum()
    }
}

/// Smallest and largest user key over `tables` (which must not be empty).
pub fn key_range<'a>(
    tables: impl IntoIterator<Item = &'a TableMeta>,
) -> Option<(&'a [u8], &'a [u8])> {
    let mut range: Option<(&[u8], &[u8])> = None;
    for t in tables {
        range = Some(match range {
            None => (&t.smallest, &t.largest),
            Some((lo, hi)) => (lo.min(&t.smallest), hi.max(&t.largest)),
        });
    }
    range
}

/// True when `t` holds keys in `[lo, hi]`.
pub fn overlaps(t: &TableMeta, lo: &[u8], hi: &[u8]) -> bool {
    t.smallest.as_slice() <= hi && lo <= t.largest.as_slice()
}

/// The tables of `level` (a level ≥ 1: disjoint, in key order) overlapping `[lo, hi]`, found
/// by binary search: the picker asks this for every table of a level when it ranks them.
pub fn overlapping<'a>(level: &[&'a TableMeta], lo: &[u8], hi: &[u8]) -> Vec<&'a TableMeta> {
    debug_assert!(level.windows(2).all(|w| w[0].largest < w[1].smallest));
    let first = level.partition_point(|t| t.largest.as_slice() < lo);
    level[first..]
        .iter()
        .copied()
        .take_while(|t| t.smallest.as_slice() <= hi)
        .collect()
}

/// The next compaction for `levels` (index = level; L0 newest first, others in key order), or
/// None when every level is within its target. `cursors[level]` is the largest key of the
/// last table compacted out of that level (empty: start from the beginning).
pub fn pick(levels: &[Vec<&TableMeta>], shape: &Shape, cursors: &[Vec<u8>]) -> Option<Choice> {
    debug_assert_eq!(levels.len(), LEVELS as usize);
    let (level, score) =
        (0..LAST_LEVEL)
            .map(|l| (l, shape.score(levels, l)))
            .fold(
                (0, 0.0),
                |best, cur| if cur.1 > best.1 { cur } else { best },
            );
    if score < 1.0 {
        return None;
    }
    let output_level = level + 1;
    let inputs: Vec<&TableMeta> = if level == 0 {
        levels[0].clone()
    } else {
        let tables = &levels[level as usize];
        let cursor = cursors
            .get(level as usize)
            .map_or(&[][..], |c| c.as_slice());
        // Round-robin order from the cursor, so that among equals the range whose turn it is
        // goes first (`min_by` keeps the first of equal elements).
        let start = tables
            .iter()
            .position(|t| cursor.is_empty() || t.smallest.as_slice() > cursor)
            .unwrap_or(0);
        let below = &levels[output_level as usize];
        let next = (0..tables.len())
            .map(|i| tables[(start + i) % tables.len()])
            .min_by(|a, b| overlap_ratio(a, below).total_cmp(&overlap_ratio(b, below)))?;
        vec![next]
    };
    let (lo, hi) = key_range(inputs.iter().copied())?;
    let overlapping_tables = overlapping(&levels[output_level as usize], lo, hi);
    if inputs.len() == 1 && overlapping_tables.is_empty() {
        // Every other table of the level that overlaps nothing below moves with it, as
        // RocksDB extends a trivial move: into an empty level that is the whole level, so the
        // merges into this level that follow rewrite nothing of it.
        let below = &levels[output_level as usize];
        let tables = if level == 0 {
            vec![inputs[0].clone()]
        } else {
            levels[level as usize]
                .iter()
                .filter(|t| overlapping(below, &t.smallest, &t.largest).is_empty())
                .map(|t| (*t).clone())
                .collect()
        };
        return Some(Choice::Move {
            tables,
            to: output_level,
        });
    }
    let (lo, hi) = key_range(inputs.iter().chain(&overlapping_tables).copied())?;
    let bottommost = levels[output_level as usize + 1..]
        .iter()
        .all(|deeper| deeper.iter().all(|t| !overlaps(t, lo, hi)));
    Some(Choice::Merge(Job {
        level,
        output_level,
        inputs: inputs.into_iter().cloned().collect(),
        overlapping: overlapping_tables.into_iter().cloned().collect(),
        bottommost,
    }))
}

/// Bytes of `below` that compacting `t` into it rewrites, per byte of `t`: the table with the
/// least moves its level down at the least write amplification (RocksDB's default
/// `kMinOverlappingRatio`).
fn overlap_ratio(t: &TableMeta, below: &[&TableMeta]) -> f64 {
    let rewritten = level_bytes(&overlapping(below, &t.smallest, &t.largest));
    rewritten as f64 / t.file_size.max(1) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(number: u64, level: u32, lo: &str, hi: &str, size: u64) -> TableMeta {
        TableMeta {
            number,
            level,
            file_size: size,
            entries: 1,
            tombstones: 0,
            min_seq: number,
            max_seq: number,
            smallest: lo.as_bytes().to_vec(),
            largest: hi.as_bytes().to_vec(),
        }
    }

    const SHAPE: Shape = Shape {
        l0_trigger: 4,
        level1_bytes: 1000,
        ratio: 10,
    };

    fn view(tables: &[TableMeta]) -> Vec<Vec<&TableMeta>> {
        let mut levels: Vec<Vec<&TableMeta>> = vec![Vec::new(); LEVELS as usize];
        for t in tables {
            levels[t.level as usize].push(t);
        }
        levels[0].sort_by_key(|t| std::cmp::Reverse(t.max_seq));
        for l in &mut levels[1..] {
            l.sort_by(|a, b| a.smallest.cmp(&b.smallest));
        }
        levels
    }

    #[test]
    fn targets_grow_by_the_ratio_and_the_last_level_has_none() {
        assert_eq!(SHAPE.target_bytes(1), 1000);
        assert_eq!(SHAPE.target_bytes(2), 10_000);
        assert_eq!(SHAPE.target_bytes(3), 100_000);
        assert_eq!(SHAPE.target_bytes(LAST_LEVEL), u64::MAX);
    }

    #[test]
    fn nothing_to_do_below_the_triggers() {
        let tables = [
            table(1, 0, "a", "z", 100),
            table(2, 0, "a", "z", 100),
            table(3, 0, "a", "z", 100),
            table(4, 1, "a", "m", 400),
            table(5, 1, "n", "z", 500),
        ];
        assert_eq!(pick(&view(&tables), &SHAPE, &[]), None);
    }

    #[test]
    fn l0_at_the_trigger_merges_all_of_l0_with_the_overlapping_l1_tables() {
        let tables = [
            table(10, 0, "c", "f", 100),
            table(11, 0, "d", "g", 100),
            table(12, 0, "e", "h", 100),
            table(13, 0, "c", "d", 100),
            table(4, 1, "a", "b", 100),
            table(5, 1, "c", "e", 100),
            table(6, 1, "g", "k", 100),
            table(7, 1, "x", "z", 100),
        ];
        let Some(Choice::Merge(job)) = pick(&view(&tables), &SHAPE, &[]) else {
            panic!("expected a merge");
        };
        assert_eq!((job.level, job.output_level), (0, 1));
        let inputs: Vec<u64> = job.inputs.iter().map(|t| t.number).collect();
        assert_eq!(inputs, [13, 12, 11, 10], "L0 newest first");
        let overlapping: Vec<u64> = job.overlapping.iter().map(|t| t.number).collect();
        assert_eq!(overlapping, [5, 6]);
        assert!(job.bottommost);
        assert_eq!(job.input_bytes(), 600);
    }

    #[test]
    fn bottommost_only_when_no_deeper_table_overlaps() {
        let mut tables = vec![
            table(10, 0, "c", "f", 100),
            table(11, 0, "d", "g", 100),
            table(12, 0, "e", "h", 100),
            table(13, 0, "c", "d", 100),
            table(5, 1, "c", "e", 100),
            table(6, 2, "x", "z", 100),
        ];
        let Some(Choice::Merge(job)) = pick(&view(&tables), &SHAPE, &[]) else {
            panic!("expected a merge");
        };
        assert!(job.bottommost, "L2 holds only keys outside the range");
        tables.push(table(7, 4, "h", "i", 100));
        let Some(Choice::Merge(job)) = pick(&view(&tables), &SHAPE, &[]) else {
            panic!("expected a merge");
        };
        assert!(!job.bottommost, "L4 holds key h, inside the range");
    }

    #[test]
    fn a_level_over_target_compacts_one_table_round_robin() {
        let tables = [
            table(1, 1, "a", "c", 400),
            table(2, 1, "d", "f", 400),
            table(3, 1, "g", "i", 400),
            table(4, 2, "a", "b", 100),
            table(5, 2, "e", "e", 100),
            table(6, 2, "h", "z", 100),
        ];
        let levels = view(&tables);
        let mut cursors = vec![Vec::new(); LEVELS as usize];
        let mut order = Vec::new();
        for _ in 0..4 {
            let Some(Choice::Merge(job)) = pick(&levels, &SHAPE, &cursors) else {
                panic!("expected a merge");
            };
            assert_eq!((job.level, job.output_level), (1, 2));
            assert_eq!(job.inputs.len(), 1);
            let t = &job.inputs[0];
            for o in &job.overlapping {
                assert!(overlaps(o, &t.smallest, &t.largest));
            }
            assert_eq!(job.overlapping.len(), 1);
            order.push(t.number);
            cursors[1] = t.largest.clone();
        }
        assert_eq!(
            order,
            [1, 2, 3, 1],
            "every range gets its turn, then it wraps"
        );
    }

    #[test]
    fn the_most_urgent_level_goes_first() {
        // L1 at 3x its target beats L0 at 1.25x its trigger.
        let tables = [
            table(10, 0, "a", "b", 10),
            table(11, 0, "a", "b", 10),
            table(12, 0, "a", "b", 10),
            table(13, 0, "a", "b", 10),
            table(14, 0, "a", "b", 10),
            table(1, 1, "c", "d", 3000),
            table(2, 2, "c", "c", 10),
        ];
        let Some(Choice::Merge(job)) = pick(&view(&tables), &SHAPE, &[]) else {
            panic!("expected a merge");
        };
        assert_eq!(job.level, 1);
    }

    #[test]
    fn a_table_overlapping_nothing_below_moves() {
        let tables = [table(1, 1, "a", "c", 2000), table(2, 2, "d", "z", 100)];
        assert_eq!(
            pick(&view(&tables), &SHAPE, &[]),
            Some(Choice::Move {
                tables: vec![tables[0].clone()],
                to: 2
            })
        );
    }

    #[test]
    fn every_table_overlapping_nothing_below_moves_with_it() {
        let tables = [
            table(1, 1, "a", "c", 400),
            table(2, 1, "d", "f", 400),
            table(3, 1, "g", "i", 400),
            table(4, 2, "e", "e", 100),
        ];
        assert_eq!(
            pick(&view(&tables), &SHAPE, &[]),
            Some(Choice::Move {
                tables: vec![tables[0].clone(), tables[2].clone()],
                to: 2
            })
        );
        // Into an empty level, the whole level moves.
        let all = &tables[..3];
        assert_eq!(
            pick(&view(all), &SHAPE, &[]),
            Some(Choice::Move {
                tables: all.to_vec(),
                to: 2
            })
        );
    }

    #[test]
    fn the_table_overlapping_least_below_per_byte_goes_first() {
        let tables = [
            table(1, 1, "a", "c", 400),
            table(2, 1, "d", "f", 400),
            table(3, 1, "g", "i", 400),
            table(4, 2, "a", "b", 900),
            table(5, 2, "d", "e", 100),
            table(6, 2, "h", "z", 500),
        ];
        let Some(Choice::Merge(job)) = pick(&view(&tables), &SHAPE, &[]) else {
            panic!("expected a merge");
        };
        assert_eq!(job.inputs, [tables[1].clone()]);
        assert_eq!(job.overlapping, [tables[4].clone()]);
    }

    #[test]
    fn the_last_level_is_never_compacted() {
        let tables = [table(1, LAST_LEVEL, "a", "z", u64::MAX / 2)];
        assert_eq!(pick(&view(&tables), &SHAPE, &[]), None);
    }

    #[test]
    fn overlap_is_inclusive_at_both_ends() {
        let t = table(1, 1, "c", "f", 1);
        assert!(overlaps(&t, b"a", b"c"));
        assert!(overlaps(&t, b"f", b"z"));
        assert!(overlaps(&t, b"d", b"e"));
        assert!(overlaps(&t, b"a", b"z"));
        assert!(!overlaps(&t, b"a", b"bz"));
        assert!(!overlaps(&t, b"fa", b"z"));
        assert_eq!(
            key_range([&t, &table(2, 1, "a", "d", 1)]),
            Some((&b"a"[..], &b"f"[..]))
        );
        assert_eq!(key_range(std::iter::empty()), None);
    }

    /// The binary search finds exactly the tables a scan of the level finds, for ranges that
    /// start and end inside tables, in gaps, and past either end.
    #[test]
    fn overlapping_finds_what_a_scan_finds() {
        let tables: Vec<TableMeta> = (0..20u8)
            .map(|i| {
                let lo = [b'a' + i, b'0'];
                let hi = [b'a' + i, b'5'];
                table(
                    u64::from(i),
                    1,
                    std::str::from_utf8(&lo).unwrap(),
                    std::str::from_utf8(&hi).unwrap(),
                    1,
                )
            })
            .collect();
        let level = &view(&tables)[1];
        let mut bounds: Vec<Vec<u8>> = vec![b"".to_vec(), b"~".to_vec()];
        for c in b'a'..b'a' + 20 {
            for d in [b'0', b'3', b'5', b'8'] {
                bounds.push(vec![c, d]);
            }
        }
        for lo in &bounds {
            for hi in bounds.iter().filter(|hi| hi >= &lo) {
                let scanned: Vec<u64> = level
                    .iter()
                    .filter(|t| overlaps(t, lo, hi))
                    .map(|t| t.number)
                    .collect();
                let found: Vec<u64> = overlapping(level, lo, hi)
                    .iter()
                    .map(|t| t.number)
                    .collect();
                assert_eq!(found, scanned, "[{lo:?}, {hi:?}]");
            }
        }
    }
}
