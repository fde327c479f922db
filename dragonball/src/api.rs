//! The VMM API: actions, their answers and errors.

use crate::config::{
    BlockDeviceConfigInfo, BootSourceConfig, FsDeviceConfigInfo, NetworkInterfaceConfig,
    VmConfigInfo, VsockDeviceConfigInfo,
};

/// A request to the VMM.
#[derive(Debug, Clone)]
pub enum VmmAction {
    /// Sets vCPUs, memory and console (before start).
    SetVmConfiguration(VmConfigInfo),
    /// Sets kernel, initrd and command line (before start).
    ConfigureBootSource(BootSourceConfig),
    /// Adds a block device (before start).
    InsertBlockDevice(BlockDeviceConfigInfo),
    /// Adds a network interface (before start).
    InsertNetworkDevice(NetworkInterfaceConfig),
    /// Adds a virtio-fs device (before start).
    InsertFsDevice(FsDeviceConfigInfo),
    /// Adds the vsock device (before start).
    InsertVsockDevice(VsockDeviceConfigInfo),
    /// Creates and boots the VM.
    StartMicroVm,
    /// Stops the VM; the VMM thread ends after answering.
    ShutdownMicroVm,
    /// Pauses every vCPU.
    PauseMicroVm,
    /// Resumes paused vCPUs.
    ResumeMicroVm,
    /// Returns the machine configuration.
    GetVmConfiguration,
    /// Returns the instance state.
    GetInstanceState,
}

impl VmmAction {
    /// The action's name, for messages.
    pub fn name(&self) -> &'static str {
        match self {
            Self::SetVmConfiguration(_) => "SetVmConfiguration",
            Self::ConfigureBootSource(_) => "ConfigureBootSource",
            Self::InsertBlockDevice(_) => "InsertBlockDevice",
            Self::InsertNetworkDevice(_) => "InsertNetworkDevice",
            Self::InsertFsDevice(_) => "InsertFsDevice",
            Self::InsertVsockDevice(_) => "InsertVsockDevice",
            Self::StartMicroVm => "StartMicroVm",
            Self::ShutdownMicroVm => "ShutdownMicroVm",
            Self::PauseMicroVm => "PauseMicroVm",
            Self::ResumeMicroVm => "ResumeMicroVm",
            Self::GetVmConfiguration => "GetVmConfiguration",
            Self::GetInstanceState => "GetInstanceState",
        }
    }
}

/// Lifecycle of the VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InstanceState {
    /// Being configured; not started.
    Uninitialized,
    /// StartMicroVm in progress.
    Starting,
    /// vCPUs running.
    Running,
    /// vCPUs paused.
    Paused,
    /// Stopping.
    Halted,
    /// The guest or the API ended the VM, with this exit code.
    Exited(i32),
}

/// A successful answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VmmData {
    /// Nothing to return.
    Empty,
    /// The machine configuration.
    VmConfiguration(VmConfigInfo),
    /// The instance state.
    InstanceState(InstanceState),
}

/// Why an action failed.
#[derive(Debug, thiserror::Error)]
pub enum VmmActionError {
    /// The machine configuration is invalid.
    #[error("invalid VM configuration: {0}")]
    InvalidVmConfig(String),
    /// The boot source is invalid or unreadable.
    #[error("invalid boot source: {0}")]
    InvalidBootSource(String),
    /// A device configuration is invalid.
    #[error("invalid device configuration: {0}")]
    InvalidDevice(String),
    /// The action is only allowed before StartMicroVm.
    #[error("{0} is not allowed after the VM has started")]
    NotAllowedAfterStart(&'static str),
    /// The action needs a running (or paused) VM.
    #[error("{action} needs a running VM (state: {state:?})")]
    NotRunning {
        /// The action.
        action: &'static str,
        /// The current state.
        state: InstanceState,
    },
    /// Booting failed.
    #[error("starting the microVM: {0}")]
    StartMicroVm(#[source] crate::vm::StartError),
    /// Pausing or resuming failed.
    #[error(transparent)]
    PauseResume(#[from] crate::vcpu::PauseTimeout),
    /// The VMM thread is gone (the VM exited or the VMM crashed).
    #[error("the VMM is no longer running")]
    VmmGone,
    /// The VMM did not answer within the caller's bound; the client is unusable after.
    #[error("the VMM did not answer {action} within {after:?}")]
    Timeout {
        /// The action.
        action: &'static str,
        /// The bound.
        after: std::time::Duration,
    },
}
