//! The command table as clients see it. COMMAND against a real redis-server: the entries of
//! COMMAND INFO, in both protocols, for every command both have, and the errors for a wrong
//! number of arguments or an unknown name (skipped, with a notice, where redis-server is not
//! installed). And the refusals each mode takes from the table.

#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use redis::Value;
use shoal_tests::Server;
use shoal_tests::cluster::{Cluster, Spec};
use shoal_tests::redis_server::RedisServer;

/// Fields of a COMMAND INFO entry, by index.
const NAME: usize = 0;
const TIPS: usize = 7;
const SUBCOMMANDS: usize = 9;

/// Fields Redis changed in 7.2, the version Shoal follows: compared only with a Redis at
/// least that recent.
const CHANGED_IN_7_2: &[(&str, usize)] = &[("scan", TIPS)];

fn connection(addr: SocketAddr, resp3: bool) -> redis::Connection {
    let proto = if resp3 { "?protocol=resp3" } else { "" };
    redis::Client::open(format!("redis://{addr}/{proto}"))
        .unwrap()
        .get_connection()
        .unwrap()
}

fn command(c: &mut redis::Connection, args: &[&str]) -> Value {
    let mut cmd = redis::cmd("COMMAND");
    for a in args {
        cmd.arg(*a);
    }
    cmd.query(c).unwrap()
}

/// The items of an array or a set.
fn items(v: &Value) -> &[Value] {
    match v {
        Value::Array(items) | Value::Set(items) => items,
        other => panic!("not an array or a set: {other:?}"),
    }
}

fn text(v: &Value) -> String {
    match v {
        Value::BulkString(b) => String::from_utf8(b.clone()).unwrap(),
        Value::SimpleString(s) => s.clone(),
        other => panic!("not a string: {other:?}"),
    }
}

/// A COMMAND INFO entry has Redis 7's ten fields, each of its type.
fn assert_entry_shape(entry: &Value, resp3: bool) {
    let fields = items(entry);
    assert_eq!(fields.len(), 10, "{entry:?}");
    assert!(matches!(fields[0], Value::BulkString(_)), "{entry:?}");
    for i in [1, 3, 4, 5] {
        assert!(matches!(fields[i], Value::Int(_)), "field {i}: {entry:?}");
    }
    let is_set = |v: &Value| {
        if resp3 {
            matches!(v, Value::Set(_))
        } else {
            matches!(v, Value::Array(_))
        }
    };
    for i in [2, 6, 7, 8] {
        assert!(is_set(&fields[i]), "field {i}: {entry:?}");
    }
    for flag in items(&fields[2]).iter().chain(items(&fields[6])) {
        assert!(matches!(flag, Value::SimpleString(_)), "{entry:?}");
    }
    for tip in items(&fields[7]) {
        assert!(matches!(tip, Value::BulkString(_)), "{entry:?}");
    }
    for sub in items(&fields[SUBCOMMANDS]) {
        assert_entry_shape(sub, resp3);
    }
}

#[test]
fn command_count_and_list_follow_the_table() {
    let dir = tempfile::tempdir().unwrap();
    let shoal = Server::start(dir.path(), &[]);
    let mut c = connection(shoal.addr, false);
    let Value::Int(count) = command(&mut c, &["COUNT"]) else {
        panic!("COUNT is not an integer")
    };
    let all = command(&mut c, &[]);
    assert_eq!(items(&all).len() as i64, count);
    let names: Vec<String> = items(&command(&mut c, &["LIST"]))
        .iter()
        .map(text)
        .collect();
    assert_eq!(
        names.iter().filter(|n| !n.contains('|')).count() as i64,
        count
    );
    for entry in items(&all) {
        assert_entry_shape(entry, false);
        assert!(names.contains(&text(&items(entry)[NAME])));
    }
    assert_eq!(command(&mut c, &["INFO"]), all);
    assert_eq!(
        reply_line(shoal.addr, &["COMMAND", "COUNT", "x"]),
        "-ERR wrong number of arguments for 'command|count' command"
    );
}

#[test]
fn command_info_matches_redis() {
    let dir = tempfile::tempdir().unwrap();
    let shoal = Server::start(dir.path(), &[]);
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let before_7_2 = redis.version() < (7, 2, 0);
    for resp3 in [false, true] {
        let mut ours = connection(shoal.addr, resp3);
        let mut theirs = connection(redis.addr, resp3);
        let both = compare_entries(&mut ours, &mut theirs, resp3, before_7_2);
        for name in ["get", "set", "mget", "command", "config"] {
            assert!(both.contains(&name.to_owned()), "{name} not compared");
        }
        assert_eq!(
            command(&mut ours, &["INFO", "nosuch", "config|get", "GET"]),
            command(&mut theirs, &["INFO", "nosuch", "config|get", "GET"]),
        );
    }
}

/// Compares every entry of Shoal's COMMAND with Redis's entry of that name; returns the names
/// both have.
fn compare_entries(
    ours: &mut redis::Connection,
    theirs: &mut redis::Connection,
    resp3: bool,
    before_7_2: bool,
) -> Vec<String> {
    let mut both = Vec::new();
    for entry in items(&command(ours, &[])) {
        assert_entry_shape(entry, resp3);
        let name = text(&items(entry)[NAME]);
        let redis_entry = command(theirs, &["INFO", &name]);
        let redis_entry = &items(&redis_entry)[0];
        if *redis_entry == Value::Nil {
            continue;
        }
        for (i, (a, b)) in items(entry).iter().zip(items(redis_entry)).enumerate() {
            if i == SUBCOMMANDS || (before_7_2 && CHANGED_IN_7_2.contains(&(name.as_str(), i))) {
                continue;
            }
            assert_eq!(a, b, "{name}: field {i}, resp3 {resp3}");
        }
        compare_subcommands(&name, entry, redis_entry, before_7_2);
        both.push(name);
    }
    both
}

/// Each of Shoal's subcommands equals Redis's of that name; Redis has more.
fn compare_subcommands(name: &str, ours: &Value, theirs: &Value, before_7_2: bool) {
    let theirs = items(&items(theirs)[SUBCOMMANDS]);
    let ours = items(&items(ours)[SUBCOMMANDS]);
    if theirs.is_empty() {
        assert!(ours.is_empty(), "{name} has no subcommands in Redis");
    }
    for sub in ours {
        let sub_name = text(&items(sub)[NAME]);
        match theirs.iter().find(|s| text(&items(s)[NAME]) == sub_name) {
            Some(redis_sub) => assert_eq!(sub, redis_sub, "{sub_name}"),
            None if before_7_2 => eprintln!("NOTICE: this Redis has no {sub_name}"),
            None => panic!("Redis has no {sub_name}"),
        }
    }
}

/// The first line of the reply to `args`, sent as a RESP2 request on a new connection.
fn reply_line(addr: SocketAddr, args: &[&str]) -> String {
    reply_lines(addr, &[args]).remove(0)
}

/// The first line of each reply to a pipeline of `requests`, sent on a new connection; every
/// reply must be one line.
fn reply_lines(addr: SocketAddr, requests: &[&[&str]]) -> Vec<String> {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut pipeline = String::new();
    for args in requests {
        pipeline.push_str(&format!("*{}\r\n", args.len()));
        for a in *args {
            pipeline.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
    }
    s.write_all(pipeline.as_bytes()).unwrap();
    let mut replies = BufReader::new(s);
    (0..requests.len())
        .map(|_| {
            let mut line = String::new();
            replies.read_line(&mut line).unwrap();
            line.trim_end().to_owned()
        })
        .collect()
}

#[test]
fn refusals_match_redis() {
    let dir = tempfile::tempdir().unwrap();
    let shoal = Server::start(dir.path(), &[]);
    let Some(redis) = RedisServer::start() else {
        return;
    };
    for args in [
        &["COMMAND", "COUNT", "x"][..],
        &["COMMAND", "NOPE"],
        &["GET"],
        &["GET", "a", "b"],
        &["PING", "a", "b"],
        &["MSET", "a", "b", "c"],
        &["CONFIG"],
        &["CONFIG", "GET"],
        &["CLIENT", "nope"],
        &["CLIENT", "SETNAME"],
        &["NOPE", "a", "b"],
        &["COMMAND", "LIST", "FILTERBY", "aclcat"],
    ] {
        assert_eq!(
            reply_line(shoal.addr, args),
            reply_line(redis.addr, args),
            "{args:?}"
        );
    }
}

const NEEDS_CLUSTER: &str =
    "-ERR VGET, VSET, VDEL and CONSISTENCY need cluster mode ([[nodes]] in the config file)";

fn not_in_cluster(what: &str) -> String {
    format!("-ERR {what} is not supported in cluster mode")
}

#[test]
fn each_mode_refuses_what_the_table_says() {
    let dir = tempfile::tempdir().unwrap();
    let standalone = Server::start(dir.path(), &[]);
    assert_eq!(
        reply_lines(
            standalone.addr,
            &[
                &["VGET", "k"],
                &["SET", "k", "v", "EX", "100"],
                &["VSET", "k", "v"],
                &["VDEL", "k"],
                &["CONSISTENCY"],
            ]
        ),
        [
            NEEDS_CLUSTER,
            "+OK",
            NEEDS_CLUSTER,
            NEEDS_CLUSTER,
            NEEDS_CLUSTER
        ]
    );

    let cluster_dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::start(cluster_dir.path(), Spec::three(2));
    cluster.wait_connected();
    let addr = cluster.nodes[0].addr;
    // A refused write amid blind ones: the others are written, and answered in order.
    assert_eq!(
        reply_lines(
            addr,
            &[
                &["SET", "a", "1"],
                &["SET", "b", "2", "EX", "100"],
                &["MSET", "c", "3", "d", "4"],
                &["EXISTS", "a", "b", "c", "d"],
            ]
        ),
        [
            "+OK".to_owned(),
            not_in_cluster("SET with an expiry"),
            "+OK".to_owned(),
            ":3".to_owned(),
        ]
    );
    for (args, what) in [
        (
            &["SET", "a", "1", "NX"][..],
            "SET with NX, XX, GET or KEEPTTL",
        ),
        (
            &["SET", "a", "1", "KEEPTTL"],
            "SET with NX, XX, GET or KEEPTTL",
        ),
        (&["EXPIRE", "a", "10"], "EXPIRE"),
        (&["PEXPIREAT", "a", "10"], "PEXPIREAT"),
        (&["FLUSHALL"], "FLUSHALL"),
    ] {
        assert_eq!(reply_line(addr, args), not_in_cluster(what), "{args:?}");
    }
    assert_eq!(reply_line(addr, &["VDEL", "a"]).chars().next(), Some('$'));
    assert_eq!(reply_line(addr, &["DEL", "a", "a", "c"]), ":2");
}
