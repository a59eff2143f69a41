//! What the comparison binaries' smoke tests share.

use std::process::Output;

/// The `--json` report of a comparison run that must have succeeded (its stderr otherwise).
pub fn json_report(out: &Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}
