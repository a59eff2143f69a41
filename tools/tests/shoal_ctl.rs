//! `shoal-ctl ring` run as a program on temporary configuration files; its output is checked
//! against a `Ring` built here directly from the member list.

#![allow(clippy::unwrap_used, reason = "a test fails loudly")]

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;
use shoal_cluster::consistency::Consistency;
use shoal_cluster::partition::partition_of;
use shoal_cluster::ring::{Member, Ring, shard_of};
use shoal_node::config::node_id_of;

const PARTITIONS: u32 = 64;
const REPLICAS: u32 = 3;

/// (name, weight, rack, shards) of the members; `b` has no `shards` line, so it takes the
/// count of the node the file is read as (`a`: 2).
const MEMBERS: &[(&str, u32, &str, Option<usize>)] = &[
    ("a", 1, "r1", None),
    ("b", 2, "r1", None),
    ("c", 1, "r2", Some(3)),
    ("d", 1, "r3", Some(1)),
];
const SHARDS_OF_A: usize = 2;

fn config_text() -> String {
    let mut text = format!(
        "node_id = \"a\"\nshards = {SHARDS_OF_A}\npartitions = {PARTITIONS}\n\
         [replication]\nn = {REPLICAS}\nr = \"quorum\"\nw = 2\n"
    );
    for (i, (name, weight, rack, shards)) in MEMBERS.iter().enumerate() {
        text.push_str(&format!(
            "[[nodes]]\nid = \"{name}\"\npeer = \"127.0.0.1:{}\"\nweight = {weight}\nrack = \"{rack}\"\n",
            9100 + i * 10
        ));
        if let Some(s) = shards {
            text.push_str(&format!("shards = {s}\n"));
        }
    }
    text
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_owned()
}

fn ctl(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_shoal-ctl"))
        .args(args)
        .output()
        .unwrap()
}

fn json(o: &Output) -> Value {
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}

/// The ring the nodes compute, built here from the member list.
fn expected_ring() -> Ring {
    let members: Vec<Member> = MEMBERS
        .iter()
        .map(|(name, weight, rack, _)| Member {
            id: node_id_of(name),
            weight: *weight,
            rack: (*rack).to_owned(),
            dc: String::new(),
        })
        .collect();
    Ring::new(&members, PARTITIONS, REPLICAS).unwrap()
}

fn name_of(id: u32) -> &'static str {
    MEMBERS.iter().find(|m| node_id_of(m.0) == id).unwrap().0
}

fn shards_of(name: &str) -> u32 {
    let m = MEMBERS.iter().find(|m| m.0 == name).unwrap();
    m.3.unwrap_or(SHARDS_OF_A) as u32
}

/// `[[node, shard], ...]` as the ring places partition `p`.
fn expected_replicas(ring: &Ring, p: u32) -> Value {
    ring.preference_list(p)
        .iter()
        .map(|&id| {
            let name = name_of(id);
            serde_json::json!({"node": name, "shard": shard_of(p, shards_of(name))})
        })
        .collect()
}

#[test]
fn members_and_map_match_the_ring() {
    let tmp = tempfile::tempdir().unwrap();
    let path = write(tmp.path(), "c.toml", &config_text());
    let view = json(&ctl(&["ring", "--config", &path, "--json"]));
    let ring = expected_ring();

    assert_eq!(view["node"], "a");
    assert_eq!(view["partitions"], PARTITIONS);
    assert_eq!(view["replicas"], REPLICAS);
    assert!(view.get("keys").is_none(), "no keys were asked for");
    let members = view["members"].as_array().unwrap();
    let names: Vec<&str> = members
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["a", "b", "c", "d"]);
    let (mut owned_sum, mut replicated_sum) = (0, 0);
    for m in members {
        let name = m["name"].as_str().unwrap();
        let id = node_id_of(name);
        let owned = ring.owned_by(id).len() as u64;
        let replicated = ring.replicated_on(id).len() as u64;
        assert_eq!(m["id"], format!("{id:08x}"));
        assert_eq!(m["owned"], owned, "{name}");
        assert_eq!(m["replicated"], replicated, "{name}");
        assert_eq!(
            m["owned_share"].as_f64().unwrap(),
            owned as f64 / f64::from(PARTITIONS)
        );
        assert_eq!(m["shards"], shards_of(name), "{name}");
        owned_sum += owned;
        replicated_sum += replicated;
    }
    assert_eq!(owned_sum, u64::from(PARTITIONS));
    assert_eq!(replicated_sum, u64::from(PARTITIONS * REPLICAS));
    // Weight 2 owns twice a weight-1 member's share, within the rounding of the quotas.
    let owned = |i: usize| members[i]["owned"].as_i64().unwrap();
    assert!((owned(1) - 2 * owned(0)).abs() <= 2, "{members:?}");

    let map = view["map"].as_array().unwrap();
    assert_eq!(map.len(), PARTITIONS as usize);
    let mut next_hash = 0u64;
    for (p, entry) in map.iter().enumerate() {
        let p = p as u32;
        assert_eq!(entry["partition"], p);
        assert_eq!(entry["first_hash"].as_u64().unwrap(), next_hash);
        next_hash = entry["last_hash"].as_u64().unwrap().wrapping_add(1);
        assert_eq!(
            entry["replicas"],
            expected_replicas(&ring, p),
            "partition {p}"
        );
    }
    assert_eq!(
        next_hash, 0,
        "the last partition ends at the top of the hash space"
    );

    // The text form has a member row each and a map row per partition.
    let text = String::from_utf8(ctl(&["ring", "--config", &path]).stdout).unwrap();
    assert!(
        text.starts_with("4 members, 64 partitions, 3 replicas each"),
        "{text}"
    );
    let member_row = text.lines().find(|l| l.starts_with("b ")).unwrap();
    let b_owned = members[1]["owned"].as_u64().unwrap();
    let b_share = format!(
        "{b_owned} ({:.1}%)",
        b_owned as f64 * 100.0 / f64::from(PARTITIONS)
    );
    assert!(member_row.contains(&b_share), "{member_row}");
    let map_rows = text
        .lines()
        .skip_while(|l| !l.starts_with("partition"))
        .skip(1)
        .count();
    assert_eq!(map_rows, PARTITIONS as usize);
}

#[test]
fn keys_and_node_id() {
    let tmp = tempfile::tempdir().unwrap();
    let path = write(tmp.path(), "c.toml", &config_text());
    let ring = expected_ring();
    let view = json(&ctl(&[
        "ring",
        "--config",
        &path,
        "--json",
        "--key",
        "user:1",
        "--key",
        "bin\\x00key",
    ]));
    assert!(view.get("map").is_none(), "keys replace the map");
    let keys = view["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 2);
    for (entry, key) in keys.iter().zip([&b"user:1"[..], b"bin\x00key"]) {
        let p = partition_of(key, PARTITIONS);
        assert_eq!(entry["key"], key.escape_ascii().to_string());
        assert_eq!(entry["partition"], p);
        assert_eq!(entry["replicas"], expected_replicas(&ring, p));
    }

    // Read as member c (3 shards), member b defaults to c's shard count; the ring is the same.
    let mut text = config_text().replace("shards = 2\n", "shards = 3\n");
    text = text.replace("node_id = \"a\"", "node_id = \"c\"");
    let path_c = write(tmp.path(), "c3.toml", &text);
    let view_c = json(&ctl(&["ring", "--config", &path_c, "--json"]));
    assert_eq!(view_c["node"], "c");
    let b = &view_c["members"][1];
    assert_eq!(
        (b["name"].as_str(), b["shards"].as_u64()),
        (Some("b"), Some(3))
    );
    for (x, y) in view["members"]
        .as_array()
        .unwrap()
        .iter()
        .zip(view_c["members"].as_array().unwrap())
    {
        assert_eq!(x["owned"], y["owned"]);
    }

    // --node-id picks the member when the file names none.
    let no_id = write(
        tmp.path(),
        "noid.toml",
        &config_text().replace("node_id = \"a\"\n", ""),
    );
    let o = ctl(&["ring", "--config", &no_id]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("node_id"));
    let view_d = json(&ctl(&[
        "ring",
        "--config",
        &no_id,
        "--node-id",
        "a",
        "--json",
    ]));
    assert_eq!(view_d["node"], "a");
}

#[test]
fn bad_configurations_exit_non_zero_with_a_message() {
    let tmp = tempfile::tempdir().unwrap();
    let cases = [
        (
            "typo.toml",
            config_text().replace("weight = 1", "wieght = 1"),
            "unknown field",
        ),
        (
            "standalone.toml",
            "listen = \"127.0.0.1:7000\"\n".to_owned(),
            "no [[nodes]]",
        ),
        (
            "n4.toml",
            config_text().replace("n = 3", "n = 5"),
            "replication.n = 5",
        ),
        (
            "twice.toml",
            config_text().replace("id = \"d\"", "id = \"c\""),
            "listed twice",
        ),
        (
            "notme.toml",
            config_text().replace("node_id = \"a\"", "node_id = \"z\""),
            "\"z\" is not among",
        ),
    ];
    for (name, text, message) in cases {
        let path = write(tmp.path(), name, &text);
        let o = ctl(&["ring", "--config", &path]);
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{name}: {stderr}");
        assert!(o.stdout.is_empty(), "{name}");
        assert!(stderr.starts_with("shoal-ctl: "), "{name}: {stderr}");
        assert!(stderr.contains(message), "{name}: {stderr}");
    }
    let o = ctl(&["ring", "--config", "/nonexistent/c.toml"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("cannot read config file"));
    let path = write(tmp.path(), "c.toml", &config_text());
    let o = ctl(&["ring", "--config", &path, "--key", "bad\\x4"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--key"));
    assert_eq!(
        ctl(&["ring"]).status.code(),
        Some(2),
        "--config is required"
    );
}

#[test]
fn the_example_cluster_files_describe_one_ring() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/cluster");
    let views: Vec<Value> = ["n1", "n2", "n3"]
        .iter()
        .map(|n| {
            let path = dir.join(format!("{n}.toml"));
            json(&ctl(&[
                "ring",
                "--config",
                path.to_str().unwrap(),
                "--json",
            ]))
        })
        .collect();
    for (i, view) in views.iter().enumerate() {
        assert_eq!(
            view["node"],
            format!("n{}", i + 1),
            "node_id of n{}.toml",
            i + 1
        );
        assert_eq!(view["replicas"], 3);
        assert_eq!(view["members"], views[0]["members"], "n{}.toml", i + 1);
        assert_eq!(view["map"], views[0]["map"], "n{}.toml", i + 1);
    }
    let peers: Vec<&str> = views[0]["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["peer"].as_str().unwrap())
        .collect();
    assert_eq!(
        peers,
        ["127.0.0.1:7101", "127.0.0.1:7201", "127.0.0.1:7301"]
    );
    // The rest of each file, as the server reads it.
    for i in 1..=3 {
        let flags = shoal_node::Flags {
            config: Some(dir.join(format!("n{i}.toml"))),
            ..Default::default()
        };
        let c = shoal_node::Config::resolve(flags).unwrap();
        assert_eq!(c.listen.to_string(), format!("127.0.0.1:700{i}"));
        assert_eq!(c.data_dir, Path::new(&format!("data/n{i}")));
        assert_eq!(c.shards, 1);
        let cluster = c.cluster.unwrap();
        assert_eq!(cluster.peer_listen.to_string(), format!("127.0.0.1:7{i}01"));
        assert_eq!(
            (cluster.read, cluster.write),
            (Consistency::Count(2), Consistency::Count(2))
        );
    }
}

/// `shoal-ctl status` against a live 3-node cluster: every member up, then the killed one
/// down, in the table and in JSON; an unreachable address is a clear error with exit 1.
#[test]
fn status_shows_a_live_cluster() {
    use shoal_tests::cluster::{Cluster, Spec};
    let dir = tempfile::tempdir().unwrap();
    let spec = Spec {
        gossip_interval_ms: Some(200),
        ..Spec::three(1)
    };
    let mut cluster = Cluster::start(dir.path(), spec);
    cluster.wait_connected();
    let addr = cluster.nodes[0].addr.to_string();
    let out = ctl(&["status", "--addr", &addr]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    for member in ["n1", "n2", "n3"] {
        assert!(
            text.lines()
                .any(|l| l.starts_with("up") && l.contains(member)),
            "{member} up in:\n{text}"
        );
    }
    cluster.kill(2);
    Cluster::wait_for(
        "n1 to judge n3 down",
        std::time::Duration::from_secs(10),
        || {
            let j = json(&ctl(&["status", "--addr", &addr, "--json"]));
            j["members"][2]["state"] == "down"
        },
    );
    let j = json(&ctl(&["status", "--addr", &addr, "--json"]));
    assert_eq!(j["node"], "n1");
    assert_eq!(j["members"].as_array().unwrap().len(), 3);
    let shares: f64 = j["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["owned_share"].as_f64().unwrap())
        .sum();
    assert!(
        (shares - 1.0).abs() < 1e-9,
        "owned shares sum to the ring: {shares}"
    );

    let closed = shoal_tests::free_port().to_string();
    let out = ctl(&["status", "--addr", &format!("127.0.0.1:{closed}")]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("cannot reach"), "{err}");
}
