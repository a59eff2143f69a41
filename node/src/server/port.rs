//! Claiming a listening port for this process alone, and the listeners the shards share.
//!
//! The shards' client listeners share one port with SO_REUSEPORT, so a server started on a
//! port another process holds would silently share it. A port is therefore first bound
//! through std ([`claim`]: SO_REUSEADDR, no SO_REUSEPORT), which fails while any other
//! process listens there, but not because of the connections a previous server on the port
//! left behind (TIME_WAIT, or FIN_WAIT2 while a client still holds its end after kill -9):
//! Linux lets a socket with SO_REUSEADDR bind beside sockets that have it too and are not
//! listening. So every listening socket ([`listen_shared`], and the claimed socket itself)
//! sets SO_REUSEADDR, and the connections it accepts inherit it.

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

/// A listener for one of the shards that share `addr` (SO_REUSEPORT), with SO_REUSEADDR
/// (see the module docs). Call after [`claim`] proved the port free.
pub fn listen_shared(addr: SocketAddr) -> io::Result<TcpListener> {
    let domain = socket2::Domain::for_address(addr);
    let socket = socket2::Socket::new(domain, socket2::Type::STREAM, Some(socket2::Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.bind(&addr.into())?;
    socket.listen(LISTEN_BACKLOG)?;
    Ok(socket.into())
}

/// Connections waiting to be accepted per listener: glommio's own choice for its binds.
const LISTEN_BACKLOG: i32 = 1024;

#[cfg(test)]
mod tests {
    use super::*;

    // A port held past the retry is refused: `peer::tests::listen_on_a_taken_port_is_an_error`.

    #[test]
    fn a_port_with_a_live_listener_is_refused_but_its_old_connections_do_not_block() {
        let first = listen_shared("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = first.local_addr().unwrap();
        let second = listen_shared(addr).unwrap();
        assert_eq!(
            claim_once(addr).unwrap_err().kind(),
            io::ErrorKind::AddrInUse
        );
        // A connection the server accepted, then the server gone with the client still
        // connected: the accepted end lingers in FIN_WAIT2.
        let client = std::net::TcpStream::connect(addr).unwrap();
        let (accepted, _) = first.accept().unwrap();
        drop((first, second, accepted));
        let reclaimed = claim_once(addr).unwrap();
        assert_eq!(reclaimed.local_addr().unwrap(), addr);
        drop(client);
    }

    /// One bind, without the retry.
    fn claim_once(addr: SocketAddr) -> io::Result<TcpListener> {
        TcpListener::bind(addr)
    }

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
