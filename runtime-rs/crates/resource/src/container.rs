//! One container's host side: containerd's rootfs mounted at `<bundle>/rootfs`, bound
//! into the share with the container's volumes.

use std::path::{Path, PathBuf};

use nix::mount::MntFlags;

use crate::{ResourceError, SandboxPaths};

/// One of containerd's rootfs mounts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RootfsMount {
    /// Filesystem type (`overlay`, `bind`, …).
    pub fstype: String,
    /// Source.
    pub source: String,
    /// Options.
    pub options: Vec<String>,
}

/// A host path bound into the share for the guest to see.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShareBind {
    /// The host source.
    pub source: PathBuf,
    /// Its name inside the share.
    pub name: String,
    /// Bind read-only.
    pub readonly: bool,
}

/// What [`add`] did, for [`remove`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ContainerResources {
    /// containerd's bundle.
    pub bundle: PathBuf,
    /// Whether the rootfs was mounted here (not already populated).
    pub mounted_rootfs: bool,
    /// Entries of the share's host side to unmount and remove.
    pub share_entries: Vec<PathBuf>,
}

/// Mounts containerd's rootfs at `<bundle>/rootfs` (nothing to do when the bundle's
/// rootfs is already populated and no mounts are given); true if it mounted.
fn mount_rootfs(bundle: &Path, mounts: &[RootfsMount]) -> Result<bool, ResourceError> {
    let target = bundle.join("rootfs");
    std::fs::create_dir_all(&target).map_err(|source| ResourceError::Create {
        path: target.clone(),
        source,
    })?;
    let m = match mounts {
        [] => return Ok(false),
        [m] => m,
        _ => {
            return Err(ResourceError::Invalid(format!(
                "{} rootfs mounts given; only one (overlay or bind) is supported",
                mounts.len()
            )));
        }
    };
    containerd_shim::mount::mount_rootfs(
        Some(m.fstype.as_str()).filter(|t| !t.is_empty()),
        Some(m.source.as_str()).filter(|s| !s.is_empty()),
        &m.options,
        &target,
    )
    .map_err(|e| {
        ResourceError::Invalid(format!(
            "mounting the rootfs ({} {}) on {}: {e}",
            m.fstype,
            m.source,
            target.display()
        ))
    })?;
    Ok(true)
}

/// Unmounts `<bundle>/rootfs` (what containerd's rootfs mount left there).
pub fn unmount_rootfs(bundle: &Path) {
    let _ = nix::mount::umount2(&bundle.join("rootfs"), MntFlags::MNT_DETACH);
}

/// Mounts the rootfs, binds it and `binds` into the share; on failure undoes it all.
pub fn add(
    paths: &SandboxPaths,
    id: &str,
    bundle: &Path,
    rootfs: &[RootfsMount],
    binds: &[ShareBind],
) -> Result<ContainerResources, ResourceError> {
    let mut added = ContainerResources {
        bundle: bundle.to_path_buf(),
        mounted_rootfs: mount_rootfs(bundle, rootfs)?,
        share_entries: Vec::new(),
    };
    let shared = (|| {
        added.share_entries.push(paths.share.mounts.join(id));
        paths
            .share
            .bind(&bundle.join("rootfs"), &Path::new(id).join("rootfs"), false)?;
        for b in binds {
            added.share_entries.push(paths.share.mounts.join(&b.name));
            paths
                .share
                .bind(&b.source, Path::new(&b.name), b.readonly)?;
        }
        Ok(())
    })();
    match shared {
        Ok(()) => Ok(added),
        Err(e) => {
            let _ = remove(&added);
            Err(e)
        }
    }
}

/// Undoes [`add`]: unmounts and removes each share entry (never deleting through a mount
/// that could not be detached) and the rootfs mount.
pub fn remove(added: &ContainerResources) -> Result<(), ResourceError> {
    let mut first_error = None;
    for entry in added.share_entries.iter().rev() {
        if let Err(e) = safe_fs::unmount_and_remove(entry) {
            first_error.get_or_insert(e);
        }
    }
    if added.mounted_rootfs {
        unmount_rootfs(&added.bundle);
    }
    first_error.map_or(Ok(()), |e| Err(e.into()))
}
