//! Sandbox storages: the virtio-fs share, tmpfs (ephemeral) and local directories,
//! reference-counted by mount point.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use kata_agent_protocols::agent::Storage;
use nix::mount::{MntFlags, MsFlags};

use crate::error::{AgentError, AgentResult};
use crate::mount_options;

/// The drivers this agent handles.
pub const DRIVERS: [&str; 3] = ["virtio-fs", "ephemeral", "local"];

/// Mounted storages and how many users each has.
#[derive(Default)]
pub struct Storages {
    mounted: HashMap<PathBuf, (usize, bool)>,
}

fn check_mount_point(storage: &Storage) -> AgentResult<PathBuf> {
    let point = Path::new(&storage.mount_point);
    if !point.is_absolute()
        || storage.mount_point.contains("/../")
        || storage.mount_point.ends_with("/..")
    {
        return Err(AgentError::invalid(format!(
            "storage mount_point '{}' must be an absolute path without '..'",
            storage.mount_point
        )));
    }
    Ok(point.to_path_buf())
}

impl Storages {
    /// Mounts `storage` (or takes another reference to it); returns its mount point.
    pub fn add(&mut self, storage: &Storage) -> AgentResult<PathBuf> {
        let point = check_mount_point(storage)?;
        if let Some((users, _)) = self.mounted.get_mut(&point) {
            *users += 1;
            return Ok(point);
        }
        let parsed = mount_options::parse(&storage.options);
        let mounted = match storage.driver.as_str() {
            "virtio-fs" | "ephemeral" => {
                let fstype = match (storage.driver.as_str(), storage.fstype.as_str()) {
                    ("virtio-fs", "" | "virtiofs") => "virtiofs",
                    ("ephemeral", "" | "tmpfs") => "tmpfs",
                    (driver, other) => {
                        return Err(AgentError::invalid(format!(
                            "storage '{}': fstype '{other}' does not fit driver '{driver}'",
                            storage.mount_point
                        )));
                    }
                };
                std::fs::create_dir_all(&point).map_err(|e| {
                    AgentError::internal(format!("creating mount point {}: {e}", point.display()))
                })?;
                nix::mount::mount(
                    Some(storage.source.as_str()),
                    &point,
                    Some(fstype),
                    parsed.flags,
                    (!parsed.data.is_empty()).then_some(parsed.data.as_str()),
                )
                .map_err(|e| {
                    AgentError::internal(format!(
                        "mounting {} '{}' on {}: {e}",
                        fstype,
                        storage.source,
                        point.display()
                    ))
                })?;
                true
            }
            "local" => {
                std::fs::create_dir_all(&point).map_err(|e| {
                    AgentError::internal(format!("creating local storage {}: {e}", point.display()))
                })?;
                false
            }
            other => {
                return Err(AgentError::invalid(format!(
                    "storage '{}': driver '{other}' is not supported (supported: {})",
                    storage.mount_point,
                    DRIVERS.join(", ")
                )));
            }
        };
        self.mounted.insert(point.clone(), (1, mounted));
        Ok(point)
    }

    /// Drops one reference; the last one unmounts.
    pub fn release(&mut self, point: &Path) {
        let Some((users, mounted)) = self.mounted.get_mut(point) else {
            return;
        };
        *users -= 1;
        if *users == 0 {
            if *mounted {
                let _ = nix::mount::umount2(point, MntFlags::MNT_DETACH);
            }
            self.mounted.remove(point);
        }
    }

    /// Unmounts everything.
    pub fn release_all(&mut self) {
        let points: Vec<PathBuf> = self.mounted.keys().cloned().collect();
        for point in points {
            if let Some((_, true)) = self.mounted.remove(&point) {
                let _ = nix::mount::umount2(&point, MntFlags::MNT_DETACH);
            }
        }
    }
}

/// Flags used when binding a container rootfs into its bundle.
pub const ROOTFS_BIND: MsFlags = MsFlags::MS_BIND.union(MsFlags::MS_REC);

#[cfg(test)]
mod tests {
    use super::*;

    fn storage(driver: &str, point: &str) -> Storage {
        let mut s = Storage::new();
        s.driver = driver.into();
        s.mount_point = point.into();
        s
    }

    #[test]
    fn local_storage_is_a_directory_with_references() {
        let dir = std::env::temp_dir().join(format!("agent-storage-{}", std::process::id()));
        let point = dir.join("local");
        let mut storages = Storages::default();
        storages
            .add(&storage("local", point.to_str().unwrap()))
            .unwrap();
        storages
            .add(&storage("local", point.to_str().unwrap()))
            .unwrap();
        assert!(point.is_dir());
        storages.release(&point);
        assert!(storages.mounted.contains_key(&point));
        storages.release(&point);
        assert!(storages.mounted.is_empty());
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn bad_storages_are_named() {
        let mut storages = Storages::default();
        let err = storages.add(&storage("nvdimm", "/mnt/x")).unwrap_err();
        assert!(
            err.message.contains("driver 'nvdimm' is not supported"),
            "{err}"
        );
        let err = storages.add(&storage("local", "relative")).unwrap_err();
        assert!(err.message.contains("mount_point 'relative'"), "{err}");
        let mut fs = storage("virtio-fs", "/mnt/y");
        fs.fstype = "ext4".into();
        let err = storages.add(&fs).unwrap_err();
        assert!(err.message.contains("fstype 'ext4'"), "{err}");
    }
}
