//! The Linux scheduling policy of a shard's threads (`--sched`, [`Sched`]).
//!
//! An executor under `SCHED_BATCH` does not preempt the thread on its core when woken. The
//! kernel makes io_uring's worker threads (`iou-wrk-<tid>`, which run the executor's fdatasyncs
//! among other blocking operations) as copies of the executor's thread, so they inherit that
//! policy, and a worker that cannot preempt its busy executor holds up every durable write
//! until the executor parks or its time slice ends. No flag makes Linux reset SCHED_BATCH in
//! new threads, so each shard puts its workers back to SCHED_OTHER on its ticker
//! ([`IoWorkers`]).

use std::collections::HashSet;

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

/// The io_uring workers of one executor thread, found by name in `/proc/self/task`.
pub struct IoWorkers {
    /// `iou-wrk-<executor tid>`.
    name: String,
    /// Threads known not to be this executor's workers, so each tick reads the name of new
    /// threads and of the workers only. A thread that is gone leaves the set before its id
    /// can be reused.
    others: HashSet<libc::pid_t>,
}

impl IoWorkers {
    /// The workers of the calling thread.
    pub fn of_current_thread() -> IoWorkers {
        // SAFETY: gettid has no preconditions.
        let tid = unsafe { libc::gettid() };
        IoWorkers {
            name: format!("iou-wrk-{tid}"),
            others: HashSet::new(),
        }
    }

    /// Puts the workers that run under `SCHED_BATCH` back to `SCHED_OTHER`; returns how
    /// many it changed.
    pub fn normalize(&mut self) -> std::io::Result<usize> {
        let mut listed = HashSet::new();
        let mut changed = 0;
        for task in std::fs::read_dir("/proc/self/task")? {
            let task = task?;
            let Some(tid) = task
                .file_name()
                .to_str()
                .and_then(|t| t.parse::<libc::pid_t>().ok())
            else {
                continue;
            };
            listed.insert(tid);
            if self.others.contains(&tid) {
                continue;
            }
            // A thread that exited since the listing has no comm any more: skip it.
            let Ok(comm) = std::fs::read_to_string(task.path().join("comm")) else {
                continue;
            };
            if comm.trim_end() != self.name {
                self.others.insert(tid);
                continue;
            }
            // SAFETY: sched_getscheduler only reads the policy of the thread `tid`.
            if unsafe { libc::sched_getscheduler(tid) } == libc::SCHED_BATCH {
                set(tid, libc::SCHED_OTHER)?;
                changed += 1;
            }
        }
        self.others.retain(|tid| listed.contains(tid));
        Ok(changed)
    }
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

#[cfg(test)]
mod tests {
    use std::sync::mpsc;
    use std::thread::JoinHandle;

    use super::*;

    /// A thread named `name` under SCHED_BATCH, running until its sender is dropped.
    fn batch_thread(name: &str) -> (libc::pid_t, mpsc::Sender<()>, JoinHandle<()>) {
        let (tid_tx, tid_rx) = mpsc::channel();
        let (stop_tx, stop_rx) = mpsc::channel::<()>();
        let handle = std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || {
                set_current(Sched::Batch).unwrap();
                // SAFETY: gettid has no preconditions.
                tid_tx.send(unsafe { libc::gettid() }).unwrap();
                let _ = stop_rx.recv();
            })
            .unwrap();
        (tid_rx.recv().unwrap(), stop_tx, handle)
    }

    fn policy(tid: libc::pid_t) -> libc::c_int {
        // SAFETY: reads the policy of a thread of this process.
        unsafe { libc::sched_getscheduler(tid) }
    }

    #[test]
    fn resets_this_threads_workers_and_no_others() {
        let mut workers = IoWorkers::of_current_thread();
        let (mine, stop_mine, mine_handle) = batch_thread(&workers.name);
        let (other, stop_other, other_handle) = batch_thread("iou-wrk-1");
        assert_eq!(policy(mine), libc::SCHED_BATCH);
        assert_eq!(workers.normalize().unwrap(), 1);
        assert_eq!(policy(mine), libc::SCHED_OTHER);
        assert_eq!(
            policy(other),
            libc::SCHED_BATCH,
            "another executor's worker"
        );
        assert_eq!(workers.normalize().unwrap(), 0);
        drop((stop_mine, stop_other));
        mine_handle.join().unwrap();
        other_handle.join().unwrap();
    }
}
