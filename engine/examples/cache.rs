//! An embedded cache with expiring entries, on the blocking API: session tokens that live for
//! a few seconds. It writes enough to flush several tables, reads through the expiry, then
//! compacts, which drops what has expired, and leaves the tables for `sstable-dump`:
//!
//! ```sh
//! cargo run -p shoal-engine --example cache -- /tmp/sessions
//! sstable-dump --limit 5 /tmp/sessions/*.sst
//! ```

use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use shoal_engine::blocking::Db;
use shoal_engine::{Durability, Entry, NO_EXPIRY, Options, WriteBatch};

/// Sessions written.
const SESSIONS: u64 = 60_000;
/// Sessions per write batch: a login burst, made durable together.
const BATCH: u64 = 500;
/// Each session lives between one and four seconds, but one in ten is "remember me" and lives
/// an hour: those stay in the tables.
const TTL_MIN_MS: u64 = 1_000;
const TTL_SPREAD_MS: u64 = 3_000;
const REMEMBERED_TTL_MS: u64 = 3_600_000;

/// A cache of byte values that expire: the engine keeps the expiry with each entry, reads
/// stop returning an entry the moment it expires, and compaction drops it from disk.
struct TtlCache {
    db: Db,
}

impl TtlCache {
    fn open(dir: &str) -> shoal_engine::Result<TtlCache> {
        let options = Options {
            // A cache can lose its last second of writes in a crash: no fdatasync per batch.
            durability: Durability::Buffered,
            // Small, so this example's few megabytes make several tables.
            memtable_bytes: 1 << 20,
            l0_compaction_trigger: 4,
            ..Options::default()
        };
        Ok(TtlCache {
            db: Db::open(dir, options)?,
        })
    }

    /// Stores every `(key, value)` to expire `ttl_ms` from now, in one batch.
    fn set_many(
        &self,
        items: impl Iterator<Item = (Vec<u8>, Vec<u8>, u64)>,
    ) -> shoal_engine::Result<()> {
        let now = now_ms();
        let mut batch = WriteBatch::new();
        for (key, value, ttl_ms) in items {
            let entry = Entry {
                expires_at_ms: now + ttl_ms,
                ..Entry::put(value)
            };
            batch.put_entry(key, entry);
        }
        self.db.write(batch)
    }

    fn get(&self, key: &[u8]) -> shoal_engine::Result<Option<Vec<u8>>> {
        self.db.get(key)
    }

    /// Live sessions, counted by a scan.
    fn live(&self) -> shoal_engine::Result<u64> {
        let mut n = 0;
        for item in self.db.scan_prefix(b"session:") {
            item?;
            n += 1;
        }
        Ok(n)
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(NO_EXPIRY, |d| d.as_millis() as u64)
}

fn session_key(i: u64) -> Vec<u8> {
    format!("session:{i:08}").into_bytes()
}

fn main() -> ExitCode {
    let Some(dir) = std::env::args().nth(1) else {
        eprintln!("usage: cache DIR");
        return ExitCode::FAILURE;
    };
    match run(&dir) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(dir: &str) -> shoal_engine::Result<()> {
    let cache = TtlCache::open(dir)?;
    login_wave(&cache, 0)?;
    println!(
        "wrote {SESSIONS} sessions; {} live; session 2 is {:?}",
        cache.live()?,
        cache
            .get(&session_key(2))?
            .map(|v| String::from_utf8_lossy(&v[..22]).into_owned())
    );
    for second in 1..=4 {
        std::thread::sleep(Duration::from_secs(1));
        println!("after {second} s: {} live", cache.live()?);
    }
    // Expired entries are invisible at once; on disk they go when a compaction rewrites their
    // tables, which the next wave of logins brings about.
    login_wave(&cache, 1)?;
    cache.db.compact()?;
    let stats = cache.db.stats();
    println!(
        "second wave: {} live; compactions dropped {} expired entries; {} tables \
         ({} flushes, {} compactions) in {dir}",
        cache.live()?,
        stats.expired_dropped,
        stats.live_tables(),
        stats.flushes,
        stats.compactions
    );
    cache.db.close()
}

/// Writes wave `wave` of `SESSIONS` sessions, in batches, and flushes them. Session ids of
/// the waves interleave (the first even, the second odd), as ids handed out over time do
/// when they are random: each wave's tables span the whole key range.
fn login_wave(cache: &TtlCache, wave: u64) -> shoal_engine::Result<()> {
    for start in (0..SESSIONS).step_by(BATCH as usize) {
        cache.set_many((start..start + BATCH).map(|n| {
            let i = 2 * n + wave;
            let token = format!("token-{:016x}", i.wrapping_mul(0x9E37_79B9_7F4A_7C15));
            let ttl = if n % 10 == 0 {
                REMEMBERED_TTL_MS
            } else {
                TTL_MIN_MS + i * 7919 % TTL_SPREAD_MS
            };
            (session_key(i), token.repeat(4).into_bytes(), ttl)
        }))?;
    }
    cache.db.flush()
}
