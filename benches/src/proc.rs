//! Child processes measured from outside: wall time, peak RSS and bytes written to storage,
//! all from `wait4`'s rusage (ru_maxrss is VmHWM; ru_oublock is the kernel's per-task
//! `write_bytes` in 512-byte units, counted when a page is dirtied or a direct write is
//! submitted), the same for every engine whatever its own statistics say.

use std::io::{self, Read};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How often a running child is checked for exit and for its deadline.
const POLL_INTERVAL: Duration = Duration::from_millis(5);
/// Bytes of a failed child's stderr kept for the error message.
const STDERR_TAIL_BYTES: usize = 4096;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProcError {
    #[error("starting {program}: {source}")]
    Spawn { program: String, source: io::Error },
    #[error("waiting for {program}: {source}")]
    Wait { program: String, source: io::Error },
    #[error("{program} ran longer than {limit:?} and was killed")]
    Timeout { program: String, limit: Duration },
    #[error("{program} failed ({status}): {stderr}")]
    Failed {
        program: String,
        status: String,
        stderr: String,
    },
}

/// What a finished child used.
#[derive(Debug, Clone, Default)]
pub struct ChildRun {
    pub wall: Duration,
    /// Peak resident set (VmHWM) of the child and its own children.
    pub max_rss_bytes: u64,
    /// Bytes the child sent toward storage (`/proc/<pid>/io` write_bytes).
    pub write_bytes: u64,
    pub stdout: String,
}

fn read_all(mut r: impl Read + Send + 'static) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        // A read error ends the capture; what was read is still reported.
        let _ = r.read_to_end(&mut buf);
        buf
    })
}

/// Runs `cmd` to completion (killing it, by its PID, after `limit`) and measures it. A
/// non-zero exit is an error carrying the end of its stderr.
pub fn run_measured(cmd: &mut Command, limit: Duration) -> Result<ChildRun, ProcError> {
    let program = cmd.get_program().to_string_lossy().into_owned();
    let start = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| ProcError::Spawn {
            program: program.clone(),
            source,
        })?;
    let pid = child.id() as libc::pid_t;
    let out = child.stdout.take().map(read_all);
    let err = child.stderr.take().map(read_all);
    let mut status: libc::c_int = 0;
    // SAFETY: rusage is plain old data; all-zero bytes are a valid value.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let mut timed_out = false;
    loop {
        // SAFETY: `pid` is our own child, not yet reaped (std's Child never waited for it);
        // status and usage point to live, writable values.
        let r = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut usage) };
        if r == pid {
            break;
        }
        if r < 0 {
            let source = io::Error::last_os_error();
            if source.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(ProcError::Wait { program, source });
        }
        if !timed_out && start.elapsed() > limit {
            // SAFETY: signalling our own unreaped child by its PID.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            timed_out = true;
        }
        std::thread::sleep(POLL_INTERVAL);
    }
    let wall = start.elapsed();
    let stdout = out.and_then(|h| h.join().ok()).unwrap_or_default();
    let stderr = err.and_then(|h| h.join().ok()).unwrap_or_default();
    if timed_out {
        return Err(ProcError::Timeout { program, limit });
    }
    let exited_ok = libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0;
    if !exited_ok {
        let tail = &stderr[stderr.len().saturating_sub(STDERR_TAIL_BYTES)..];
        let status = if libc::WIFEXITED(status) {
            format!("exit code {}", libc::WEXITSTATUS(status))
        } else {
            format!("signal {}", libc::WTERMSIG(status))
        };
        return Err(ProcError::Failed {
            program,
            status,
            stderr: String::from_utf8_lossy(tail).trim().to_owned(),
        });
    }
    Ok(ChildRun {
        wall,
        max_rss_bytes: usage.ru_maxrss as u64 * 1024,
        write_bytes: usage.ru_oublock as u64 * 512,
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
    })
}

/// Bytes allocated on disk under `dir` (what `du` reports), following no symlinks.
pub fn disk_usage(dir: &std::path::Path) -> io::Result<u64> {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d)? {
            let entry = entry?;
            let meta = entry.metadata()?;
            if meta.is_dir() {
                stack.push(entry.path());
            }
            total += meta.blocks() * 512;
        }
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn measures_rss_and_writes_of_a_child() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("out");
        // 8 MiB written and fsynced by dd, whose buffer makes it hold at least 1 MiB resident.
        let run = run_measured(
            Command::new("dd").args([
                "if=/dev/zero",
                &format!("of={}", file.display()),
                "bs=1M",
                "count=8",
                "conv=fsync",
            ]),
            Duration::from_secs(60),
        )
        .unwrap();
        assert!(
            run.write_bytes >= 8 << 20,
            "write_bytes {}",
            run.write_bytes
        );
        assert!(run.max_rss_bytes >= 1 << 20, "rss {}", run.max_rss_bytes);
        assert!(disk_usage(dir.path()).unwrap() >= 8 << 20);
    }

    #[test]
    fn failure_and_timeout_are_errors() {
        let e = run_measured(
            Command::new("sh").args(["-c", "echo boom >&2; exit 3"]),
            Duration::from_secs(60),
        );
        assert!(
            matches!(e, Err(ProcError::Failed { ref stderr, .. }) if stderr == "boom"),
            "{e:?}"
        );
        let start = Instant::now();
        let e = run_measured(Command::new("sleep").arg("30"), Duration::from_millis(200));
        assert!(matches!(e, Err(ProcError::Timeout { .. })), "{e:?}");
        assert!(start.elapsed() < Duration::from_secs(10));
    }

    #[test]
    fn captures_stdout() {
        let run = run_measured(Command::new("echo").arg("hello"), Duration::from_secs(60)).unwrap();
        assert_eq!(run.stdout, "hello\n");
    }
}
