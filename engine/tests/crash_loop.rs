//! kill -9 in a loop: a child process (`examples/crash_writer.rs`) writes with synced
//! durability from several threads, with memtables small enough that flushes run all the
//! time, and reports each write's intent and acknowledgement on stdout. It is killed with
//! SIGKILL at a random moment; this process then opens the database itself and checks that
//! every acknowledged write is there with its value, every acknowledged delete stays deleted,
//! and nothing else changed except, possibly, the one write in flight per thread. Then the
//! child is restarted on the same directory, and so on.
//!
//! The default test kills 5 times (a few seconds); the `#[ignore]`d one 30 times:
//! `cargo test -p shoal-engine --test crash_loop -- --ignored`.
//!
//! The child is the `crash_writer` example: `cargo test -p shoal-engine` builds it with the
//! tests; a filtered run (`--test crash_loop`) builds it here when it is missing or older than
//! its source.

#![allow(clippy::unwrap_used, reason = "a test fails loudly")]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use shoal_engine::{Options, blocking::Db};

/// The writer's own options (`examples/crash_writer.rs`), so checking between runs does not
/// change the shape of the files.
fn options() -> Options {
    Options {
        memtable_bytes: 32 << 10,
        max_immutable_memtables: 2,
        log_segment_bytes: 64 << 10,
        block_bytes: 1024,
        block_cache_bytes: 1 << 20,
        ..Options::default()
    }
}

const THREADS: u32 = 4;
/// The child must acknowledge its first write within this long, or the test fails.
const FIRST_ACK_TIMEOUT: Duration = Duration::from_secs(20);
/// How long the child runs after its first acknowledgement before it is killed.
const RUN_MS: std::ops::Range<u64> = 20..400;
/// `seq` values of one run stay below this, so runs never reuse a value.
const SEQ_PER_RUN: u64 = 10_000_000;

/// Key → value (`None`: deleted) as acknowledged so far.
type Model = BTreeMap<String, Option<String>>;

/// What one run of the child reported.
#[derive(Default)]
struct Report {
    /// Acknowledged writes, in acknowledgement order: (key, value).
    acked: Vec<(String, Option<String>)>,
    /// Per thread, the write started but not acknowledged when the child died.
    in_flight: BTreeMap<u32, (String, Option<String>)>,
}

fn parse(lines: &[String]) -> Report {
    let mut report = Report::default();
    let mut intents: BTreeMap<u32, (u64, String, Option<String>)> = BTreeMap::new();
    for line in lines {
        let f: Vec<&str> = line.split(' ').collect();
        match f.as_slice() {
            ["W", t, seq, key, value] => {
                let value = (*value != "-").then(|| value.to_string());
                let t: u32 = t.parse().unwrap();
                let prev = intents.insert(t, (seq.parse().unwrap(), key.to_string(), value));
                assert!(prev.is_none(), "thread {t} started two writes at once");
            }
            ["A", t, seq] => {
                let t: u32 = t.parse().unwrap();
                let (s, key, value) = intents.remove(&t).expect("ack without intent");
                assert_eq!(s, seq.parse::<u64>().unwrap());
                report.acked.push((key, value));
            }
            _ => panic!("bad line from the child: {line:?}"),
        }
    }
    report.in_flight = intents
        .into_iter()
        .map(|(t, (_, k, v))| (t, (k, v)))
        .collect();
    report
}

fn writer_binary() -> PathBuf {
    // tests run from target/<profile>/deps; examples are built to target/<profile>/examples.
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(Path::parent).unwrap();
    let path = profile_dir.join("examples").join("crash_writer");
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/crash_writer.rs");
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    // `cargo test -p shoal-engine` builds examples; a run filtered to this test does not.
    if modified(&path).is_none() || modified(&path) < modified(&source) {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "-p", "shoal-engine", "--example", "crash_writer"])
            .status()
            .unwrap();
        assert!(status.success(), "building the crash_writer example failed");
    }
    assert!(path.exists(), "{} missing", path.display());
    path
}

/// Kills the child on drop, so a failing test leaves no writer running.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the writer, lets it run until it has acknowledged a write and then for a random
/// while, kills it with SIGKILL and returns everything it printed.
fn run_and_kill(bin: &Path, dir: &Path, run: u64, rng: &mut StdRng) -> Vec<String> {
    let child = Command::new(bin)
        .arg(dir)
        .arg(THREADS.to_string())
        .arg((run * SEQ_PER_RUN).to_string())
        .arg(rng.r#gen::<u64>().to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut child = Running(child);
    let stdout = child.0.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut lines = Vec::new();
    let deadline = Instant::now() + FIRST_ACK_TIMEOUT;
    while !lines.iter().any(|l: &String| l.starts_with("A ")) {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => lines.push(line),
            Err(e) => {
                panic!("no acknowledgement from the writer within {FIRST_ACK_TIMEOUT:?}: {e}")
            }
        }
    }
    // The random moment of the kill is the point of the test, not a synchronisation.
    std::thread::sleep(Duration::from_millis(rng.gen_range(RUN_MS)));
    child.0.kill().unwrap();
    let status = child.0.wait().unwrap();
    assert_eq!(
        status.signal(),
        Some(libc::SIGKILL),
        "the writer stopped by itself: {status}"
    );
    reader.join().unwrap();
    // Every line was one pipe write of under PIPE_BUF bytes: the kill cannot cut one.
    lines.extend(rx.try_iter());
    lines
}

/// Checks the database against the model and the writes in flight, then folds what those
/// writes left into the model. Returns the number of tables, to see that flushes ran.
fn check(
    dir: &Path,
    model: &mut Model,
    in_flight: &BTreeMap<u32, (String, Option<String>)>,
) -> u64 {
    let db = Db::open(dir, options()).unwrap();
    for (key, want) in model.iter() {
        let got = db
            .get(key.as_bytes())
            .unwrap()
            .map(|v| String::from_utf8(v).unwrap());
        let flying = in_flight.values().find(|(k, _)| k == key).map(|(_, v)| v);
        assert!(
            got == *want || flying == Some(&got),
            "{key}: got {got:?}, acknowledged {want:?}, in flight {flying:?}"
        );
    }
    // A write in flight may have landed; from now on its result is the state to keep.
    for (key, _) in in_flight.values() {
        let got = db
            .get(key.as_bytes())
            .unwrap()
            .map(|v| String::from_utf8(v).unwrap());
        let known = model.get(key).cloned().flatten();
        let flying = in_flight
            .values()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone());
        assert!(
            got == known || Some(got.clone()) == flying,
            "{key}: got {got:?}"
        );
        model.insert(key.clone(), got);
    }
    // Nothing else is there.
    for item in db.scan(..) {
        let (k, v) = item.unwrap();
        let k = String::from_utf8(k).unwrap();
        let v = String::from_utf8(v).unwrap();
        assert_eq!(model.get(&k), Some(&Some(v)), "unexpected {k}");
    }
    let tables = db.stats().levels.iter().map(|l| l.tables).sum();
    db.close().unwrap();
    tables
}

fn crash_loop(kills: u64, seed: u64) {
    let bin = writer_binary();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("db");
    let mut rng = StdRng::seed_from_u64(seed);
    let mut model = Model::new();
    let mut acked_total = 0;
    let mut tables = 0;
    for run in 0..kills {
        let lines = run_and_kill(&bin, &dir, run, &mut rng);
        let report = parse(&lines);
        acked_total += report.acked.len();
        for (key, value) in report.acked {
            model.insert(key, value);
        }
        tables = check(&dir, &mut model, &report.in_flight);
        eprintln!(
            "seed {seed} run {run}: {acked_total} writes acknowledged so far, {} keys, {tables} tables",
            model.len()
        );
    }
    assert!(acked_total > 0);
    assert!(
        tables > 0,
        "no flush ever happened: the test did not exercise tables"
    );
}

#[test]
fn quick_crash_loop() {
    crash_loop(5, 0x5eed);
}

#[test]
#[ignore = "long: 30 kills"]
fn long_crash_loop() {
    let seed = std::env::var("CRASH_LOOP_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    crash_loop(30, seed);
}
