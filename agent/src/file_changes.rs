//! Waiting for a file to change without polling it: inotify, driven by the tokio reactor.
//!
//! cgroup v2 raises a modify event on `memory.events` whenever one of its counters moves
//! (an OOM kill among them), so a watcher sleeps until there is something to read instead
//! of waking every few hundred milliseconds in every container of every idle sandbox.

use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::path::Path;

use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
use tokio::io::unix::AsyncFd;

/// The inotify instance, seen by tokio through its descriptor.
struct Watch(Inotify);

impl AsRawFd for Watch {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_fd().as_raw_fd()
    }
}

/// Modifications of one file.
pub struct FileChanges {
    watch: AsyncFd<Watch>,
}

impl FileChanges {
    /// Starts watching `path` for modifications. Must run inside a tokio runtime.
    pub fn watch(path: &Path) -> std::io::Result<Self> {
        let inotify = Inotify::init(InitFlags::IN_CLOEXEC | InitFlags::IN_NONBLOCK)?;
        inotify.add_watch(path, AddWatchFlags::IN_MODIFY)?;
        // SAFETY: the AsyncFd owns the inotify instance, so its descriptor stays open for
        // as long as it is registered.
        let watch = unsafe { AsyncFd::register(Watch(inotify))? };
        Ok(Self { watch })
    }

    /// Waits until the file has changed since the last call (or since `watch`). Events
    /// that piled up meanwhile are taken together: one return for any number of them.
    pub async fn changed(&self) -> std::io::Result<()> {
        loop {
            let mut ready = self.watch.readable().await?;
            match ready.get_inner().0.read_events() {
                Ok(events) if !events.is_empty() => {
                    // Drain what else queued behind them before the caller reads the file.
                    while matches!(ready.get_inner().0.read_events(), Ok(more) if !more.is_empty())
                    {
                    }
                    ready.clear_ready();
                    return Ok(());
                }
                Ok(_) | Err(nix::errno::Errno::EAGAIN) => ready.clear_ready(),
                Err(e) => return Err(e.into()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_write_wakes_the_watcher_and_silence_does_not() {
        let dir = std::env::temp_dir().join(format!("file-changes-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("events");
        std::fs::write(&file, "oom_kill 0\n").unwrap();
        let changes = FileChanges::watch(&file).unwrap();

        let quiet = tokio::time::timeout(Duration::from_millis(100), changes.changed()).await;
        assert!(quiet.is_err(), "woke with nothing written");

        std::fs::write(&file, "oom_kill 1\n").unwrap();
        std::fs::write(&file, "oom_kill 2\n").unwrap();
        tokio::time::timeout(Duration::from_secs(5), changes.changed())
            .await
            .expect("a write did not wake the watcher")
            .unwrap();
        // Both writes were taken by that one wake-up.
        let again = tokio::time::timeout(Duration::from_millis(100), changes.changed()).await;
        assert!(again.is_err(), "woke twice for writes already seen");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_missing_file_is_an_error() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .unwrap();
        let _entered = runtime.enter();
        let err = FileChanges::watch(Path::new("/nonexistent/memory.events"))
            .err()
            .expect("watched a missing file");
        assert_eq!(err.kind(), std::io::ErrorKind::NotFound);
    }
}
