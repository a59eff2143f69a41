//! Black-box tests of one `shoal` process: commands through a Redis client library, durability
//! across kill -9 and restart, graceful stop, and malformed input.

#![allow(clippy::unwrap_used)]

use std::collections::HashSet;
use std::io::{Read, Write};
use std::time::{Duration, Instant};

use redis::{Commands, RedisResult, Value};
use shoal_tests::Server;

/// Two shards, so keys are split between them and half the requests cross the shard mesh.
const SHARDS: &[&str] = &["--shards", "2"];

fn err_text<T: std::fmt::Debug>(r: RedisResult<T>) -> String {
    let e = r.unwrap_err();
    format!("{} {}", e.code().unwrap_or(""), e.detail().unwrap_or(""))
        .trim()
        .to_owned()
}

/// Reads from a raw connection until the server closes it; returns what it sent.
fn read_to_close(s: &mut std::net::TcpStream) -> String {
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn strings_keys_and_expiry() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), SHARDS);
    let mut c = server.connection();

    assert_eq!(redis::cmd("PING").query::<String>(&mut c).unwrap(), "PONG");
    assert_eq!(
        redis::cmd("ECHO")
            .arg("hi")
            .query::<String>(&mut c)
            .unwrap(),
        "hi"
    );
    let _: () = c.set("greeting", "hello").unwrap();
    assert_eq!(c.get::<_, String>("greeting").unwrap(), "hello");
    assert_eq!(c.get::<_, Option<String>>("missing").unwrap(), None);

    // Multi-key commands over keys spread across both shards, answered in order.
    let pairs: Vec<(String, String)> = (0..200)
        .map(|i| (format!("k{i}"), format!("v{i}")))
        .collect();
    let _: () = c.mset(&pairs).unwrap();
    let keys: Vec<&String> = pairs.iter().map(|(k, _)| k).collect();
    let values: Vec<Option<String>> = c.mget(&keys).unwrap();
    assert_eq!(
        values,
        pairs
            .iter()
            .map(|(_, v)| Some(v.clone()))
            .collect::<Vec<_>>()
    );
    assert_eq!(c.exists::<_, i64>(&["k1", "k2", "nope", "k1"]).unwrap(), 3);
    assert_eq!(c.del::<_, i64>(&["k1", "k2", "nope", "k1"]).unwrap(), 2);
    assert_eq!(c.exists::<_, i64>(&["k1", "k2"]).unwrap(), 0);
    assert_eq!(redis::cmd("DBSIZE").query::<i64>(&mut c).unwrap(), 199);

    // SET options.
    let nx: Option<String> = redis::cmd("SET")
        .arg("greeting")
        .arg("x")
        .arg("NX")
        .query(&mut c)
        .unwrap();
    assert_eq!(nx, None);
    let xx: Option<String> = redis::cmd("SET")
        .arg("fresh")
        .arg("x")
        .arg("XX")
        .query(&mut c)
        .unwrap();
    assert_eq!(xx, None);
    let old: Option<String> = redis::cmd("SET")
        .arg("greeting")
        .arg("bye")
        .arg("GET")
        .query(&mut c)
        .unwrap();
    assert_eq!(old.as_deref(), Some("hello"));
    assert_eq!(c.get::<_, String>("greeting").unwrap(), "bye");

    // Expiry.
    let _: () = redis::cmd("SET")
        .arg("t")
        .arg("v")
        .arg("EX")
        .arg(100)
        .query(&mut c)
        .unwrap();
    let ttl: i64 = c.ttl("t").unwrap();
    assert!((99..=100).contains(&ttl), "ttl {ttl}");
    let pttl: i64 = c.pttl("t").unwrap();
    assert!((90_000..=100_000).contains(&pttl), "pttl {pttl}");
    assert_eq!(c.ttl::<_, i64>("greeting").unwrap(), -1);
    assert_eq!(c.ttl::<_, i64>("missing").unwrap(), -2);
    assert_eq!(c.expire::<_, i64>("greeting", 50).unwrap(), 1);
    assert_eq!(c.expire::<_, i64>("missing", 50).unwrap(), 0);
    let _: () = redis::cmd("SET")
        .arg("short")
        .arg("v")
        .arg("PX")
        .arg(50)
        .query(&mut c)
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while c.get::<_, Option<String>>("short").unwrap().is_some() {
        assert!(std::time::Instant::now() < deadline, "key did not expire");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(
        c.expire::<_, i64>("t", -1).unwrap(),
        1,
        "a past time deletes"
    );
    assert_eq!(c.exists::<_, i64>("t").unwrap(), 0);

    // Redis's error texts.
    assert_eq!(
        err_text(redis::cmd("NOSUCH").arg("a").query::<Value>(&mut c)),
        "ERR unknown command 'NOSUCH', with args beginning with: 'a'"
    );
    assert_eq!(
        err_text(redis::cmd("GET").query::<Value>(&mut c)),
        "ERR wrong number of arguments for 'get' command"
    );
    assert_eq!(
        err_text(
            redis::cmd("SET")
                .arg("a")
                .arg("b")
                .arg("NX")
                .arg("XX")
                .query::<Value>(&mut c)
        ),
        "ERR syntax error"
    );
    assert_eq!(
        err_text(
            redis::cmd("EXPIRE")
                .arg("a")
                .arg("soon")
                .query::<Value>(&mut c)
        ),
        "ERR value is not an integer or out of range"
    );
    assert_eq!(
        err_text(
            redis::cmd("SET")
                .arg("a")
                .arg("b")
                .arg("EX")
                .arg(0)
                .query::<Value>(&mut c)
        ),
        "ERR invalid expire time in 'set' command"
    );
    // The connection is still usable after errors.
    assert_eq!(c.get::<_, String>("k3").unwrap(), "v3");

    let _: () = redis::cmd("FLUSHDB").query(&mut c).unwrap();
    assert_eq!(redis::cmd("DBSIZE").query::<i64>(&mut c).unwrap(), 0);
}

#[test]
fn pipelined_writes_and_reads_keep_values_and_expiries_across_the_shard_mesh() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), SHARDS);
    let mut c = server.connection();
    // 64 keys over 2 shards: whichever shard took the connection, about half of them are
    // forwarded, as batches the owner serves from the frame without copying them out.
    let keys: Vec<String> = (0..64).map(|i| format!("hop{i}")).collect();
    let mut pipe = redis::pipe();
    for (i, k) in keys.iter().enumerate() {
        if i % 2 == 0 {
            pipe.cmd("SET")
                .arg(k)
                .arg(format!("v{i}"))
                .arg("PX")
                .arg(100_000);
        } else {
            pipe.cmd("SET").arg(k).arg(format!("v{i}"));
        }
        pipe.ignore();
    }
    let _: () = pipe.query(&mut c).unwrap();
    let values: Vec<String> = c.mget(&keys).unwrap();
    let expected: Vec<String> = (0..64).map(|i| format!("v{i}")).collect();
    assert_eq!(values, expected);
    for (i, k) in keys.iter().enumerate() {
        let pttl: i64 = c.pttl(k).unwrap();
        if i % 2 == 0 {
            assert!((90_000..=100_000).contains(&pttl), "{k}: pttl {pttl}");
        } else {
            assert_eq!(pttl, -1, "{k}");
        }
    }
}

#[test]
fn scan_visits_every_key_once() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), SHARDS);
    let mut c = server.connection();
    let mut expected = HashSet::new();
    for i in 0..500 {
        let key = if i % 5 == 0 {
            format!("user:{i}")
        } else {
            format!("item:{i}")
        };
        let _: () = c.set(&key, i).unwrap();
        expected.insert(key);
    }
    for count in [1usize, 7, 100, 1000] {
        let mut seen = Vec::new();
        let mut cursor = 0u64;
        let mut calls = 0;
        loop {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("COUNT")
                .arg(count)
                .query(&mut c)
                .unwrap();
            seen.extend(keys);
            calls += 1;
            assert!(calls <= 1000, "SCAN did not finish");
            if next == 0 {
                break;
            }
            cursor = next;
        }
        let unique: HashSet<String> = seen.iter().cloned().collect();
        assert_eq!(
            unique.len(),
            seen.len(),
            "a key was returned twice (COUNT {count})"
        );
        assert_eq!(unique, expected, "COUNT {count}");
    }
    let users: HashSet<String> = c.scan_match("user:*").unwrap().collect();
    assert_eq!(users.len(), 100);
    assert!(users.iter().all(|k| k.starts_with("user:")));
}

#[test]
fn info_hello_and_pipelines() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), SHARDS);
    let mut c = server.connection();
    let _: () = redis::cmd("SET")
        .arg("a")
        .arg("1")
        .arg("EX")
        .arg(1000)
        .query(&mut c)
        .unwrap();
    let _: () = c.set("b", "2").unwrap();
    let info: String = redis::cmd("INFO").query(&mut c).unwrap();
    for field in [
        "redis_version:",
        "redis_mode:standalone",
        "os:",
        &format!("process_id:{}", server.pid()),
        &format!("tcp_port:{}", server.addr.port()),
        "uptime_in_seconds:",
        "connected_clients:",
        "used_memory:",
        "used_memory_human:",
        "shoal_memory_budget:0\r\n",
        "shoal_engine_memory:",
        "pending_compaction_bytes=",
        "total_commands_processed:",
        "instantaneous_ops_per_sec:",
        "# Keyspace",
        "db0:keys=2,expires=1,avg_ttl=0",
        "shard0:",
        "shard1:",
        "latency_p99_us=",
    ] {
        assert!(info.contains(field), "INFO lacks {field:?}:\n{info}");
    }
    let keyspace: String = redis::cmd("INFO").arg("keyspace").query(&mut c).unwrap();
    assert!(keyspace.starts_with("# Keyspace") && !keyspace.contains("# Server"));
    assert!(
        redis::cmd("COMMAND")
            .arg("COUNT")
            .query::<i64>(&mut c)
            .unwrap()
            > 20
    );

    // A pipeline mixing writes and reads of the same keys is answered in order.
    let mut pipe = redis::pipe();
    for i in 0..50 {
        pipe.set(format!("p{}", i % 7), i)
            .get(format!("p{}", i % 7));
    }
    let replies: Vec<Value> = pipe.query(&mut c).unwrap();
    for (i, pair) in replies.chunks(2).enumerate() {
        assert_eq!(pair[0], Value::Okay);
        assert_eq!(pair[1], Value::BulkString(i.to_string().into_bytes()));
    }

    // RESP3 after HELLO 3, on a raw connection.
    let mut raw = server.raw();
    raw.write_all(
        b"*2\r\n$5\r\nHELLO\r\n$1\r\n3\r\n*2\r\n$3\r\nGET\r\n$4\r\nnone\r\n*1\r\n$4\r\nQUIT\r\n",
    )
    .unwrap();
    let text = read_to_close(&mut raw);
    assert!(text.starts_with("%7\r\n"), "{text}");
    assert!(text.contains("$5\r\nproto\r\n:3\r\n"), "{text}");
    assert!(text.ends_with("_\r\n+OK\r\n"), "{text}");
}

#[test]
fn acknowledged_writes_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path(), SHARDS);
    let mut c = server.connection();
    for i in 0..300 {
        let _: () = c.set(format!("d{i}"), format!("value-{i}")).unwrap();
    }
    let mut pipe = redis::pipe();
    for i in 300..1000 {
        pipe.set(format!("d{i}"), format!("value-{i}")).ignore();
    }
    let _: () = pipe.query(&mut c).unwrap();
    let _: () = redis::cmd("SET")
        .arg("ttl")
        .arg("x")
        .arg("EX")
        .arg(1000)
        .query(&mut c)
        .unwrap();
    let _: i64 = c.del("d0").unwrap();
    drop(c);
    server.kill();
    server.restart();
    let mut c = server.connection();
    assert_eq!(
        c.get::<_, Option<String>>("d0").unwrap(),
        None,
        "delete survived"
    );
    let keys: Vec<String> = (1..1000).map(|i| format!("d{i}")).collect();
    let values: Vec<Option<String>> = c.mget(&keys).unwrap();
    for (i, v) in values.iter().enumerate() {
        assert_eq!(v.as_deref(), Some(format!("value-{}", i + 1).as_str()));
    }
    let ttl: i64 = c.ttl("ttl").unwrap();
    assert!(ttl > 990, "ttl {ttl}");
    assert_eq!(redis::cmd("DBSIZE").query::<i64>(&mut c).unwrap(), 1000);
}

#[test]
fn sigterm_stops_cleanly_and_keeps_data() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path(), &["--shards", "2", "--fsync", "never"]);
    let mut c = server.connection();
    let pairs: Vec<(String, String)> = (0..500)
        .map(|i| (format!("g{i}"), format!("{i}")))
        .collect();
    let _: () = c.mset(&pairs).unwrap();
    drop(c);
    assert_eq!(server.stop(), Some(0));
    server.restart();
    let mut c = server.connection();
    assert_eq!(redis::cmd("DBSIZE").query::<i64>(&mut c).unwrap(), 500);
    assert_eq!(c.get::<_, String>("g499").unwrap(), "499");
}

#[test]
fn memory_budget_is_split_across_shards_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        dir.path(),
        &["--shards", "2", "--memory-budget", "67108864"],
    );
    let mut c = server.connection();
    let _: () = c.set("k", "v").unwrap();
    let memory: String = redis::cmd("INFO").arg("memory").query(&mut c).unwrap();
    assert!(
        memory.contains("shoal_memory_budget:67108864\r\n"),
        "{memory}"
    );
    let shards: String = redis::cmd("INFO").arg("shards").query(&mut c).unwrap();
    assert_eq!(
        shards.matches(",memory_budget=33554432,").count(),
        2,
        "{shards}"
    );
}

/// INFO's per-shard `log_syncs`: a synced write waits for its own fdatasync, a write with
/// `--fsync never` for none.
#[test]
fn info_counts_the_commit_log_syncs() {
    let field = |info: &str, name: &str| -> u64 {
        let at = info
            .find(&format!(",{name}="))
            .unwrap_or_else(|| panic!("{info}"))
            + name.len()
            + 2;
        info[at..].split(',').next().unwrap().parse().unwrap()
    };
    for (fsync, synced) in [("always", true), ("never", false)] {
        let dir = tempfile::tempdir().unwrap();
        let server = Server::start(dir.path(), &["--shards", "1", "--fsync", fsync]);
        let mut c = server.connection();
        for i in 0..5 {
            let _: () = c.set(format!("k{i}"), "v").unwrap();
        }
        let shards: String = redis::cmd("INFO").arg("shards").query(&mut c).unwrap();
        assert_eq!(field(&shards, "engine_writes"), 5, "{shards}");
        let syncs = field(&shards, "log_syncs");
        if synced {
            assert!(syncs >= 5, "one sync per acknowledged write: {shards}");
        } else {
            assert_eq!(syncs, 0, "{shards}");
        }
    }
}

const SCHED_BATCH: u32 = 3;

/// (name, scheduling policy) of every thread of process `pid`.
fn thread_policies(pid: u32) -> Vec<(String, u32)> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).unwrap();
    tasks
        // A thread can exit between the listing and the read.
        .filter_map(|task| std::fs::read_to_string(task.unwrap().path().join("stat")).ok())
        .map(|stat| {
            let (name, rest) = stat.split_once(") ").unwrap();
            let name = name.split_once('(').unwrap().1.to_owned();
            // Field 41 of stat is the policy; `rest` starts at field 3.
            let policy = rest.split(' ').nth(41 - 3).unwrap().parse().unwrap();
            (name, policy)
        })
        .collect()
}

/// Executor threads (named `shoal-shard-<n>`) of server `pid` under `SCHED_BATCH`.
fn batch_executors(pid: u32) -> usize {
    thread_policies(pid)
        .iter()
        .filter(|(name, policy)| name.starts_with("shoal-shard-") && *policy == SCHED_BATCH)
        .count()
}

#[test]
fn executors_run_with_the_configured_scheduling_policy() {
    let dir = tempfile::tempdir().unwrap();
    let batch = Server::start(dir.path(), &["--shards", "2"]);
    assert_eq!(batch_executors(batch.pid()), 2, "batch is the default");
    // Synced writes make io_uring start workers for the fdatasyncs. They are born with their
    // executor's SCHED_BATCH; the shard's ticker puts them back to SCHED_OTHER.
    let mut c = batch.connection();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        for i in 0..20 {
            let _: () = c.set(format!("k{i}"), "v").unwrap();
        }
        let workers: Vec<u32> = thread_policies(batch.pid())
            .into_iter()
            .filter(|(name, _)| name.starts_with("iou-wrk-"))
            .map(|(_, policy)| policy)
            .collect();
        if !workers.is_empty() && !workers.contains(&SCHED_BATCH) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "io_uring workers still under SCHED_BATCH (or none): {workers:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(batch);
    let normal = Server::start(dir.path(), &["--shards", "2", "--sched", "normal"]);
    assert_eq!(batch_executors(normal.pid()), 0);
}

#[test]
fn malformed_input_closes_only_that_connection() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--shards", "2", "--max-value-bytes", "1024"]);
    let mut good = server.connection();
    let _: () = good.set("k", "v").unwrap();

    let cases: &[(&[u8], &str)] = &[
        (
            b"*1\r\n$99999999999\r\n",
            "-ERR Protocol error: invalid bulk length\r\n",
        ),
        (
            b"*2\r\n$3\r\nGET\r\n$-7\r\n",
            "-ERR Protocol error: invalid bulk length\r\n",
        ),
        (
            b"*99999999999\r\n",
            "-ERR Protocol error: invalid multibulk length\r\n",
        ),
        (
            b"*2\r\n$3\r\nGET\r\n:12\r\n",
            "-ERR Protocol error: expected '$', got ':'\r\n",
        ),
    ];
    for (input, reply) in cases {
        let mut raw = server.raw();
        // A good request first: it is answered before the broken one closes the connection.
        raw.write_all(b"*1\r\n$4\r\nPING\r\n").unwrap();
        raw.write_all(input).unwrap();
        assert_eq!(
            read_to_close(&mut raw),
            format!("+PONG\r\n{reply}"),
            "{input:?}"
        );
    }

    // Over-limit keys and values are refused without closing the connection.
    let big_value = vec![b'x'; 2000];
    let r: RedisResult<()> = good.set("big", &big_value[..]);
    assert!(err_text(r).starts_with("ERR string exceeds maximum allowed size"));
    let long_key = "k".repeat(17 * 1024);
    let r: RedisResult<Option<String>> = good.get(&long_key);
    assert!(err_text(r).starts_with("ERR key is"));

    // The good connection never noticed.
    assert_eq!(good.get::<_, String>("k").unwrap(), "v");
    assert_eq!(
        redis::cmd("PING").query::<String>(&mut good).unwrap(),
        "PONG"
    );
}

#[test]
fn refuses_a_port_in_use() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let out = std::process::Command::new(shoal_tests::shoal_binary())
        .args(["--listen", &format!("127.0.0.1:{port}"), "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("already in use"), "{stderr}");
}

#[test]
fn relative_data_dir_and_layout_check() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start_in(Some(dir.path()), std::path::Path::new("data"), SHARDS);
    let mut c = server.connection();
    let _: () = c.set("k", "v").unwrap();
    drop(c);
    assert_eq!(server.stop(), Some(0));
    assert!(dir.path().join("data/shard-0").is_dir());
    assert!(dir.path().join("data/shard-1").is_dir());

    // The data directory remembers its shard count.
    let out = std::process::Command::new(shoal_tests::shoal_binary())
        .current_dir(dir.path())
        .args([
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            "data",
            "--shards",
            "1",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("shards, partitions and the node cannot change"),
        "{stderr}"
    );
}
