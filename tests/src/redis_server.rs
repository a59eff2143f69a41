//! A real `redis-server` on a free 127.0.0.1 port, to hold Shoal's replies against Redis's
//! own. Where it is not installed, [`RedisServer::start`] says so and tests skip.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::free_port;

/// redis-server is up within milliseconds; this bounds a broken start.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// A running `redis-server` without persistence; killed when dropped.
pub struct RedisServer {
    pub addr: SocketAddr,
    child: Child,
}

impl RedisServer {
    /// Starts one, or prints a notice and returns `None` when redis-server is not installed.
    pub fn start() -> Option<RedisServer> {
        let installed = Command::new("redis-server")
            .arg("--version")
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !installed {
            eprintln!("NOTICE: redis-server is not installed; skipping the comparison with Redis");
            return None;
        }
        let port = free_port();
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let server = RedisServer {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            child,
        };
        let deadline = Instant::now() + START_TIMEOUT;
        while !server.answers() {
            assert!(
                Instant::now() < deadline,
                "redis-server did not answer on port {port}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(server)
    }

    fn answers(&self) -> bool {
        self.client()
            .get_connection()
            .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c))
            .is_ok()
    }

    pub fn client(&self) -> redis::Client {
        redis::Client::open(format!("redis://{}/", self.addr)).unwrap()
    }

    /// `redis_version` from INFO, as (major, minor, patch).
    pub fn version(&self) -> (u32, u32, u32) {
        let mut c = self.client().get_connection().unwrap();
        let info: String = redis::cmd("INFO").arg("server").query(&mut c).unwrap();
        let version = info
            .lines()
            .find_map(|l| l.strip_prefix("redis_version:"))
            .unwrap();
        let mut parts = version.trim().split('.').map(|p| p.parse().unwrap());
        (
            parts.next().unwrap(),
            parts.next().unwrap(),
            parts.next().unwrap_or(0),
        )
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
