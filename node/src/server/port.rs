//! Claiming a listening port for this process alone.
//!
//! glommio binds with SO_REUSEPORT, so a server started on a port another process holds would
//! silently share it. A port is therefore first bound through std, without SO_REUSEPORT,
//! which fails while any other process listens there.

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::time::{Duration, Instant};

/// How long a bind retries a busy port: an io_uring process's sockets close asynchronously
/// (a kernel worker tears its rings down after it exits), so a restarted server can find its
/// port busy for a few ms.
pub const BIND_RETRY: Duration = Duration::from_secs(1);
/// Pause between binds of a busy port.
pub const BIND_RETRY_STEP: Duration = Duration::from_millis(10);

/// Binds `addr` without SO_REUSEPORT, retrying a busy port for up to [`BIND_RETRY`] and
/// blocking the thread meanwhile (it only happens at startup). A port still busy after that
/// belongs to another process: the error's kind is [`io::ErrorKind::AddrInUse`].
pub fn claim(addr: SocketAddr) -> io::Result<TcpListener> {
    let deadline = Instant::now() + BIND_RETRY;
    loop {
        match TcpListener::bind(addr) {
            Err(e) if e.kind() == io::ErrorKind::AddrInUse && Instant::now() < deadline => {
                std::thread::sleep(BIND_RETRY_STEP);
            }
            result => return result,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // A port held past the retry is refused: `peer::tests::listen_on_a_taken_port_is_an_error`.

    #[test]
    fn a_port_freed_during_the_retry_is_claimed() {
        let held = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = held.local_addr().unwrap();
        let release = std::thread::spawn(move || {
            std::thread::sleep(BIND_RETRY / 4);
            drop(held);
        });
        let claimed = claim(addr).unwrap();
        assert_eq!(claimed.local_addr().unwrap(), addr);
        release.join().unwrap();
    }
}
