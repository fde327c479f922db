//! The sandbox's share, in Kata's layout: the shim binds container root filesystems and
//! volumes into a host-only `mounts/`, and the guest sees it only through `shared/`, a
//! read-only, slave bind of `mounts/`. The guest can write inside a rootfs or a read-write
//! volume, but never the share root: it cannot fill the host's /run there, or plant a
//! symlink where the shim creates its next target.

use std::path::{Path, PathBuf};

use nix::mount::{MsFlags, mount};

use crate::ResourceError;

/// The directories of one sandbox's share.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShareDirs {
    /// `/run/kata-containers/shared/sandboxes/<sid>`: holds the two below.
    pub root: PathBuf,
    /// Host-only: where the shim binds.
    pub mounts: PathBuf,
    /// What virtio-fs exports: `mounts/`, read-only, receiving its binds.
    pub shared: PathBuf,
}

fn mount_err(what: &'static str, path: &Path, source: nix::errno::Errno) -> ResourceError {
    ResourceError::Mount {
        what,
        path: path.to_path_buf(),
        source,
    }
}

fn create_err(path: &Path, source: std::io::Error) -> ResourceError {
    ResourceError::Create {
        path: path.to_path_buf(),
        source,
    }
}

impl ShareDirs {
    /// The share below `root`.
    pub fn new(root: PathBuf) -> Self {
        Self {
            mounts: root.join("mounts"),
            shared: root.join("shared"),
            root,
        }
    }

    /// Creates both directories and the mounts that tie them: `mounts/` becomes a shared
    /// mount of its own, `shared/` a read-only slave bind of it.
    pub fn create(&self) -> Result<(), ResourceError> {
        for dir in [&self.mounts, &self.shared] {
            std::fs::create_dir_all(dir).map_err(|e| create_err(dir, e))?;
        }
        let none = None::<&str>;
        mount(
            Some(&self.mounts),
            &self.mounts,
            none,
            MsFlags::MS_BIND,
            none,
        )
        .map_err(|e| mount_err("binding", &self.mounts, e))?;
        mount(none, &self.mounts, none, MsFlags::MS_SHARED, none)
            .map_err(|e| mount_err("making shared", &self.mounts, e))?;
        mount(
            Some(&self.mounts),
            &self.shared,
            none,
            MsFlags::MS_BIND,
            none,
        )
        .map_err(|e| mount_err("binding", &self.shared, e))?;
        mount(none, &self.shared, none, MsFlags::MS_SLAVE, none)
            .map_err(|e| mount_err("making slave", &self.shared, e))?;
        remount_readonly(&self.shared)
    }

    /// Binds `source` at `mounts/<name>` (seen by the guest as `<name>` in the share), a
    /// directory or a file; read-only in both places when asked.
    pub fn bind(
        &self,
        source: &Path,
        name: &Path,
        readonly: bool,
    ) -> Result<PathBuf, ResourceError> {
        if name.is_absolute()
            || name
                .components()
                .any(|c| !matches!(c, std::path::Component::Normal(_)))
        {
            return Err(ResourceError::Invalid(format!(
                "share entry '{}' must be a relative path without '..'",
                name.display()
            )));
        }
        let target = self.mounts.join(name);
        if source.is_dir() {
            std::fs::create_dir_all(&target)
        } else {
            std::fs::create_dir_all(target.parent().unwrap_or(&self.mounts))
                .and_then(|()| std::fs::File::create(&target).map(drop))
        }
        .map_err(|e| create_err(&target, e))?;
        let none = None::<&str>;
        mount(
            Some(source),
            &target,
            none,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            none,
        )
        .map_err(|e| mount_err("binding into the share", source, e))?;
        if readonly {
            // A remount does not propagate: the guest's copy is made read-only too.
            remount_readonly(&target)?;
            remount_readonly(&self.shared.join(name))?;
        }
        Ok(target)
    }
}

fn remount_readonly(path: &Path) -> Result<(), ResourceError> {
    let flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
    mount(None::<&str>, path, None::<&str>, flags, None::<&str>)
        .map_err(|e| mount_err("making read-only", path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Root: the layout in a private mount namespace of this test's thread.
    #[test]
    fn the_guest_side_is_read_only_except_inside_read_write_binds() {
        if !nix::unistd::geteuid().is_root() {
            assert!(
                std::env::var("KATA_TEST_REQUIRE_KVM").as_deref() != Ok("1"),
                "this test needs root"
            );
            eprintln!(
                "SKIPPED the_guest_side_is_read_only_except_inside_read_write_binds: needs root"
            );
            return;
        }
        std::thread::spawn(|| {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS).unwrap();
            let none = None::<&str>;
            mount(none, "/", none, MsFlags::MS_REC | MsFlags::MS_PRIVATE, none).unwrap();
            let base = std::env::temp_dir().join(format!("shim-share-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&base);
            let (rootfs, volume, ro_volume) =
                (base.join("rootfs"), base.join("vol"), base.join("ro-vol"));
            for d in [&rootfs, &volume, &ro_volume] {
                std::fs::create_dir_all(d).unwrap();
            }
            std::fs::write(ro_volume.join("keep"), "host data").unwrap();
            let dirs = ShareDirs::new(base.join("sandbox"));
            dirs.create().unwrap();
            dirs.bind(&rootfs, Path::new("c1/rootfs"), false).unwrap();
            dirs.bind(&volume, Path::new("c1-mount-0-vol"), false)
                .unwrap();
            dirs.bind(&ro_volume, Path::new("c1-mount-1-ro"), true)
                .unwrap();
            let erofs = |p: PathBuf| {
                let err = std::fs::write(&p, "x").unwrap_err();
                assert_eq!(err.raw_os_error(), Some(libc::EROFS), "{}", p.display());
            };
            // The share root and a container's directory: read-only for the guest.
            erofs(dirs.shared.join("planted"));
            erofs(dirs.shared.join("c1/planted"));
            assert!(std::os::unix::fs::symlink("/etc", dirs.shared.join("c1/evil")).is_err());
            // Read-only volumes stay read-only; read-write binds are writable.
            erofs(dirs.shared.join("c1-mount-1-ro/keep"));
            std::fs::write(dirs.shared.join("c1/rootfs/file"), "x").unwrap();
            std::fs::write(dirs.shared.join("c1-mount-0-vol/file"), "x").unwrap();
            assert!(rootfs.join("file").exists() && volume.join("file").exists());
            // The host side is writable.
            std::fs::write(dirs.mounts.join("host-side"), "x").unwrap();
            assert!(dirs.bind(&rootfs, Path::new("../escape"), false).is_err());
            safe_fs::unmount_and_remove(&dirs.root).unwrap();
            assert!(!dirs.root.exists());
            assert_eq!(
                std::fs::read_to_string(ro_volume.join("keep")).unwrap(),
                "host data"
            );
            std::fs::remove_dir_all(&base).unwrap();
        })
        .join()
        .unwrap();
    }
}
