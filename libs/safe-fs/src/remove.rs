//! Removing a directory tree without following symlinks or crossing mount points.

use std::ffi::{CStr, CString, OsStr};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{OFlag, openat};
use nix::sys::stat::Mode;
use nix::unistd::{UnlinkatFlags, unlinkat};

/// Deepest directory level [`remove_tree`] descends to.
const MAX_DEPTH: usize = 128;

/// Why a tree was not (completely) removed.
#[derive(Debug, thiserror::Error)]
pub enum RemoveError {
    /// A mount point inside (or at) the tree: it and its parents were left in place.
    #[error("{path} is a mount point: left in place so that nothing is deleted through it")]
    MountPoint {
        /// The mount point.
        path: PathBuf,
    },
    /// The tree is deeper than [`MAX_DEPTH`].
    #[error("{path} is nested more than {MAX_DEPTH} directories deep: not removed")]
    TooDeep {
        /// Where the limit was reached.
        path: PathBuf,
    },
    /// A system call failed.
    #[error("removing {path}: {source}")]
    Io {
        /// The entry.
        path: PathBuf,
        /// The failure.
        #[source]
        source: std::io::Error,
    },
}

fn io(path: &Path, errno: Errno) -> RemoveError {
    RemoveError::Io {
        path: path.to_path_buf(),
        source: std::io::Error::from(errno),
    }
}

/// What statx says of one entry.
struct Entry {
    is_dir: bool,
    mount_id: u64,
    mount_root: bool,
}

fn stat_at(dir: BorrowedFd<'_>, name: &CStr) -> Result<Entry, Errno> {
    // SAFETY: statx is plain data; zeroed is a valid value.
    let mut buf: libc::statx = unsafe { std::mem::zeroed() };
    let flags = libc::AT_SYMLINK_NOFOLLOW | libc::AT_EMPTY_PATH | libc::AT_STATX_SYNC_AS_STAT;
    let mask = libc::STATX_TYPE | libc::STATX_MNT_ID;
    // SAFETY: a valid directory fd, a NUL-terminated name and a buffer we own.
    let rc = unsafe { libc::statx(dir.as_raw_fd(), name.as_ptr(), flags, mask, &mut buf) };
    if rc != 0 {
        return Err(Errno::last());
    }
    if buf.stx_mask & libc::STATX_MNT_ID == 0 {
        // Kernels before 5.8 have no mount ids: treat everything as a possible mount.
        return Err(Errno::ENOSYS);
    }
    let attr_known = buf.stx_attributes_mask & libc::STATX_ATTR_MOUNT_ROOT as u64 != 0;
    Ok(Entry {
        is_dir: u32::from(buf.stx_mode) & libc::S_IFMT == libc::S_IFDIR,
        mount_id: buf.stx_mnt_id,
        mount_root: attr_known && buf.stx_attributes & libc::STATX_ATTR_MOUNT_ROOT as u64 != 0,
    })
}

/// Removes `path` — a file, a symlink (not its target) or a directory with everything in
/// it — without following symlinks and without entering any mount point. A mount point
/// found anywhere (including `path` itself) is left in place with its parents, and
/// reported; every other entry is still removed. A `path` that does not exist is fine.
pub fn remove_tree(path: &Path) -> Result<(), RemoveError> {
    let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(io(path, Errno::EINVAL));
    };
    let parent_dir = nix::fcntl::open(
        if parent.as_os_str().is_empty() {
            Path::new(".")
        } else {
            parent
        },
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    );
    let parent_dir = match parent_dir {
        Ok(fd) => fd,
        Err(Errno::ENOENT) => return Ok(()),
        Err(e) => return Err(io(parent, e)),
    };
    let parent_mount = stat_at(parent_dir.as_fd(), c"")
        .map_err(|e| io(parent, e))?
        .mount_id;
    remove_entry(parent_dir.as_fd(), parent_mount, name, path, 0)
}

fn cstring(name: &OsStr, path: &Path) -> Result<CString, RemoveError> {
    CString::new(name.as_bytes()).map_err(|_| io(path, Errno::EINVAL))
}

/// Removes entry `name` of `dir` (which is on mount `mount`); `path` is for messages.
fn remove_entry(
    dir: BorrowedFd<'_>,
    mount: u64,
    name: &OsStr,
    path: &Path,
    depth: usize,
) -> Result<(), RemoveError> {
    let c_name = cstring(name, path)?;
    let entry = match stat_at(dir, &c_name) {
        Ok(entry) => entry,
        Err(Errno::ENOENT) => return Ok(()),
        Err(e) => return Err(io(path, e)),
    };
    if entry.mount_id != mount || entry.mount_root {
        return Err(RemoveError::MountPoint {
            path: path.to_path_buf(),
        });
    }
    if !entry.is_dir {
        return match unlinkat(dir, c_name.as_c_str(), UnlinkatFlags::NoRemoveDir) {
            Ok(()) | Err(Errno::ENOENT) => Ok(()),
            Err(e) => Err(io(path, e)),
        };
    }
    if depth >= MAX_DEPTH {
        return Err(RemoveError::TooDeep {
            path: path.to_path_buf(),
        });
    }
    let child = openat(
        dir,
        c_name.as_c_str(),
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    );
    let child = match child {
        Ok(fd) => fd,
        // Removed meanwhile (another cleanup of the same tree): nothing left to do.
        Err(Errno::ENOENT) => return Ok(()),
        Err(e) => return Err(io(path, e)),
    };
    // The entry may have been swapped for a mount between the stat and the open.
    let opened = stat_at(child.as_fd(), c"").map_err(|e| io(path, e))?;
    if opened.mount_id != mount || opened.mount_root {
        return Err(RemoveError::MountPoint {
            path: path.to_path_buf(),
        });
    }
    let children_result = remove_children(child, mount, path, depth);
    let removed = match unlinkat(dir, c_name.as_c_str(), UnlinkatFlags::RemoveDir) {
        Ok(()) | Err(Errno::ENOENT) => Ok(()),
        Err(e) => Err(io(path, e)),
    };
    children_result.and(removed)
}

/// Removes everything inside the open directory `dir`; the first failure is returned
/// after every other entry has been tried.
fn remove_children(dir: OwnedFd, mount: u64, path: &Path, depth: usize) -> Result<(), RemoveError> {
    let listing = nix::unistd::dup(&dir).map_err(|e| io(path, e))?;
    let mut listing = nix::dir::Dir::from_fd(listing).map_err(|e| io(path, e))?;
    let mut names = Vec::new();
    for entry in listing.iter() {
        let entry = entry.map_err(|e| io(path, e))?;
        let name = entry.file_name().to_bytes();
        if name != b"." && name != b".." {
            names.push(OsStr::from_bytes(name).to_os_string());
        }
    }
    let mut first_error = None;
    for name in names {
        let child_path = path.join(&name);
        if let Err(e) = remove_entry(dir.as_fd(), mount, &name, &child_path, depth + 1) {
            first_error.get_or_insert(e);
        }
    }
    first_error.map_or(Ok(()), Err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::mount::{MsFlags, mount};

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("safe-fs-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn removes_files_dirs_and_symlinks_but_not_their_targets() {
        let dir = scratch("plain");
        let outside = scratch("plain-outside");
        std::fs::write(outside.join("keep"), "host data").unwrap();
        let tree = dir.join("tree");
        std::fs::create_dir_all(tree.join("a/b/c")).unwrap();
        std::fs::write(tree.join("a/b/file"), "x").unwrap();
        std::os::unix::fs::symlink(&outside, tree.join("a/link-to-dir")).unwrap();
        std::os::unix::fs::symlink(outside.join("keep"), tree.join("link-to-file")).unwrap();
        remove_tree(&tree).unwrap();
        assert!(!tree.exists());
        assert_eq!(
            std::fs::read_to_string(outside.join("keep")).unwrap(),
            "host data"
        );
        // Missing paths are fine; a symlink given as the root is removed, not followed.
        remove_tree(&tree).unwrap();
        std::os::unix::fs::symlink(&outside, dir.join("root-link")).unwrap();
        remove_tree(&dir.join("root-link")).unwrap();
        assert!(outside.join("keep").exists());
        std::fs::remove_dir_all(dir).unwrap();
        std::fs::remove_dir_all(outside).unwrap();
    }

    #[test]
    fn too_deep_trees_are_refused() {
        let dir = scratch("deep");
        let mut deep = dir.join("t");
        for _ in 0..=MAX_DEPTH {
            deep.push("d");
        }
        std::fs::create_dir_all(&deep).unwrap();
        let err = remove_tree(&dir.join("t")).unwrap_err();
        assert!(matches!(err, RemoveError::TooDeep { .. }), "{err}");
        std::fs::remove_dir_all(dir).unwrap();
    }

    /// Root: binds a host directory and a host file inside the tree (in a private mount
    /// namespace of this test's thread) and checks that nothing is deleted through them.
    #[test]
    fn never_deletes_through_a_bind_mount_root() {
        if !nix::unistd::geteuid().is_root() {
            assert!(
                std::env::var("KATA_TEST_REQUIRE_KVM").as_deref() != Ok("1"),
                "this test needs root"
            );
            eprintln!("SKIPPED never_deletes_through_a_bind_mount_root: needs root");
            return;
        }
        std::thread::spawn(|| {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS).unwrap();
            mount(
                None::<&str>,
                "/",
                None::<&str>,
                MsFlags::MS_REC | MsFlags::MS_PRIVATE,
                None::<&str>,
            )
            .unwrap();
            let dir = scratch("bind");
            let volume = scratch("bind-volume");
            std::fs::write(volume.join("keep"), "host data").unwrap();
            let tree = dir.join("tree");
            std::fs::create_dir_all(tree.join("vol")).unwrap();
            std::fs::write(tree.join("file-target"), "").unwrap();
            std::fs::write(tree.join("other"), "").unwrap();
            let bind = MsFlags::MS_BIND;
            mount(
                Some(&volume),
                &tree.join("vol"),
                None::<&str>,
                bind,
                None::<&str>,
            )
            .unwrap();
            mount(
                Some(&volume.join("keep")),
                &tree.join("file-target"),
                None::<&str>,
                bind,
                None::<&str>,
            )
            .unwrap();
            let err = remove_tree(&tree).unwrap_err();
            assert!(matches!(err, RemoveError::MountPoint { .. }), "{err}");
            assert!(!tree.join("other").exists(), "the rest is still removed");
            assert_eq!(
                std::fs::read_to_string(volume.join("keep")).unwrap(),
                "host data"
            );
            // The tree itself a mount point: refused as a whole.
            let err = remove_tree(&tree.join("vol")).unwrap_err();
            assert!(matches!(err, RemoveError::MountPoint { .. }), "{err}");
            // Once unmounted, it goes.
            crate::unmount_and_remove(&tree).unwrap();
            assert!(!tree.exists());
            assert!(volume.join("keep").exists());
            std::fs::remove_dir_all(dir).unwrap();
            std::fs::remove_dir_all(volume).unwrap();
        })
        .join()
        .unwrap();
    }
}
