//! Child reaping. As PID 1 (or a subreaper in host mode) the agent collects every child
//! that exits; those it spawned get their exit status published, the rest (orphans
//! re-parented to the agent) are simply reaped.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use nix::errno::Errno;
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use tokio::sync::watch;

/// The exit status as Kata reports it: the code, or 128 + the signal number.
pub type ExitStatus = i32;

/// A receiver that turns `Some(status)` once the process has been reaped.
pub type ExitWatch = watch::Receiver<Option<ExitStatus>>;

#[derive(Default)]
struct Table {
    waiting: HashMap<i32, watch::Sender<Option<ExitStatus>>>,
}

/// Publishes exit statuses of the agent's own children.
#[derive(Clone, Default)]
pub struct Reaper {
    table: Arc<Mutex<Table>>,
}

/// Maps a wait status to Kata's exit status; `None` for stops and continues.
pub fn exit_status(status: WaitStatus) -> Option<(Pid, ExitStatus)> {
    match status {
        WaitStatus::Exited(pid, code) => Some((pid, code)),
        WaitStatus::Signaled(pid, signal, _) => Some((pid, 128 + signal as i32)),
        _ => None,
    }
}

impl Reaper {
    /// Runs `spawn` (which forks and returns the child's pid) with the table locked, so
    /// the child is registered before its exit can be reaped.
    pub fn spawn_registered<E>(
        &self,
        spawn: impl FnOnce() -> Result<Pid, E>,
    ) -> Result<(Pid, ExitWatch), E> {
        let mut table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        let pid = spawn()?;
        let (sender, receiver) = watch::channel(None);
        table.waiting.insert(pid.as_raw(), sender);
        Ok((pid, receiver))
    }

    /// Reaps every child that has exited; called on each SIGCHLD.
    pub fn reap_exited(&self) {
        loop {
            let mut table = self.table.lock().unwrap_or_else(|e| e.into_inner());
            match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => return,
                Ok(status) => {
                    if let Some((pid, code)) = exit_status(status)
                        && let Some(sender) = table.waiting.remove(&pid.as_raw())
                    {
                        sender.send_replace(Some(code));
                    }
                }
                Err(Errno::EINTR) => continue,
                Err(_) => return,
            }
        }
    }

    /// Starts the SIGCHLD task that keeps reaping for the agent's lifetime.
    pub fn start(&self) -> std::io::Result<()> {
        let mut signals = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::child())?;
        let reaper = self.clone();
        tokio::spawn(async move {
            loop {
                reaper.reap_exited();
                if signals.recv().await.is_none() {
                    return;
                }
            }
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::signal::Signal;

    #[test]
    fn exit_codes_follow_kata() {
        let pid = Pid::from_raw(7);
        assert_eq!(exit_status(WaitStatus::Exited(pid, 3)), Some((pid, 3)));
        assert_eq!(
            exit_status(WaitStatus::Signaled(pid, Signal::SIGKILL, false)),
            Some((pid, 137))
        );
        assert_eq!(exit_status(WaitStatus::Stopped(pid, Signal::SIGSTOP)), None);
    }
}
