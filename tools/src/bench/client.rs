//! One client thread: drives its share of the connections without blocking, with `poll(2)`
//! over non-blocking sockets. Each connection sends a pipeline of requests, waits for all of
//! their replies, records each request's latency (reply time minus the time the pipeline was
//! sent, as redis-benchmark does) and sends the next pipeline.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::unix::io::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use rand::SeedableRng;
use rand::rngs::StdRng;

use super::BenchError;
use super::args::{Budget, Config};
use super::resp::{self, ReplyKind};
use super::workload::{Op, Workload};

/// How long one `poll` waits before the thread looks at the stop flag and deadlines again.
const POLL_INTERVAL_MS: i32 = 100;
/// A connection with requests in flight and no reply for this long is treated as lost.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(30);
/// Bytes read from a socket at once.
const READ_CHUNK_BYTES: usize = 64 << 10;
/// Seconds of per-second latency kept for the timeline (one histogram each); later seconds
/// still count in the totals.
pub const TIMELINE_SECS_MAX: usize = 3600;
/// Latencies are recorded in nanoseconds, up to a minute, to 3 significant digits.
pub const LATENCY_MAX_NS: u64 = 60_000_000_000;

/// Counters shared by every client thread and the progress display.
#[derive(Debug, Default)]
pub struct Shared {
    /// Measured requests claimed so far (may overshoot the budget by under one pipeline per
    /// connection; the overshoot is never sent).
    claimed: AtomicU64,
    /// Measured requests answered so far.
    pub completed: AtomicU64,
    /// Set when any thread fails, so the others stop too.
    pub stop: AtomicBool,
}

/// When the run's phases begin and end, the same for every thread.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    /// End of the warm-up: requests sent from here on are measured.
    pub measure_start: Instant,
    /// No new pipeline is sent after this (`--duration`).
    pub deadline: Option<Instant>,
}

/// Latencies and errors of one operation type.
#[derive(Debug, Clone)]
pub struct OpRecord {
    pub latency_ns: Histogram<u64>,
    pub errors: u64,
}

impl OpRecord {
    pub fn new() -> OpRecord {
        OpRecord {
            latency_ns: latency_histogram(3),
            errors: 0,
        }
    }
}

impl Default for OpRecord {
    fn default() -> Self {
        OpRecord::new()
    }
}

pub fn latency_histogram(sigfig: u8) -> Histogram<u64> {
    // The bounds are constants that Histogram accepts (low >= 1, high >= 2 * low, sigfig <= 5).
    #[expect(clippy::unwrap_used, reason = "constant, valid bounds")]
    Histogram::new_with_bounds(1, LATENCY_MAX_NS, sigfig).unwrap()
}

/// What one thread measured.
#[derive(Debug, Clone)]
pub struct ThreadRecord {
    pub get: OpRecord,
    pub set: OpRecord,
    /// Latency of every measured request, per second since `measure_start`.
    pub timeline: Vec<Histogram<u64>>,
    /// When this thread received its last measured reply.
    pub last_reply: Option<Instant>,
}

struct Conn {
    index: usize,
    stream: TcpStream,
    out: Vec<u8>,
    written: usize,
    input: Vec<u8>,
    parsed: usize,
    inflight: VecDeque<Op>,
    sent_at: Instant,
    measured: bool,
    done: bool,
}

struct Thread<'a> {
    config: &'a Config,
    workload: &'a Workload,
    shared: &'a Shared,
    clock: Clock,
    rng: StdRng,
    key: Vec<u8>,
    record: ThreadRecord,
}

impl Thread<'_> {
    fn lost(&self, conn: &Conn, reason: impl Into<String>) -> BenchError {
        BenchError::ConnectionLost {
            addr: self.config.addr.clone(),
            conn: conn.index,
            reason: reason.into(),
        }
    }

    /// Claims and encodes the connection's next pipeline, or marks it done.
    fn next_batch(&mut self, conn: &mut Conn) {
        debug_assert!(conn.inflight.is_empty());
        let now = Instant::now();
        let pipeline = self.config.pipeline as u64;
        let (count, measured) = if self.shared.stop.load(Ordering::Relaxed) {
            (0, false)
        } else if now < self.clock.measure_start {
            (pipeline, false)
        } else if self.clock.deadline.is_some_and(|d| now >= d) {
            (0, true)
        } else if let Budget::Requests(total) = self.config.budget {
            let first = self.shared.claimed.fetch_add(pipeline, Ordering::Relaxed);
            (pipeline.min(total.saturating_sub(first)), true)
        } else {
            (pipeline, true)
        };
        if count == 0 {
            conn.done = true;
            return;
        }
        conn.out.clear();
        conn.written = 0;
        for _ in 0..count {
            let (op, n) = self.workload.next(&mut self.rng);
            self.workload.key(n, &mut self.key);
            match op {
                Op::Get => resp::encode_get(&mut conn.out, &self.key),
                Op::Set => resp::encode_set(&mut conn.out, &self.key, self.workload.value()),
            }
            conn.inflight.push_back(op);
        }
        conn.measured = measured;
        conn.sent_at = Instant::now();
    }

    fn flush(&self, conn: &mut Conn) -> Result<(), BenchError> {
        while conn.written < conn.out.len() {
            match conn.stream.write(&conn.out[conn.written..]) {
                Ok(0) => return Err(self.lost(conn, "the server stopped accepting data")),
                Ok(n) => conn.written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(self.lost(conn, e.to_string())),
            }
        }
        Ok(())
    }

    /// Reads what is available and accounts for every complete reply.
    fn receive(&mut self, conn: &mut Conn) -> Result<(), BenchError> {
        loop {
            let len = conn.input.len();
            conn.input.resize(len + READ_CHUNK_BYTES, 0);
            match conn.stream.read(&mut conn.input[len..]) {
                Ok(0) => {
                    conn.input.truncate(len);
                    return Err(self.lost(conn, "closed by the server"));
                }
                Ok(n) => conn.input.truncate(len + n),
                Err(e) => {
                    conn.input.truncate(len);
                    match e.kind() {
                        io::ErrorKind::WouldBlock => break,
                        io::ErrorKind::Interrupted => continue,
                        _ => return Err(self.lost(conn, e.to_string())),
                    }
                }
            }
        }
        let now = Instant::now();
        let latency = now.saturating_duration_since(conn.sent_at).as_nanos() as u64;
        let mut replies = 0u64;
        loop {
            let parsed = resp::parse_reply(&conn.input[conn.parsed..]).map_err(|source| {
                BenchError::Protocol {
                    addr: self.config.addr.clone(),
                    conn: conn.index,
                    source,
                }
            })?;
            let Some((kind, n)) = parsed else { break };
            conn.parsed += n;
            let Some(op) = conn.inflight.pop_front() else {
                return Err(self.lost(conn, "the server sent a reply to no request"));
            };
            replies += 1;
            if conn.measured {
                let rec = match op {
                    Op::Get => &mut self.record.get,
                    Op::Set => &mut self.record.set,
                };
                rec.latency_ns.saturating_record(latency);
                rec.errors += u64::from(kind == ReplyKind::Error);
                let second = now
                    .saturating_duration_since(self.clock.measure_start)
                    .as_secs() as usize;
                if second < TIMELINE_SECS_MAX {
                    while self.record.timeline.len() <= second {
                        self.record.timeline.push(latency_histogram(2));
                    }
                    self.record.timeline[second].saturating_record(latency);
                }
            }
        }
        if conn.parsed == conn.input.len() {
            conn.input.clear();
            conn.parsed = 0;
        } else if conn.parsed > READ_CHUNK_BYTES {
            conn.input.drain(..conn.parsed);
            conn.parsed = 0;
        }
        if conn.measured && replies > 0 {
            self.shared.completed.fetch_add(replies, Ordering::Relaxed);
            self.record.last_reply = Some(now);
        }
        Ok(())
    }

    fn run(&mut self, conns: &mut [Conn]) -> Result<(), BenchError> {
        for conn in conns.iter_mut() {
            self.next_batch(conn);
            self.flush(conn)?;
        }
        let mut fds: Vec<libc::pollfd> = Vec::with_capacity(conns.len());
        let mut active: Vec<usize> = Vec::with_capacity(conns.len());
        loop {
            fds.clear();
            active.clear();
            for (i, conn) in conns.iter().enumerate().filter(|(_, c)| !c.done) {
                let mut events = libc::POLLIN;
                if conn.written < conn.out.len() {
                    events |= libc::POLLOUT;
                }
                fds.push(libc::pollfd {
                    fd: conn.stream.as_raw_fd(),
                    events,
                    revents: 0,
                });
                active.push(i);
            }
            if fds.is_empty() {
                return Ok(());
            }
            // SAFETY: `fds` is a valid, initialised array of `fds.len()` pollfd structs that
            // outlives the call; poll only writes their `revents`.
            let ready = unsafe {
                libc::poll(
                    fds.as_mut_ptr(),
                    fds.len() as libc::nfds_t,
                    POLL_INTERVAL_MS,
                )
            };
            if ready < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(BenchError::Poll(e));
            }
            if self.shared.stop.load(Ordering::Relaxed) {
                return Ok(());
            }
            let now = Instant::now();
            for (fd, &i) in fds.iter().zip(&active) {
                let conn = &mut conns[i];
                if fd.revents == 0 {
                    if now.saturating_duration_since(conn.sent_at) > REPLY_TIMEOUT {
                        return Err(self.lost(conn, format!("no reply within {REPLY_TIMEOUT:?}")));
                    }
                    continue;
                }
                if fd.revents & libc::POLLOUT != 0 {
                    self.flush(conn)?;
                }
                if fd.revents & (libc::POLLIN | libc::POLLERR | libc::POLLHUP) != 0 {
                    self.receive(conn)?;
                }
                if fd.revents & libc::POLLNVAL != 0 {
                    return Err(self.lost(conn, "socket became invalid"));
                }
                if conn.inflight.is_empty() {
                    self.next_batch(conn);
                    self.flush(conn)?;
                }
            }
        }
    }
}

/// Drives `streams` (connected, each with its connection number for error messages) until the
/// budget is spent, then returns what was measured.
pub fn run_thread(
    config: &Config,
    workload: &Workload,
    shared: &Arc<Shared>,
    clock: Clock,
    streams: Vec<(usize, TcpStream)>,
    seed: u64,
) -> Result<ThreadRecord, BenchError> {
    let mut conns = Vec::with_capacity(streams.len());
    for (index, stream) in streams {
        stream.set_nonblocking(true).map_err(BenchError::Poll)?;
        conns.push(Conn {
            index,
            stream,
            out: Vec::new(),
            written: 0,
            input: Vec::new(),
            parsed: 0,
            inflight: VecDeque::with_capacity(config.pipeline),
            sent_at: Instant::now(),
            measured: false,
            done: false,
        });
    }
    let mut thread = Thread {
        config,
        workload,
        shared,
        clock,
        rng: StdRng::seed_from_u64(seed),
        key: Vec::new(),
        record: ThreadRecord {
            get: OpRecord::new(),
            set: OpRecord::new(),
            timeline: Vec::new(),
            last_reply: None,
        },
    };
    let result = thread.run(&mut conns);
    if result.is_err() {
        shared.stop.store(true, Ordering::Relaxed);
    }
    result.map(|()| thread.record)
}
