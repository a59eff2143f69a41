//! `peer-compare`: Shoal's peer transport against raw glommio TCP, in the same run (see
//! `shoal_benches::peer_compare`). Prints one line per measurement and the ratio to raw TCP.

use std::process::ExitCode;

use clap::Parser;
use shoal_benches::peer_compare::{self, Stream};

#[derive(Parser)]
#[command(
    name = "peer-compare",
    version,
    about = "Peer transport vs raw TCP: stream and round trip"
)]
struct Args {
    /// Frames streamed per run.
    #[arg(long, default_value_t = 1_000_000)]
    frames: u64,
    /// Payload bytes per streamed frame.
    #[arg(long, default_value_t = 112)]
    payload: usize,
    /// Round trips per run.
    #[arg(long, default_value_t = 20_000)]
    rounds: u64,
    /// Payload bytes of the round-trip frame.
    #[arg(long, default_value_t = 112)]
    rtt_payload: usize,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let run = Stream {
        frames: args.frames,
        payload: args.payload,
    };
    let result = (|| -> Result<(), peer_compare::CompareError> {
        let raw = peer_compare::stream_raw(run, false)?;
        let decoded = peer_compare::stream_raw(run, true)?;
        let peers = peer_compare::stream_peers(run)?;
        println!(
            "stream {} frames x {} B: raw {:.0} frames/s ({:.1} MiB/s), raw+decode {:.0} frames/s, peers {:.0} frames/s ({:.1} MiB/s), peers/raw {:.2}, peers/(raw+decode) {:.2}",
            args.frames,
            args.payload,
            raw.frames_per_sec,
            raw.mib_per_sec,
            decoded.frames_per_sec,
            peers.frames_per_sec,
            peers.mib_per_sec,
            peers.frames_per_sec / raw.frames_per_sec,
            peers.frames_per_sec / decoded.frames_per_sec
        );
        let raw = peer_compare::round_trip_raw(args.rounds, args.rtt_payload)?;
        let peers = peer_compare::round_trip_peers(args.rounds, args.rtt_payload)?;
        println!(
            "round trip {} x {} B: raw {:.1} us, peers {:.1} us, peers/raw {:.2}",
            args.rounds,
            args.rtt_payload,
            raw.as_secs_f64() * 1e6,
            peers.as_secs_f64() * 1e6,
            peers.as_secs_f64() / raw.as_secs_f64()
        );
        Ok(())
    })();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("peer-compare: {e}");
            ExitCode::FAILURE
        }
    }
}
