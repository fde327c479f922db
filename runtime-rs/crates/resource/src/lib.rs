//! Everything a sandbox does to the host, each with its undo: its directories
//! ([`paths`]), the share in Kata's layout ([`share`]), virtiofsd ([`virtiofsd`]) and each
//! container's rootfs mount and binds into the share ([`container`]), the pod network's tc
//! redirect between the CNI veth and the VMM's tap ([`network`]). [`HostResources`]
//! is the seam the lifecycle uses, so it can be tested without root.

pub mod cgroup;
pub mod container;
pub mod network;
pub mod paths;
pub mod share;
pub mod virtiofsd;

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use async_trait::async_trait;
use slog::Logger;

pub use cgroup::{CgroupError, CgroupPath, CgroupRequest};
pub use container::{ContainerResources, RootfsMount, ShareBind};
pub use network::{NetworkError, PodInterface, PodNetwork, PodRoute};
pub use paths::SandboxPaths;
pub use share::ShareDirs;
pub use virtiofsd::VirtiofsdConfig;

/// A host side effect that failed.
#[derive(Debug, thiserror::Error)]
pub enum ResourceError {
    /// Creating a file or directory.
    #[error("creating {path}: {source}")]
    Create {
        /// What.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A mount system call.
    #[error("{what} {path}: {source}")]
    Mount {
        /// The operation.
        what: &'static str,
        /// On what.
        path: PathBuf,
        /// Why.
        #[source]
        source: nix::errno::Errno,
    },
    /// Input that cannot be honoured.
    #[error("{0}")]
    Invalid(String),
    /// virtiofsd could not be started or died before serving.
    #[error("{0}")]
    Virtiofsd(String),
    /// Removing what was created.
    #[error(transparent)]
    Remove(#[from] safe_fs::RemoveError),
    /// The pod network.
    #[error(transparent)]
    Network(#[from] NetworkError),
    /// The sandbox's host cgroup.
    #[error(transparent)]
    Cgroup(#[from] CgroupError),
}

/// The host operations of a sandbox's lifecycle.
#[async_trait]
pub trait HostResources: Send + Sync {
    /// Creates sandbox `sid`'s directories and share, moves this process into its host
    /// cgroup when given one (so the VMM and virtiofsd run there too), and starts
    /// virtiofsd on the share when given one; on failure nothing is left.
    async fn create_sandbox(
        &self,
        sid: &str,
        cgroup: Option<&CgroupRequest>,
        virtiofsd: Option<&VirtiofsdConfig>,
        log: &Logger,
    ) -> Result<SandboxPaths, ResourceError>;
    /// Stops sandbox `sid`'s virtiofsd, leaves and removes its cgroup and removes its
    /// mounts and directories (also what a dead shim left behind).
    async fn remove_sandbox(&self, sid: &str, log: &Logger);
    /// Mounts container `id`'s rootfs at `<bundle>/rootfs` and binds it and its volumes
    /// into the share; on failure nothing is left.
    fn add_container(
        &self,
        paths: &SandboxPaths,
        id: &str,
        bundle: &Path,
        rootfs: &[RootfsMount],
        binds: &[ShareBind],
    ) -> Result<ContainerResources, ResourceError>;
    /// Undoes [`HostResources::add_container`].
    fn remove_container(&self, container: &ContainerResources) -> Result<(), ResourceError>;
    /// Why the sandbox's virtiofsd stopped serving, if it had one and it has exited (a VM
    /// that failed to start may have failed for that).
    async fn virtiofsd_exit(&self) -> Option<String> {
        None
    }

    /// Reads the pod network CNI prepared in `netns`; None when it holds nothing but
    /// loopback.
    async fn scan_network(&self, netns: &Path) -> Result<Option<PodNetwork>, ResourceError>;
    /// Joins the VMM's tap to the pod interface (the VM has opened the tap).
    async fn connect_network(&self, network: &PodNetwork) -> Result<(), ResourceError>;
    /// Undoes [`HostResources::connect_network`]; failures are logged.
    async fn disconnect_network(&self, network: &PodNetwork, log: &Logger);
}

/// The real host: mounts, directories and processes.
#[derive(Default)]
pub struct Host {
    virtiofsd: tokio::sync::Mutex<Option<virtiofsd::Virtiofsd>>,
    cgroup: Mutex<Option<cgroup::SandboxCgroup>>,
}

impl Host {
    /// The host of one shim.
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl HostResources for Host {
    async fn create_sandbox(
        &self,
        sid: &str,
        cgroup: Option<&CgroupRequest>,
        virtiofsd: Option<&VirtiofsdConfig>,
        log: &Logger,
    ) -> Result<SandboxPaths, ResourceError> {
        let paths = SandboxPaths::new(sid);
        let created = async {
            std::fs::create_dir_all(&paths.run_dir).map_err(|source| ResourceError::Create {
                path: paths.run_dir.clone(),
                source,
            })?;
            paths.share.create()?;
            if let Some(request) = cgroup {
                let entered = cgroup::enter(request)?;
                *self.cgroup.lock().unwrap_or_else(|e| e.into_inner()) = Some(entered);
                // Recorded once it is ours, so `delete` removes it after a crash.
                let record = cgroup::record_file(&paths.run_dir);
                std::fs::write(&record, request.path.as_str()).map_err(|source| {
                    ResourceError::Create {
                        path: record,
                        source,
                    }
                })?;
            }
            if let Some(config) = virtiofsd {
                *self.virtiofsd.lock().await = Some(virtiofsd::start(config, &paths, log)?);
            }
            Ok(())
        }
        .await;
        if let Err(e) = created {
            self.remove_sandbox(sid, log).await;
            return Err(e);
        }
        Ok(paths)
    }

    async fn remove_sandbox(&self, sid: &str, log: &Logger) {
        let daemon = self.virtiofsd.lock().await.take();
        if let Some(mut daemon) = daemon {
            daemon.kill().await;
        }
        let entered = self.cgroup.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(entered) = entered {
            let path = entered.path().clone();
            if let Err(e) = entered.leave(cgroup::LEAVE_GRACE) {
                slog::warn!(log, "the sandbox cgroup was not removed"; "cgroup" => path.as_str(), "error" => %e);
            }
        }
        paths::remove_leftovers(sid, Some(log));
    }

    fn add_container(
        &self,
        paths: &SandboxPaths,
        id: &str,
        bundle: &Path,
        rootfs: &[RootfsMount],
        binds: &[ShareBind],
    ) -> Result<ContainerResources, ResourceError> {
        container::add(paths, id, bundle, rootfs, binds)
    }

    fn remove_container(&self, container: &ContainerResources) -> Result<(), ResourceError> {
        container::remove(container)
    }

    async fn virtiofsd_exit(&self) -> Option<String> {
        match self.virtiofsd.lock().await.as_mut() {
            Some(daemon) => daemon.exit_report().await,
            None => None,
        }
    }

    async fn scan_network(&self, netns: &Path) -> Result<Option<PodNetwork>, ResourceError> {
        Ok(network::scan(netns).await?)
    }

    async fn connect_network(&self, network: &PodNetwork) -> Result<(), ResourceError> {
        Ok(network::connect(network).await?)
    }

    async fn disconnect_network(&self, network: &PodNetwork, log: &Logger) {
        if let Err(e) = network::disconnect(&network.netns, &network.interface.name).await {
            slog::warn!(log, "the pod network was not fully disconnected"; "error" => %e);
        }
    }
}
