//! `peer-compare` end to end with small counts: every measurement completes and is positive.

#![allow(clippy::unwrap_used)]

use std::process::Command;

#[test]
fn peer_compare_runs() {
    let out = Command::new(env!("CARGO_BIN_EXE_peer-compare"))
        .args(["--frames", "20000", "--rounds", "200"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("stream 20000 frames"), "{stdout}");
    assert!(stdout.contains("round trip 200 x"), "{stdout}");
    assert!(
        !stdout.contains("inf") && !stdout.contains("NaN"),
        "{stdout}"
    );
}
