//! `shoal-ctl status --addr HOST:PORT`: the members of a live cluster as one of its nodes sees
//! them, like `nodetool status`: each member's state (this node's failure detector), address,
//! load (its data on disk, gossiped), share of the ring it owns, and the hints this node keeps
//! for it. Read from the node's `INFO cluster` over RESP.

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use serde::Serialize;

use super::CtlError;

/// How long the node may take to connect and answer.
pub const TIMEOUT: Duration = Duration::from_secs(5);
/// Largest INFO reply read: a line per member, so far past any cluster's.
const REPLY_BYTES_MAX: usize = 16 << 20;

/// One member as the queried node sees it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MemberStatus {
    pub name: String,
    /// `up`, `suspect`, `down`, `joining`, `leaving` or `left`.
    pub state: String,
    /// Its peer address.
    pub address: String,
    pub dc: String,
    pub rack: String,
    /// Bytes of data on disk, as the member last gossiped.
    pub load: u64,
    /// Partitions it is first in the preference list of, and their share of the ring.
    pub owned: u32,
    pub owned_share: f64,
    /// Hints the queried node keeps for it.
    pub hints_pending: u64,
    pub generation: u64,
    pub heartbeat: u64,
    /// How long ago the queried node last heard a newer heartbeat of it.
    pub last_heard_ms: u64,
}

/// What `shoal-ctl status` prints.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StatusView {
    pub cluster: String,
    /// The member that answered.
    pub node: String,
    pub partitions: u32,
    /// Sorted by name.
    pub members: Vec<MemberStatus>,
}

/// Asks the node at `addr` for its view.
pub fn fetch(addr: SocketAddr) -> Result<StatusView, CtlError> {
    let unreachable = |source| CtlError::Unreachable { addr, source };
    let mut stream = TcpStream::connect_timeout(&addr, TIMEOUT).map_err(unreachable)?;
    stream
        .set_read_timeout(Some(TIMEOUT))
        .map_err(unreachable)?;
    stream
        .write_all(b"*2\r\n$4\r\nINFO\r\n$7\r\ncluster\r\n")
        .map_err(unreachable)?;
    let info = read_bulk(&mut stream).map_err(|e| match e {
        Reply::Io(source) => unreachable(source),
        Reply::Error(text) => CtlError::Reply(text),
        Reply::Malformed(what) => CtlError::Reply(format!("not a RESP bulk string: {what}")),
    })?;
    parse(&info)
}

enum Reply {
    Io(std::io::Error),
    Error(String),
    Malformed(String),
}

/// Reads one RESP bulk string (or error) reply.
fn read_bulk(stream: &mut TcpStream) -> Result<String, Reply> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 64 << 10];
    loop {
        if let Some(header_end) = buf.windows(2).position(|w| w == b"\r\n") {
            let header = String::from_utf8_lossy(&buf[..header_end]).into_owned();
            if let Some(text) = header.strip_prefix('-') {
                return Err(Reply::Error(text.to_owned()));
            }
            let len: usize = header
                .strip_prefix('$')
                .and_then(|n| n.parse().ok())
                .ok_or_else(|| Reply::Malformed(header.clone()))?;
            if len > REPLY_BYTES_MAX {
                return Err(Reply::Malformed(format!("{len} bytes")));
            }
            let body = header_end + 2;
            if buf.len() >= body + len {
                return Ok(String::from_utf8_lossy(&buf[body..body + len]).into_owned());
            }
        }
        let n = stream.read(&mut chunk).map_err(Reply::Io)?;
        if n == 0 {
            return Err(Reply::Io(std::io::ErrorKind::UnexpectedEof.into()));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Reads the view out of an `INFO cluster` reply.
pub fn parse(info: &str) -> Result<StatusView, CtlError> {
    let field = |name: &str| {
        info.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .map(str::trim)
    };
    if field("shoal_cluster") != Some("1") {
        return Err(CtlError::NotAMember);
    }
    let missing = |what: &str| CtlError::Reply(format!("INFO cluster has no {what}"));
    let partitions: u32 = field("shoal_partitions")
        .and_then(|p| p.parse().ok())
        .ok_or_else(|| missing("shoal_partitions"))?;
    let mut members = Vec::new();
    for line in info.lines() {
        let Some((name, fields)) = line
            .strip_prefix("shoal_member_")
            .and_then(|l| l.split_once(':'))
        else {
            continue;
        };
        let get = |key: &str| {
            fields
                .trim()
                .split(',')
                .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
                .unwrap_or("")
                .to_owned()
        };
        let number = |key: &str| get(key).parse::<u64>().unwrap_or(0);
        let owned = number("owned") as u32;
        members.push(MemberStatus {
            name: name.to_owned(),
            state: get("state"),
            address: get("peer"),
            dc: get("dc"),
            rack: get("rack"),
            load: number("load"),
            owned,
            owned_share: f64::from(owned) / f64::from(partitions.max(1)),
            hints_pending: number("hints_pending"),
            generation: number("generation"),
            heartbeat: number("heartbeat"),
            last_heard_ms: number("last_heard_ms"),
        });
    }
    members.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(StatusView {
        cluster: field("shoal_cluster_name").unwrap_or("").to_owned(),
        node: field("shoal_node_id").unwrap_or("").to_owned(),
        partitions,
        members,
    })
}

impl StatusView {
    /// The table `shoal-ctl status` prints.
    pub fn text(&self) -> String {
        let mut out = format!(
            "cluster {:?}, as {} sees it ({} members, {} partitions)\n\n",
            self.cluster,
            self.node,
            self.members.len(),
            self.partitions
        );
        let mut rows = vec![vec![
            "state".to_owned(),
            "member".to_owned(),
            "address".to_owned(),
            "dc".to_owned(),
            "rack".to_owned(),
            "load".to_owned(),
            "owned".to_owned(),
            "hints".to_owned(),
            "heard".to_owned(),
        ]];
        for m in &self.members {
            rows.push(vec![
                m.state.clone(),
                m.name.clone(),
                m.address.clone(),
                m.dc.clone(),
                m.rack.clone(),
                human(m.load),
                format!("{:.1}%", m.owned_share * 100.0),
                m.hints_pending.to_string(),
                format!("{:.1}s ago", m.last_heard_ms as f64 / 1000.0),
            ]);
        }
        let widths: Vec<usize> = (0..rows[0].len())
            .map(|c| rows.iter().map(|r| r[c].len()).max().unwrap_or(0))
            .collect();
        for row in rows {
            let cells: Vec<String> = row
                .iter()
                .zip(&widths)
                .map(|(cell, w)| format!("{cell:<w$}"))
                .collect();
            let _ = writeln!(out, "{}", cells.join("  ").trim_end());
        }
        out
    }
}

fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INFO: &str = "# Cluster\r\ncluster_enabled:0\r\nshoal_cluster:1\r\nshoal_cluster_name:prod\r\nshoal_node_id:n1\r\nshoal_members:2\r\nshoal_partitions:256\r\nshoal_member_n2:peer=127.0.0.1:7201,weight=1,rack=r2,dc=dc1,up=0,state=down,heartbeat=9,generation=7,last_heard_ms=12000,load=2048,owned=128,replicated=256,hints_pending=5,hints_pending_bytes=500,hints_replayed=0,hints_expired=0\r\nshoal_member_n1:peer=127.0.0.1:7101,weight=1,rack=r1,dc=dc1,up=1,state=up,heartbeat=40,generation=8,last_heard_ms=0,load=0,owned=128,replicated=256,hints_pending=0,hints_pending_bytes=0,hints_replayed=0,hints_expired=0\r\n";

    #[test]
    fn info_becomes_the_member_table() {
        let view = parse(INFO).unwrap();
        assert_eq!((view.cluster.as_str(), view.node.as_str()), ("prod", "n1"));
        let names: Vec<&str> = view.members.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["n1", "n2"]);
        let n2 = &view.members[1];
        assert_eq!(
            (n2.state.as_str(), n2.load, n2.hints_pending),
            ("down", 2048, 5)
        );
        assert!((n2.owned_share - 0.5).abs() < 1e-9);
        let text = view.text();
        assert!(text.contains("down   n2"), "{text}");
        assert!(text.contains("2.0 KiB"), "{text}");
    }

    #[test]
    fn a_standalone_node_is_not_a_member() {
        let info = "# Cluster\r\ncluster_enabled:0\r\nshoal_cluster:0\r\n";
        assert!(matches!(parse(info), Err(CtlError::NotAMember)));
    }
}
