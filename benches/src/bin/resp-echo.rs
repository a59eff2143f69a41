//! `resp-echo`: a storage-less RESP responder on glommio (one executor per shard, connections
//! spread by SO_REUSEPORT, the node's default shard count and scheduling policy), the physical
//! limit a Shoal node of the same shape can reach on this machine. Prints `listening on ADDR`
//! once it accepts connections; runs until killed.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};

use clap::Parser;
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::{TcpListener, TcpStream};
use glommio::{LocalExecutorPoolBuilder, PoolPlacement};
use shoal_benches::resp_echo;
use shoal_node::config::{self, Sched};
use shoal_node::server::{port, sched};

/// Set by the first shard listening, which announces the address.
static ANNOUNCED: AtomicBool = AtomicBool::new(false);

/// Bytes read from a connection at once.
const READ_BYTES: usize = 64 << 10;

#[derive(Parser)]
#[command(
    name = "resp-echo",
    version,
    about = "Storage-less RESP responder: +OK, $-1 (GET), +PONG"
)]
struct Args {
    /// Address to listen on; port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Executors [default: one per core, as a Shoal node].
    #[arg(long)]
    shards: Option<usize>,
    /// The executors' scheduling policy, as the node's `--sched`.
    #[arg(long, value_enum, default_value = "batch")]
    sched: Sched,
}

async fn serve(mut stream: TcpStream) {
    let mut input = Vec::with_capacity(READ_BYTES);
    let mut out = Vec::with_capacity(READ_BYTES);
    let mut chunk = vec![0u8; READ_BYTES];
    loop {
        let n = match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        input.extend_from_slice(&chunk[..n]);
        out.clear();
        let Ok(used) = resp_echo::answer_all(&input, &mut out) else {
            return;
        };
        input.drain(..used);
        if !out.is_empty() && stream.write_all(&out).await.is_err() {
            return;
        }
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    // Claim the port (a previous server's may linger for a few ms) and resolve port 0 once, so
    // every shard binds the same port (glommio sets SO_REUSEPORT).
    let addr = match port::claim(args.listen).and_then(|l| l.local_addr()) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("resp-echo: binding {}: {e}", args.listen);
            return ExitCode::FAILURE;
        }
    };
    let shards = args.shards.unwrap_or_else(config::cores).max(1);
    let sched = args.sched;
    let pool = LocalExecutorPoolBuilder::new(PoolPlacement::MaxSpread(shards, None)).on_all_shards(
        move || async move {
            if let Err(e) = sched::set_current(sched) {
                eprintln!("resp-echo: setting the scheduling policy: {e}");
            }
            let listener = match TcpListener::bind(addr) {
                Ok(l) => l,
                Err(e) => {
                    eprintln!("resp-echo: binding {addr}: {e}");
                    return;
                }
            };
            if !ANNOUNCED.swap(true, Ordering::Relaxed) {
                println!("listening on {addr}");
            }
            loop {
                match listener.accept().await {
                    Ok(stream) => {
                        glommio::spawn_local(serve(stream)).detach();
                    }
                    Err(e) => eprintln!("resp-echo: accept: {e}"),
                }
            }
        },
    );
    match pool {
        Ok(handles) => {
            handles.join_all();
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("resp-echo: starting executors: {e}");
            ExitCode::FAILURE
        }
    }
}
