//! Filesystem cleanup that cannot lose host data.
//!
//! Sandboxes bind host paths (volumes, container root filesystems) into directories that
//! are later removed. A recursive delete that walks into such a bind deletes the host's
//! files, so every cleanup in kata-rv goes through this crate:
//! - [`mountinfo`] lists mount points (with the kernel's octal escapes undone);
//! - [`unmount_below`] detaches every mount at or below a directory, deepest first;
//! - [`remove_tree`] deletes a tree through directory file descriptors, never following a
//!   symlink and refusing to enter any mount point it meets.

pub mod mountinfo;
mod remove;

pub use mountinfo::{MountPoint, mount_points};
pub use remove::{RemoveError, remove_tree};

use std::path::Path;

/// Detaches (`MNT_DETACH`) every mount at or below `dir`, deepest first, and returns the
/// mount points that could not be detached.
pub fn unmount_below(dir: &Path) -> Vec<(std::path::PathBuf, nix::errno::Errno)> {
    let Ok(points) = mount_points() else {
        return Vec::new();
    };
    let mut below: Vec<_> = points
        .into_iter()
        .map(|m| m.path)
        .filter(|p| p.starts_with(dir))
        .collect();
    below.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    below.dedup();
    let mut failed = Vec::new();
    for point in below {
        match nix::mount::umount2(&point, nix::mount::MntFlags::MNT_DETACH) {
            Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => {}
            Err(e) => failed.push((point, e)),
        }
    }
    failed
}

/// [`unmount_below`] then [`remove_tree`]: what a sandbox's cleanup does with a directory
/// that may hold binds of host data. A mount that survives the unmount is left in place
/// (with its parents) and reported.
pub fn unmount_and_remove(dir: &Path) -> Result<(), RemoveError> {
    unmount_below(dir);
    remove_tree(dir)
}
