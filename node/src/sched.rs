//! The Linux scheduling policy of a shard's threads (`--sched`, [`Sched`]).
//!
//! An executor under `SCHED_BATCH` does not preempt the thread on its core when woken. The
//! kernel makes io_uring's worker threads (`iou-wrk-<tid>`, which run the executor's fdatasyncs
//! among other blocking operations) as copies of the executor's thread, so they inherit that
//! policy, and a worker that cannot preempt its busy executor holds up every durable write
//! until the executor parks or its time slice ends: measured on 2 cores, one connection's
//! SETs fell from ~3.7K/s to ~2.9K/s and 50 connections' pipelined SETs from ~450K/s to
//! ~405K/s. No flag makes Linux reset SCHED_BATCH in new threads, so each shard puts its
//! workers back to SCHED_OTHER on its ticker ([`normalize_io_workers`]).

use crate::config::Sched;

/// Sets the calling thread's policy (`sched_setscheduler(0, ..)` applies to the calling
/// thread on Linux, not the whole process). Neither policy needs privileges.
pub fn set_current(sched: Sched) -> std::io::Result<()> {
    let policy = match sched {
        Sched::Batch => libc::SCHED_BATCH,
        Sched::Normal => libc::SCHED_OTHER,
    };
    set(0, policy)
}

/// The calling thread's id, as io_uring names its workers after it.
pub fn current_tid() -> libc::pid_t {
    // SAFETY: gettid has no preconditions.
    unsafe { libc::gettid() }
}

/// Puts the io_uring workers of thread `tid` that run under `SCHED_BATCH` back to
/// `SCHED_OTHER`; returns how many it changed.
pub fn normalize_io_workers(tid: libc::pid_t) -> std::io::Result<usize> {
    let name = format!("iou-wrk-{tid}");
    let mut changed = 0;
    for task in std::fs::read_dir("/proc/self/task")? {
        let task = task?;
        let Some(worker) = task
            .file_name()
            .to_str()
            .and_then(|t| t.parse::<libc::pid_t>().ok())
        else {
            continue;
        };
        // A thread that exited since the listing has no comm any more: skip it.
        let Ok(comm) = std::fs::read_to_string(task.path().join("comm")) else {
            continue;
        };
        if comm.trim_end() != name {
            continue;
        }
        // SAFETY: sched_getscheduler only reads the policy of the thread `worker`.
        if unsafe { libc::sched_getscheduler(worker) } == libc::SCHED_BATCH {
            set(worker, libc::SCHED_OTHER)?;
            changed += 1;
        }
    }
    Ok(changed)
}

fn set(tid: libc::pid_t, policy: libc::c_int) -> std::io::Result<()> {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: `param` is a valid sched_param that outlives the call.
    if unsafe { libc::sched_setscheduler(tid, policy, &param) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}
