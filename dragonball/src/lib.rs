//! Dragonball: a microVM monitor that runs inside its caller's process (the Kata shim).
//!
//! The caller starts the VMM on its own `vmm_master` thread with [`start_vmm_thread`] and
//! drives it through [`VmmClient::request`]: one [`VmmAction`] at a time, each answered
//! synchronously. The guest runs on one thread per vCPU. Architecture-specific code
//! lives behind [`arch`].

pub mod api;
pub mod arch;
pub mod config;
pub mod console;
pub mod device_manager;
pub mod seccomp;
pub mod sparse_image;
pub mod vcpu;
pub mod vm;
pub mod vmm;

pub use api::{InstanceState, VmmAction, VmmActionError, VmmData};
pub use config::{
    BlockDeviceConfigInfo, BootSourceConfig, ConsoleConfig, FsBackend, FsDeviceConfigInfo,
    NetworkInterfaceConfig, VmConfigInfo, VsockDeviceConfigInfo,
};
pub use vmm::{VmmClient, start_vmm_thread};
