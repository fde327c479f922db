//! x86_64's part of the seccomp allow-lists ([`crate::seccomp`]): the legacy path
//! syscalls musl's libc still makes here, and the KVM ioctls.

/// Syscalls every VMM thread makes here beyond the generic ones.
pub const SECCOMP_COMMON: &[libc::c_long] = &[];
/// A vCPU thread's own syscalls here: the console file's reopen and rotation.
pub const SECCOMP_VCPU: &[libc::c_long] = &[libc::SYS_open, libc::SYS_rename, libc::SYS_stat];
/// The event loop's own syscalls here: the fs server's and the VMM's path calls.
pub const SECCOMP_EVENT_LOOP: &[libc::c_long] = &[
    libc::SYS_lstat,
    libc::SYS_open,
    libc::SYS_rename,
    libc::SYS_stat,
    libc::SYS_unlink,
];

/// KVM_RUN: `_IO(KVMIO, 0x80)`.
pub const KVM_RUN: u64 = 0xae80;
/// KVM_IRQ_LINE: `_IOW(KVMIO, 0x61, struct kvm_irq_level)`.
pub const KVM_IRQ_LINE: u64 = 0x4008_ae61;
/// FIONBIO (a socket made non-blocking), the generic value on both architectures.
pub const FIONBIO: u64 = 0x5421;

/// The ioctl requests a vCPU thread makes: running, and raising device interrupts.
pub const SECCOMP_VCPU_IOCTLS: &[u64] = &[KVM_RUN, KVM_IRQ_LINE];
/// The ioctl requests the event loop makes: device interrupts, non-blocking sockets.
pub const SECCOMP_EVENT_LOOP_IOCTLS: &[u64] = &[KVM_IRQ_LINE, FIONBIO];

#[cfg(test)]
mod tests {
    use super::*;

    vmm_sys_util::ioctl_io_nr!(KVM_RUN_NR, kvm_bindings::KVMIO, 0x80);
    vmm_sys_util::ioctl_iow_nr!(
        KVM_IRQ_LINE_NR,
        kvm_bindings::KVMIO,
        0x61,
        kvm_bindings::kvm_irq_level
    );

    #[test]
    #[allow(clippy::unnecessary_cast)]
    fn the_ioctl_numbers_are_kvms() {
        assert_eq!(FIONBIO, libc::FIONBIO as u64);
        assert_eq!(KVM_RUN, KVM_RUN_NR());
        assert_eq!(KVM_IRQ_LINE, KVM_IRQ_LINE_NR());
    }
}
