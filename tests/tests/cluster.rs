//! Black-box tests of a 3-node cluster (N=3, R=2, W=2) of real `shoal` processes on
//! 127.0.0.1: availability with a node killed, siblings and their resolution, read repair,
//! durability across kill -9 of every node, per-connection / per-request levels, and a
//! frozen node that must not stall requests past their deadline.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use redis::{Commands, Connection, RedisResult, Value};
use shoal_tests::cluster::{Cluster, Spec};

/// Slack over the request deadline for a failing request's answer: the driver's tick, a
/// scheduling delay on a loaded 2-core machine.
const DEADLINE_SLACK: Duration = Duration::from_millis(1_500);
/// How long a read repair may take to reach the repaired node.
const REPAIR_TIMEOUT: Duration = Duration::from_secs(10);

fn err_text<T: std::fmt::Debug>(r: RedisResult<T>) -> String {
    let e = r.unwrap_err();
    format!("{} {}", e.code().unwrap_or(""), e.detail().unwrap_or(""))
        .trim()
        .to_owned()
}

/// A quorum failure as the coordinator reports it.
fn is_quorum_failure(text: &str) -> bool {
    text.starts_with("UNAVAILABLE needed") || text.starts_with("TIMEOUT needed")
}

fn key(i: usize) -> String {
    format!("key:{i:03}")
}

fn value(i: usize) -> String {
    format!("value-{i}")
}

/// `VGET key [R level]`: the context and the sorted sibling values.
fn vget(c: &mut Connection, key: &str, r: Option<&str>) -> RedisResult<(String, Vec<String>)> {
    let mut cmd = redis::cmd("VGET");
    cmd.arg(key);
    if let Some(r) = r {
        cmd.arg("R").arg(r);
    }
    let mut reply: Vec<String> = cmd.query(c)?;
    assert!(!reply.is_empty(), "VGET returns the context first");
    let context = reply.remove(0);
    reply.sort();
    Ok((context, reply))
}

fn vset(c: &mut Connection, key: &str, value: &str, context: Option<&str>) -> String {
    let mut cmd = redis::cmd("VSET");
    cmd.arg(key).arg(value);
    if let Some(ctx) = context {
        cmd.arg("CONTEXT").arg(ctx);
    }
    cmd.query(c).unwrap()
}

fn dbsize(c: &mut Connection) -> i64 {
    redis::cmd("DBSIZE").query(c).unwrap()
}

/// Polls `cond` until it holds, or panics after `limit`.
fn wait_for(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn one_node_down_keeps_serving_two_down_fail_fast() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = Cluster::start(dir.path(), Spec::three(1));
    cluster.wait_connected();
    let mut conns: Vec<Connection> = (0..3).map(|i| cluster.connection(i)).collect();
    for i in 0..30 {
        let _: () = conns[i % 3].set(key(i), value(i)).unwrap();
    }

    cluster.kill(2);
    // Writes through the survivors, the first right after the kill.
    for i in 30..60 {
        let _: () = conns[i % 2].set(key(i), value(i)).unwrap();
    }
    for c in conns.iter_mut().take(2) {
        for i in 0..60 {
            assert_eq!(c.get::<_, String>(key(i)).unwrap(), value(i), "{}", key(i));
        }
    }
    let keys: Vec<String> = (0..60).map(key).collect();
    let all: Vec<String> = conns[0].mget(&keys).unwrap();
    assert_eq!(all, (0..60).map(value).collect::<Vec<_>>());

    cluster.kill(1);
    let limit = Duration::from_millis(cluster.spec.timeout_ms) + DEADLINE_SLACK;
    for (what, result) in [
        ("SET", conns[0].set::<_, _, ()>("k", "v").map(|_| ())),
        ("GET", conns[0].get::<_, Option<String>>(key(0)).map(|_| ())),
    ] {
        let start = Instant::now();
        let text = err_text(result);
        assert!(is_quorum_failure(&text), "{what}: {text}");
        assert!(start.elapsed() < limit, "{what} took {:?}", start.elapsed());
    }
}

#[test]
fn a_frozen_node_does_not_stall_requests_past_their_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::start(dir.path(), Spec::three(1));
    cluster.wait_connected();
    let mut c = cluster.connection(0);
    let limit = Duration::from_millis(cluster.spec.timeout_ms) + DEADLINE_SLACK;
    cluster.freeze(2);
    // W = R = 2 never need the frozen node: each answer comes without waiting for it.
    for i in 0..20 {
        let start = Instant::now();
        let _: () = c.set(key(i), value(i)).unwrap();
        assert_eq!(c.get::<_, String>(key(i)).unwrap(), value(i));
        assert!(
            start.elapsed() < limit,
            "{} took {:?}",
            key(i),
            start.elapsed()
        );
    }
    // W = ALL does need it: a quorum failure, by the deadline.
    let start = Instant::now();
    let text = err_text(
        redis::cmd("VSET")
            .arg("all")
            .arg("v")
            .arg("W")
            .arg("ALL")
            .query::<String>(&mut c),
    );
    assert!(is_quorum_failure(&text), "{text}");
    assert!(start.elapsed() < limit, "W ALL took {:?}", start.elapsed());
    // Thawed, the node answers again: a read from all three replicas succeeds.
    cluster.thaw(2);
    wait_for("the thawed node to answer", REPAIR_TIMEOUT, || {
        vget(&mut c, &key(0), Some("ALL")).is_ok()
    });
    assert_eq!(vget(&mut c, &key(0), Some("ALL")).unwrap().1, [value(0)]);
}

#[test]
fn concurrent_blind_writes_are_siblings_until_resolved() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::start(dir.path(), Spec::three(1));
    cluster.wait_connected();
    let (mut c1, mut c2, mut c3) = (
        cluster.connection(0),
        cluster.connection(1),
        cluster.connection(2),
    );

    vset(&mut c1, "cart", "apple", None);
    vset(&mut c2, "cart", "pear", None);
    let (context, values) = vget(&mut c3, "cart", None).unwrap();
    assert_eq!(values, ["apple", "pear"], "two blind writes are siblings");
    // GET answers one of them, the same one through every node.
    let chosen: BTreeSet<String> = [&mut c1, &mut c2, &mut c3]
        .into_iter()
        .map(|c| c.get::<_, String>("cart").unwrap())
        .collect();
    assert_eq!(chosen.len(), 1, "{chosen:?}");
    assert!(["apple", "pear"].contains(&chosen.first().unwrap().as_str()));

    // A write with the context VGET returned supersedes both.
    let resolved = vset(&mut c3, "cart", "apple+pear", Some(&context));
    assert_ne!(resolved, context);
    for c in [&mut c1, &mut c2, &mut c3] {
        let (_, values) = vget(c, "cart", None).unwrap();
        assert_eq!(values, ["apple+pear"]);
    }
    // A write with a stale context is a sibling of the resolution, not a loss of it.
    vset(&mut c1, "cart", "plum", Some(&context));
    let (latest, values) = vget(&mut c2, "cart", Some("ALL")).unwrap();
    assert_eq!(values, ["apple+pear", "plum"]);

    // VDEL with the latest context removes every sibling.
    let _: String = redis::cmd("VDEL")
        .arg("cart")
        .arg("CONTEXT")
        .arg(&latest)
        .query(&mut c2)
        .unwrap();
    let (_, values) = vget(&mut c1, "cart", None).unwrap();
    assert!(values.is_empty(), "{values:?}");
    assert_eq!(c3.get::<_, Option<String>>("cart").unwrap(), None);
    assert_eq!(c3.exists::<_, i64>("cart").unwrap(), 0);
}

#[test]
fn a_read_at_all_repairs_a_node_that_missed_writes() {
    const KEYS: usize = 20;
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = Cluster::start(dir.path(), Spec::three(1));
    cluster.wait_connected();

    cluster.kill(2);
    let mut c1 = cluster.connection(0);
    for i in 0..KEYS {
        let _: () = c1.set(key(i), value(i)).unwrap();
    }
    cluster.restart(2);
    cluster.wait_connected();
    let mut c3 = cluster.connection(2);
    assert_eq!(dbsize(&mut c3), 0, "n3 holds nothing before the reads");

    for i in 0..KEYS {
        let (_, values) = vget(&mut c1, &key(i), Some("ALL")).unwrap();
        assert_eq!(values, [value(i)]);
    }
    // The repair is sent after the read is answered: wait for it to land.
    wait_for("read repair to reach n3", REPAIR_TIMEOUT, || {
        dbsize(&mut c3) == KEYS as i64
    });

    cluster.kill(0);
    cluster.kill(1);
    for i in 0..KEYS {
        let (_, values) = vget(&mut c3, &key(i), Some("1")).unwrap();
        assert_eq!(values, [value(i)], "n3 alone has {}", key(i));
    }
}

#[test]
fn acknowledged_writes_survive_kill_9_of_every_node() {
    const KEYS: usize = 60;
    let dir = tempfile::tempdir().unwrap();
    // Two shards: replicas live on shard p % 2 of each node, behind their own peer ports.
    let mut cluster = Cluster::start(dir.path(), Spec::three(2));
    cluster.wait_connected();
    let mut conns: Vec<Connection> = (0..3).map(|i| cluster.connection(i)).collect();
    let mut contexts = Vec::new();
    for i in 0..KEYS {
        if i % 2 == 0 {
            let _: () = conns[i % 3].set(key(i), value(i)).unwrap();
        } else {
            contexts.push(vset(&mut conns[i % 3], &key(i), &value(i), None));
        }
    }
    drop(conns);

    for i in 0..3 {
        cluster.kill(i);
    }
    for i in 0..3 {
        cluster.restart(i);
    }
    cluster.wait_connected();
    for n in 0..3 {
        let mut c = cluster.connection(n);
        for i in 0..KEYS {
            assert_eq!(
                c.get::<_, String>(key(i)).unwrap(),
                value(i),
                "{} via n{}",
                key(i),
                n + 1
            );
        }
    }
    let mut c = cluster.connection(0);
    for i in (1..KEYS).step_by(2) {
        let (context, values) = vget(&mut c, &key(i), Some("ALL")).unwrap();
        assert_eq!(values, [value(i)]);
        assert_eq!(context, contexts[i / 2], "{}: the version survived", key(i));
    }
}

#[test]
fn levels_per_connection_and_per_request() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = Cluster::start(dir.path(), Spec::three(1));
    cluster.wait_connected();
    let mut c = cluster.connection(0);

    assert!(vget(&mut c, "k", Some("4")).is_err(), "R 4 with N = 3");
    assert!(
        redis::cmd("VSET")
            .arg("k")
            .arg("v")
            .arg("W")
            .arg("4")
            .query::<Value>(&mut c)
            .is_err(),
        "W 4 with N = 3"
    );
    assert!(
        redis::cmd("CONSISTENCY")
            .arg("all")
            .arg("4")
            .query::<Value>(&mut c)
            .is_err()
    );
    let levels: Vec<String> = redis::cmd("CONSISTENCY").query(&mut c).unwrap();
    assert_eq!(levels, ["2", "2"], "the config's levels");
    let _: () = c.set("k", "before").unwrap();

    cluster.kill(1);
    cluster.kill(2);
    let _: () = redis::cmd("CONSISTENCY")
        .arg("one")
        .arg("one")
        .query(&mut c)
        .unwrap();
    let levels: Vec<String> = redis::cmd("CONSISTENCY").query(&mut c).unwrap();
    assert_eq!(levels, ["ONE", "ONE"]);
    assert_eq!(c.get::<_, String>("k").unwrap(), "before");
    let _: () = c.set("k", "after").unwrap();
    assert_eq!(c.get::<_, String>("k").unwrap(), "after");
    let (_, values) = vget(&mut c, "k", None).unwrap();
    assert_eq!(values, ["after"]);
    // A request's own level wins over the connection's.
    assert!(is_quorum_failure(&err_text(vget(&mut c, "k", Some("2")))));

    // Levels belong to the connection: a new one has the config's R=2, W=2.
    let mut other = cluster.connection(0);
    assert!(is_quorum_failure(&err_text(
        other.set::<_, _, ()>("k", "x")
    )));
    assert!(is_quorum_failure(&err_text(other.get::<_, String>("k"))));
}
