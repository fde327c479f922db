//! The runtime's hypervisor seam: [`Hypervisor`] starts and stops one sandbox VM; the
//! [`dragonball`] module drives the in-process Dragonball VMM behind it.

pub mod dragonball;

use std::path::PathBuf;

use async_trait::async_trait;

pub use crate::dragonball::Dragonball;

/// How the guest's shared filesystem (`kataShared`) is served.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SharedFs {
    /// Inside the VMM, exporting this host directory.
    Inline(PathBuf),
    /// By a vhost-user daemon (virtiofsd) listening on this socket.
    VhostUser(PathBuf),
}

/// A virtio-net interface on a host tap.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetInterface {
    /// The tap the VMM opens (in [`VmSpec::netns`]).
    pub tap: String,
    /// The guest interface's MAC.
    pub mac: String,
}

/// Everything a sandbox VM is made of.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VmSpec {
    /// vCPUs.
    pub vcpus: u8,
    /// Guest RAM, MiB.
    pub memory_mib: u32,
    /// Guest kernel.
    pub kernel: PathBuf,
    /// Guest initrd (the agent as /init).
    pub initrd: PathBuf,
    /// Kernel parameters beyond the machine's own (configuration + agent settings).
    pub kernel_params: String,
    /// Where the guest console goes.
    pub console: PathBuf,
    /// The hybrid vsock unix socket the host reaches the agent through.
    pub vsock_uds: PathBuf,
    /// The shared filesystem.
    pub shared_fs: SharedFs,
    /// The network namespace the VMM runs in (the pod's), if any: its taps are there.
    pub netns: Option<PathBuf>,
    /// Network interfaces.
    pub nets: Vec<NetInterface>,
    /// Confine the VMM's vCPU and event-loop threads with seccomp.
    pub seccomp: bool,
    /// Back guest RAM with transparent huge pages where the host has them.
    pub transparent_huge_pages: bool,
}

/// Why a VM did not start.
#[derive(Debug, thiserror::Error)]
pub enum HypervisorError {
    /// The VMM thread could not be started.
    #[error("starting Dragonball: {0}")]
    Spawn(#[source] std::io::Error),
    /// The VMM refused a configuration step or the start.
    #[error("Dragonball: {0}")]
    Vmm(#[source] ::dragonball::VmmActionError),
    /// A VM is already running.
    #[error("the sandbox VM is already running")]
    AlreadyRunning,
    /// The pod's network namespace could not be entered.
    #[error("entering the network namespace {netns}: {source}")]
    Netns {
        /// The namespace.
        netns: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The blocking task driving the VMM was lost.
    #[error("the VMM start task failed: {0}")]
    Task(String),
}

/// How a VM ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VmExit {
    /// The VMM thread returned this status.
    Exited(i32),
    /// It did not finish within the shutdown bound and was abandoned.
    Abandoned,
    /// No VM was running.
    NotRunning,
}

/// One sandbox VM.
#[async_trait]
pub trait Hypervisor: Send + Sync {
    /// Builds and boots the VM.
    async fn start(&self, spec: VmSpec) -> Result<(), HypervisorError>;
    /// Stops it; never waits longer than the driver's shutdown bound.
    async fn stop(&self) -> VmExit;
    /// Whether the VM has already ended by itself (the guest powered off or panicked, a
    /// backend such as virtiofsd died): then nothing in it can answer any more.
    fn has_exited(&self) -> bool;
    /// The last `lines` lines of the guest console.
    fn console_tail(&self, lines: usize) -> String;
}
