//! x86_64's part of the seccomp allow-lists ([`crate::seccomp`]): the legacy path
//! syscalls musl's libc still makes here, and the KVM ioctls.

use crate::seccomp::{FIONBIO, KVM_IRQ_LINE, KVM_RUN};

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

/// The ioctl requests a vCPU thread makes: running, and raising device interrupts.
pub const SECCOMP_VCPU_IOCTLS: &[u64] = &[KVM_RUN, KVM_IRQ_LINE];
/// The ioctl requests the event loop makes: device interrupts, non-blocking sockets.
pub const SECCOMP_EVENT_LOOP_IOCTLS: &[u64] = &[KVM_IRQ_LINE, FIONBIO];
