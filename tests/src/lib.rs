//! Helpers for black-box tests: find (or build) the `shoal` binary, start it on a free
//! 127.0.0.1 port with a fresh data directory, wait until it serves, stop or kill it; and
//! the same for a cluster of such processes ([`cluster`]). [`redis_server`] starts a real
//! `redis-server` to compare replies with.

#![allow(clippy::unwrap_used)]

pub mod cluster;
pub mod redis_server;

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// How long a server may take to start serving, or to exit after SIGTERM.
pub const START_TIMEOUT: Duration = Duration::from_secs(20);
pub const STOP_TIMEOUT: Duration = Duration::from_secs(20);

/// The `shoal` binary next to the test executable (`target/<profile>/shoal`), brought up to
/// date with cargo first: `cargo test -p shoal-tests` does not build other packages' binaries,
/// so one left from an earlier build would otherwise be tested in place of the current code.
pub fn shoal_binary() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| {
        let exe = std::env::current_exe().unwrap();
        // target/<profile>/deps/<test> → target/<profile>
        let profile_dir = exe.parent().and_then(Path::parent).unwrap().to_path_buf();
        let bin = profile_dir.join("shoal");
        let target_dir = profile_dir.parent().unwrap();
        let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
        cmd.args([
            "build",
            "-p",
            "shoal-node",
            "--bin",
            "shoal",
            "--target-dir",
        ])
        .arg(target_dir);
        if profile_dir.file_name().is_some_and(|n| n == "release") {
            cmd.arg("--release");
        }
        let status = cmd.status().unwrap();
        assert!(status.success(), "building shoal failed");
        assert!(bin.exists(), "no shoal binary at {}", bin.display());
        bin
    })
}

/// Where [`free_ports`] looks when the kernel's ephemeral range cannot be read (Linux's default
/// start).
const EPHEMERAL_START_DEFAULT: u16 = 32768;
/// The lowest port [`free_ports`] hands out: clear of the well-known and most registered ports.
const PORTS_FROM: u16 = 10000;

/// A run of `count` consecutive free ports on 127.0.0.1, bound and kept in `held` until the
/// caller lets go right before starting its servers; returns the first.
///
/// They come from below the kernel's ephemeral range, and never twice in one process. A port
/// from that range (what binding port 0 gives) is free again once released, so an outgoing
/// connection (a cluster node's link to its peers, in a test running alongside) could take it
/// as its local port before the server binds it: "Address already in use".
pub fn free_ports(count: usize, held: &mut Vec<TcpListener>) -> u16 {
    static NEXT: std::sync::Mutex<Option<u16>> = std::sync::Mutex::new(None);
    let count = u16::try_from(count).unwrap();
    let end = ephemeral_start();
    assert!(
        PORTS_FROM + count < end,
        "no room below the ephemeral ports"
    );
    let mut next = NEXT.lock().unwrap();
    // A start that differs between processes, so two test binaries run at once rarely meet.
    let start = next.get_or_insert_with(|| {
        PORTS_FROM + (std::process::id() % u32::from(end - PORTS_FROM - count)) as u16
    });
    for _ in 0..(end - PORTS_FROM) {
        let base = if *start + count >= end {
            PORTS_FROM
        } else {
            *start
        };
        *start = base + count;
        let run: Vec<TcpListener> = (base..base + count)
            .map_while(|port| TcpListener::bind(("127.0.0.1", port)).ok())
            .collect();
        if run.len() == usize::from(count) {
            held.extend(run);
            return base;
        }
    }
    panic!("no {count} consecutive free ports below {end}");
}

/// A free port on 127.0.0.1 (see [`free_ports`]); the server claims it right after.
pub fn free_port() -> u16 {
    free_ports(1, &mut Vec::new())
}

/// First port of the kernel's ephemeral range.
fn ephemeral_start() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse().ok())
        .unwrap_or(EPHEMERAL_START_DEFAULT)
}

/// A running `shoal` process; killed with SIGKILL when dropped.
pub struct Server {
    pub addr: SocketAddr,
    pub data_dir: PathBuf,
    /// Working directory of the process (a relative `data_dir` is relative to it).
    cwd: Option<PathBuf>,
    args: Vec<String>,
    child: Option<Child>,
}

impl Server {
    /// Starts a server on a free port with `data_dir` and extra flags, and waits until it
    /// accepts connections.
    pub fn start(data_dir: &Path, extra: &[&str]) -> Server {
        Server::start_in(None, data_dir, extra)
    }

    /// Like [`Server::start`], with the process running in `cwd`.
    pub fn start_in(cwd: Option<&Path>, data_dir: &Path, extra: &[&str]) -> Server {
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        Server::start_on(addr, cwd, data_dir, extra)
    }

    /// Like [`Server::start_in`], listening for clients on `addr`.
    pub fn start_on(
        addr: SocketAddr,
        cwd: Option<&Path>,
        data_dir: &Path,
        extra: &[&str],
    ) -> Server {
        let mut server = Server {
            addr,
            data_dir: data_dir.to_path_buf(),
            cwd: cwd.map(Path::to_path_buf),
            args: extra.iter().map(|s| s.to_string()).collect(),
            child: None,
        };
        server.spawn();
        server
    }

    fn spawn(&mut self) {
        assert!(self.child.is_none());
        let mut cmd = Command::new(shoal_binary());
        if let Some(cwd) = &self.cwd {
            cmd.current_dir(cwd);
        }
        let child = cmd
            .arg("--listen")
            .arg(self.addr.to_string())
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(&self.args)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        self.wait_ready();
    }

    /// Polls until a PING is answered, or panics after [`START_TIMEOUT`].
    fn wait_ready(&mut self) {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("shoal exited during start: {status}");
            }
            if let Ok(mut c) = self.client().get_connection() {
                if redis::cmd("PING").query::<String>(&mut c).is_ok() {
                    return;
                }
            }
            assert!(Instant::now() < deadline, "shoal did not start in time");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn client(&self) -> redis::Client {
        redis::Client::open(format!("redis://{}/", self.addr)).unwrap()
    }

    pub fn connection(&self) -> redis::Connection {
        self.client().get_connection().unwrap()
    }

    /// A raw TCP connection, for malformed input.
    pub fn raw(&self) -> TcpStream {
        let s = TcpStream::connect(self.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s
    }

    /// Whether the process was started and not yet killed or stopped.
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// SIGKILL, then wait for the process to be gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    /// SIGTERM, then wait for a clean exit; returns the exit status's code.
    pub fn stop(&mut self) -> Option<i32> {
        let mut child = self.child.take()?;
        // SAFETY: kill(2) on our own child, which has not been reaped, so the pid is its.
        let rc = unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        assert_eq!(rc, 0, "kill failed");
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status.code();
            }
            if Instant::now() >= deadline {
                child.kill().unwrap();
                child.wait().unwrap();
                panic!("shoal did not stop after SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts the server again on the same port and data directory.
    pub fn restart(&mut self) {
        self.spawn();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}
