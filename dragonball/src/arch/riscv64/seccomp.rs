//! riscv64's part of the seccomp allow-lists ([`crate::seccomp`]): the KVM ioctls (the
//! generic syscall table has no legacy path calls).

use crate::seccomp::{FIONBIO, KVM_IRQ_LINE, KVM_RUN};

/// Syscalls every VMM thread makes here beyond the generic ones.
pub const SECCOMP_COMMON: &[libc::c_long] = &[];
/// A vCPU thread's own syscalls here.
pub const SECCOMP_VCPU: &[libc::c_long] = &[];
/// The event loop's own syscalls here.
pub const SECCOMP_EVENT_LOOP: &[libc::c_long] = &[];

/// KVM_INTERRUPT: `_IOW(KVMIO, 0x86, struct kvm_interrupt)` (the userspace PLIC).
pub const KVM_INTERRUPT: u64 = 0x4004_ae86;

/// The ioctl requests a vCPU thread makes: running, and raising device interrupts (the
/// AIA's wired sources, or the userspace PLIC's hart lines).
pub const SECCOMP_VCPU_IOCTLS: &[u64] = &[KVM_RUN, KVM_IRQ_LINE, KVM_INTERRUPT];
/// The ioctl requests the event loop makes: device interrupts, non-blocking sockets.
pub const SECCOMP_EVENT_LOOP_IOCTLS: &[u64] = &[KVM_IRQ_LINE, KVM_INTERRUPT, FIONBIO];

#[cfg(test)]
mod tests {
    #[test]
    fn kvm_interrupt_is_the_kernels() {
        assert_eq!(super::KVM_INTERRUPT, super::super::KVM_INTERRUPT());
    }
}
