//! x86_64 machine: not built yet (issue "Dragonball on x86_64"). Until then starting a VM
//! on x86_64 fails with a clear error; the API, config and tests compile here.

use std::sync::Arc;

use dbs_device::device_manager::IoManager;
use kvm_ioctls::{VcpuExit, VcpuFd};

use crate::vcpu::ExitInfo;
use crate::vm::{Machine, MachineInputs, StartError};

/// Lowest guest RAM a VM may have, in MiB.
pub const MIN_MEM_MIB: usize = 32;
/// Command line used when the boot source has none.
pub const DEFAULT_CMDLINE: &str = "console=ttyS0 reboot=k panic=1";

/// Per-vCPU state for exits handled in userspace.
pub struct VcpuState;

/// Per-VM arch state that must live as long as the VM.
pub struct ArchVm;

/// Guest RAM base address.
pub fn memory_base() -> u64 {
    0
}

/// Builds the machine.
pub fn create_machine(_inputs: MachineInputs<'_>) -> Result<Machine, StartError> {
    Err(StartError::Unsupported(
        "x86_64 guests are not supported yet (the riscv64 machine is); see the x86_64 issue".into(),
    ))
}

/// Maps a KVM system event to the VM's exit.
pub fn system_event(kind: u32, _data: &[u64]) -> ExitInfo {
    ExitInfo {
        code: 0,
        reason: format!("system event {kind}"),
    }
}

/// Exits other than MMIO and system events.
pub fn handle_exit(exit: VcpuExit<'_>, _bus: &Arc<IoManager>) -> Option<ExitInfo> {
    Some(ExitInfo {
        code: 1,
        reason: format!("unexpected vCPU exit {exit:?}"),
    })
}

/// Exits kvm-ioctls does not decode.
pub fn handle_unsupported_exit(
    _fd: &mut VcpuFd,
    reason: u32,
    _state: &VcpuState,
) -> Result<(), ExitInfo> {
    Err(ExitInfo {
        code: 1,
        reason: format!("unexpected KVM exit reason {reason}"),
    })
}
