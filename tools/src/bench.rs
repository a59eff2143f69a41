//! `shoal-bench`: a load generator for any RESP server. Connections are opened up front, split
//! over client threads ([`client`]), each driving its share without blocking; the main thread
//! shows progress, then merges the threads' histograms into a [`report::Report`].

pub mod args;
pub mod client;
pub mod plot;
pub mod report;
pub mod resp;
pub mod workload;

use std::io;
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

use self::args::{Budget, Config};
use self::client::{Clock, Shared};
use self::report::Report;
use self::workload::Workload;

/// How long one connection attempt may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How often the progress bar is refreshed.
const PROGRESS_INTERVAL: Duration = Duration::from_millis(100);

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BenchError {
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    #[error("cannot connect to {addr}: {source}")]
    Connect { addr: String, source: io::Error },
    #[error("connection {conn} to {addr} lost: {reason}")]
    ConnectionLost {
        addr: String,
        conn: usize,
        reason: String,
    },
    #[error("connection {conn} to {addr}: malformed reply: {source}")]
    Protocol {
        addr: String,
        conn: usize,
        source: resp::ProtocolError,
    },
    #[error("polling the connections: {0}")]
    Poll(io::Error),
    #[error("a client thread panicked")]
    ThreadPanicked,
}

fn resolve(addr: &str) -> Result<SocketAddr, BenchError> {
    let connect_err = |source| BenchError::Connect {
        addr: addr.to_owned(),
        source,
    };
    addr.to_socket_addrs()
        .map_err(connect_err)?
        .next()
        .ok_or_else(|| {
            connect_err(io::Error::new(
                io::ErrorKind::NotFound,
                "address resolves to nothing",
            ))
        })
}

fn connect(config: &Config) -> Result<Vec<TcpStream>, BenchError> {
    let to = resolve(&config.addr)?;
    (0..config.clients)
        .map(|_| {
            let s = TcpStream::connect_timeout(&to, CONNECT_TIMEOUT).map_err(|source| {
                BenchError::Connect {
                    addr: config.addr.clone(),
                    source,
                }
            })?;
            s.set_nodelay(true).map_err(|source| BenchError::Connect {
                addr: config.addr.clone(),
                source,
            })?;
            Ok(s)
        })
        .collect()
}

fn progress_bar(config: &Config, show: bool) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let (bar, template) = match config.budget {
        Budget::Requests(n) => (
            ProgressBar::new(n),
            "{bar:40} {pos}/{len} requests, {per_sec}, eta {eta}",
        ),
        Budget::Duration(d) => (
            ProgressBar::new(d.as_secs()),
            "{bar:40} {pos}/{len} s, {msg}",
        ),
    };
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style);
    }
    bar
}

/// Runs the load described by `config` and returns what was measured. Server error replies are
/// counted in the report; a lost connection ends the run with an error.
pub fn run(config: &Config, show_progress: bool) -> Result<Report, BenchError> {
    let workload = Workload::new(config);
    let streams = connect(config)?;
    let mut per_thread: Vec<Vec<(usize, TcpStream)>> =
        (0..config.threads).map(|_| Vec::new()).collect();
    for (i, s) in streams.into_iter().enumerate() {
        per_thread[i % config.threads].push((i, s));
    }
    let shared = Arc::new(Shared::default());
    let start = Instant::now();
    let measure_start = start + config.warmup;
    let clock = Clock {
        measure_start,
        deadline: match config.budget {
            Budget::Duration(d) => Some(measure_start + d),
            Budget::Requests(_) => None,
        },
    };
    let bar = progress_bar(config, show_progress);
    let results = std::thread::scope(|scope| {
        let handles: Vec<_> = per_thread
            .into_iter()
            .enumerate()
            .map(|(t, streams)| {
                let (workload, shared) = (&workload, &shared);
                let seed = config
                    .seed
                    .wrapping_mul(0x9E37_79B9_7F4A_7C15)
                    .wrapping_add(t as u64);
                scope.spawn(move || {
                    client::run_thread(config, workload, shared, clock, streams, seed)
                })
            })
            .collect();
        while !handles.iter().all(|h| h.is_finished()) {
            std::thread::sleep(PROGRESS_INTERVAL);
            let done = shared.completed.load(Ordering::Relaxed);
            match config.budget {
                Budget::Requests(_) => bar.set_position(done),
                Budget::Duration(_) => {
                    bar.set_position(
                        Instant::now()
                            .saturating_duration_since(measure_start)
                            .as_secs(),
                    );
                    bar.set_message(format!("{done} requests"));
                }
            }
        }
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .map_err(|_| BenchError::ThreadPanicked)
                    .and_then(|r| r)
            })
            .collect::<Result<Vec<_>, _>>()
    });
    bar.finish_and_clear();
    let records = results?;
    let end = records
        .iter()
        .filter_map(|r| r.last_reply)
        .max()
        .unwrap_or(measure_start);
    Ok(Report::new(
        config.clone(),
        end.saturating_duration_since(measure_start),
        &records,
    ))
}
