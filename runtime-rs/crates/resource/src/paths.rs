//! Where a sandbox keeps its files on the host, and their removal.

use std::path::{Path, PathBuf};

use slog::Logger;

use crate::share::ShareDirs;

/// Per-sandbox runtime state directory.
pub const RUN_ROOT: &str = "/run/kata";
/// Parent of every sandbox's shared directory.
pub const SHARE_ROOT: &str = "/run/kata-containers/shared/sandboxes";

/// Where a sandbox keeps its files on the host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SandboxPaths {
    /// `/run/kata/<sid>`.
    pub run_dir: PathBuf,
    /// `/run/kata-containers/shared/sandboxes/<sid>`: `mounts/` (host-only) and its
    /// read-only view `shared/`, the virtio-fs export.
    pub share: ShareDirs,
}

impl SandboxPaths {
    /// The paths of sandbox `sid`.
    pub fn new(sid: &str) -> Self {
        Self {
            run_dir: Path::new(RUN_ROOT).join(sid),
            share: ShareDirs::new(Path::new(SHARE_ROOT).join(sid)),
        }
    }

    /// The VMM's hybrid vsock socket.
    pub fn hvsock(&self) -> PathBuf {
        self.run_dir.join("kata.hvsock")
    }

    /// The guest console log.
    pub fn console(&self) -> PathBuf {
        self.run_dir.join("console.log")
    }

    /// virtiofsd's vhost-user socket.
    pub fn virtiofsd_socket(&self) -> PathBuf {
        self.run_dir.join("virtiofsd.sock")
    }
}

/// Removes whatever sandbox `sid` left on the host: mounts, sockets, directories. Nothing
/// is ever deleted through a mount that could not be detached.
pub fn remove_leftovers(sid: &str, log: Option<&Logger>) {
    let paths = SandboxPaths::new(sid);
    // containerd may run two cleanups of one dead shim at once (its own, and the one a
    // task delete triggers); two walks of one tree each stop at what the other removed
    // and can leave it half done. One at a time, on a lock that leaves no file behind.
    let _serialized = paths.run_dir.parent().and_then(lock_dir);
    let killed = crate::virtiofsd::kill_leftovers(&paths);
    if killed > 0
        && let Some(log) = log
    {
        slog::warn!(log, "killed a virtiofsd left serving the sandbox"; "sandbox" => sid, "count" => killed);
    }
    if let Ok(recorded) = std::fs::read_to_string(crate::cgroup::record_file(&paths.run_dir))
        && let Ok(path) = crate::cgroup::CgroupPath::parse(&recorded)
        && let Some(e) = crate::cgroup::remove_cgroup(&path)
        && let Some(log) = log
    {
        slog::warn!(log, "sandbox cleanup left its cgroup in place"; "sandbox" => sid, "error" => %e);
    }
    for dir in [&paths.share.root, &paths.run_dir] {
        if let Err(e) = safe_fs::unmount_and_remove(dir)
            && let Some(log) = log
        {
            slog::warn!(log, "sandbox cleanup left a path in place"; "sandbox" => sid, "error" => %e);
        }
    }
}

/// An exclusive flock on directory `dir`, held until the returned guard is dropped.
fn lock_dir(dir: &Path) -> Option<nix::fcntl::Flock<std::fs::File>> {
    let file = std::fs::File::open(dir).ok()?;
    nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_follow_kata() {
        let paths = SandboxPaths::new("abc");
        assert_eq!(paths.run_dir, PathBuf::from("/run/kata/abc"));
        assert_eq!(
            paths.share.shared,
            PathBuf::from("/run/kata-containers/shared/sandboxes/abc/shared")
        );
        assert_eq!(paths.hvsock(), PathBuf::from("/run/kata/abc/kata.hvsock"));
    }
}
