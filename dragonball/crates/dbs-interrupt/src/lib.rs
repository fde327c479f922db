//! Interrupt lines for Dragonball devices.
//!
//! A device raises its interrupt through an [`InterruptLine`]. With an in-kernel irqchip
//! the line is a [`KvmIrqLine`]: an edge, raised and lowered with KVM_IRQ_LINE. (An irqfd
//! is not used for wired lines on riscv64: KVM's irqfd path only ever *raises* an APLIC
//! input, so a level source would storm and an edge source would fire once.) Without an
//! in-kernel irqchip, lines go to the userspace [`plic::Plic`].

pub mod plic;

use std::io;
use std::sync::Arc;

use kvm_ioctls::VmFd;

/// Something a device can interrupt the guest through.
pub trait InterruptLine: Send + Sync {
    /// Signals one interrupt (an edge).
    fn trigger(&self) -> io::Result<()>;
}

/// A wired source of the in-kernel irqchip (an APLIC source on riscv64, a GSI on x86_64).
pub struct KvmIrqLine {
    vm: Arc<VmFd>,
    source: u32,
}

impl KvmIrqLine {
    /// The line of interrupt source `source` (>= 1 on riscv64).
    pub fn new(vm: Arc<VmFd>, source: u32) -> Self {
        KvmIrqLine { vm, source }
    }
}

impl InterruptLine for KvmIrqLine {
    fn trigger(&self) -> io::Result<()> {
        let to_io = |e: kvm_ioctls::Error| io::Error::from_raw_os_error(e.errno());
        self.vm.set_irq_line(self.source, true).map_err(to_io)?;
        self.vm.set_irq_line(self.source, false).map_err(to_io)
    }
}
