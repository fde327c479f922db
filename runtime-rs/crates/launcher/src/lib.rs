//! The shim's launcher: one thread started before the shim confines itself, which
//! creates the threads and processes that must not inherit the shim's seccomp filter
//! (a filter passes to every thread and child created after it, and cannot be lifted):
//! the VMM's threads, which install their own, stricter lists; virtiofsd, which
//! installs its own; the thread that works inside a pod's network namespace.
//!
//! Without [`start`] (unit tests, tools) the work runs on the calling thread.

use std::sync::mpsc::{Sender, channel};
use std::sync::{Mutex, OnceLock};

type Job = Box<dyn FnOnce() + Send>;

/// The launcher thread's queue, once started.
static QUEUE: OnceLock<Mutex<Sender<Job>>> = OnceLock::new();

/// Starts the launcher thread. Call before confining the process; later calls do nothing.
pub fn start() -> std::io::Result<()> {
    if QUEUE.get().is_some() {
        return Ok(());
    }
    let (queue, jobs) = channel::<Job>();
    std::thread::Builder::new()
        .name("launcher".into())
        .spawn(move || {
            for job in jobs {
                job();
            }
        })?;
    let _ = QUEUE.set(Mutex::new(queue));
    Ok(())
}

/// Whether [`start`] ran: work then happens on the launcher thread.
pub fn started() -> bool {
    QUEUE.get().is_some()
}

/// Runs `work` on the launcher thread (or here, if it was never started) and returns its
/// result. `work` should be short: a spawn, not the spawned thread's life.
pub fn run<R: Send + 'static>(work: impl FnOnce() -> R + Send + 'static) -> R {
    let Some(queue) = QUEUE.get() else {
        return work();
    };
    let (reply, answer) = channel();
    let job: Job = Box::new(move || {
        let _ = reply.send(work());
    });
    queue
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .send(job)
        .expect("the launcher thread runs for the life of the process");
    answer
        .recv()
        .expect("the launcher thread answers every job it takes")
}

/// Spawns a named thread from the launcher, so that it is outside the shim's filter.
pub fn spawn_thread<T: Send + 'static>(
    name: &str,
    body: impl FnOnce() -> T + Send + 'static,
) -> std::io::Result<std::thread::JoinHandle<T>> {
    let builder = std::thread::Builder::new().name(name.to_string());
    run(move || builder.spawn(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seccomp_mode() -> String {
        std::fs::read_to_string("/proc/thread-self/status")
            .unwrap()
            .lines()
            .find(|l| l.starts_with("Seccomp:"))
            .map(|l| l.split_whitespace().nth(1).unwrap_or_default().to_string())
            .unwrap_or_default()
    }

    #[test]
    fn work_runs_on_the_launcher_outside_a_filter_installed_after_it() {
        // In a child process: the filter must not touch the test harness.
        // SAFETY: the child only runs this test body and leaves with _exit.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid == 0 {
            let code = (|| {
                start().ok()?;
                // SAFETY: prctl with integer arguments only.
                unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
                // A filter that allows everything: enough to show in /proc as mode 2.
                let allow_all = [libc::sock_filter {
                    code: 0x06, // BPF_RET | BPF_K
                    jt: 0,
                    jf: 0,
                    k: 0x7fff_0000, // SECCOMP_RET_ALLOW
                }];
                let prog = libc::sock_fprog {
                    len: 1,
                    filter: allow_all.as_ptr() as *mut _,
                };
                // SAFETY: the program outlives the call.
                let rc = unsafe {
                    libc::prctl(libc::PR_SET_SECCOMP, 2, &prog as *const libc::sock_fprog)
                };
                if rc != 0 || seccomp_mode() != "2" {
                    return None;
                }
                let spawned = spawn_thread("outside", seccomp_mode).ok()?.join().ok()?;
                let here = std::thread::spawn(seccomp_mode).join().ok()?;
                Some(spawned == "0" && here == "2" && run(seccomp_mode) == "0")
            })();
            // SAFETY: leaving the child.
            unsafe { libc::_exit(if code == Some(true) { 0 } else { 1 }) };
        }
        let mut status = 0;
        // SAFETY: waiting for our child into a stack int.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "{status:#x}"
        );
    }

    #[test]
    fn without_start_work_runs_here() {
        if !started() {
            let me = std::thread::current().id();
            assert!(run(move || std::thread::current().id() == me));
        }
    }
}
