//! seccomp allow-lists for the threads a guest drives: each vCPU thread (from its first
//! instruction) and the `vmm_master` event loop (once the VM runs, when it only serves
//! devices and the API). A syscall outside its thread's list ends the whole process, as
//! in Firecracker: the filter traps it (it never runs), a SIGSYS handler writes which
//! syscall it was to stderr and exits with [`BAD_SYSCALL_EXIT`]; a VMM thread doing
//! what it never does has been subverted, and the shim's `delete` then cleans up after
//! it. The lists allow no `rt_sigaction`, so a subverted thread cannot replace that
//! handler. The lists are what the code calls, measured
//! under strace on both paths (VM suite, ctr and CRI end-to-end tests); per-arch entries
//! live in [`crate::arch`].

use std::collections::BTreeMap;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

/// Which thread a filter is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ThreadRole {
    /// A vCPU thread: KVM_RUN and the MMIO/PIO exits it serves.
    Vcpu,
    /// The `vmm_master` thread once the VM runs: the device event loop and the API.
    EventLoop,
}

/// A filter that could not be built or installed.
#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    /// seccompiler refused the rules (a bug in the lists).
    #[error("building the {role:?} seccomp filter: {source}")]
    Build {
        /// For which thread.
        role: ThreadRole,
        /// Why.
        #[source]
        source: seccompiler::BackendError,
    },
    /// The SIGSYS handler that reports a forbidden syscall could not be installed.
    #[error("installing the SIGSYS handler for the {role:?} seccomp filter: {source}")]
    Reporter {
        /// For which thread.
        role: ThreadRole,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The kernel refused the filter.
    #[error("installing the {role:?} seccomp filter: {source}")]
    Install {
        /// For which thread.
        role: ThreadRole,
        /// Why.
        #[source]
        source: seccompiler::Error,
    },
}

/// Syscalls every VMM thread makes: memory, locks, signals, time, its fds, logging,
/// leaving.
const COMMON: &[libc::c_long] = &[
    libc::SYS_brk,
    libc::SYS_clock_gettime,
    libc::SYS_clock_nanosleep,
    libc::SYS_close,
    libc::SYS_exit,
    libc::SYS_exit_group,
    libc::SYS_fcntl,
    libc::SYS_futex,
    libc::SYS_getpid,
    libc::SYS_getrandom,
    libc::SYS_gettid,
    libc::SYS_madvise,
    libc::SYS_mmap,
    libc::SYS_mprotect,
    libc::SYS_mremap,
    libc::SYS_munmap,
    libc::SYS_nanosleep,
    libc::SYS_read,
    libc::SYS_readv,
    libc::SYS_restart_syscall,
    libc::SYS_rseq,
    libc::SYS_rt_sigprocmask,
    libc::SYS_rt_sigreturn,
    libc::SYS_sched_yield,
    libc::SYS_sigaltstack,
    libc::SYS_tgkill,
    libc::SYS_tkill,
    libc::SYS_write,
    libc::SYS_writev,
];

/// What a vCPU thread adds: the eventfds and vhost-user messages of the devices it
/// activates (virtiofsd's handshake), the console's unix socket, and the console file
/// rotating under a guest's output. Its ioctls are listed per architecture.
const VCPU: &[libc::c_long] = &[
    libc::SYS_eventfd2,
    libc::SYS_fstat,
    libc::SYS_newfstatat,
    libc::SYS_openat,
    libc::SYS_recvmsg,
    libc::SYS_renameat2,
    libc::SYS_sendmsg,
    libc::SYS_sendto,
    libc::SYS_statx,
];

/// What the event loop adds: epoll, block I/O, the tap, vsock's unix sockets, and the
/// inline virtio-fs server's passthrough file operations (no exec, no fork, no mount, no
/// namespace change; the fs server's per-request setresuid/setresgid are its only
/// credential calls).
const EVENT_LOOP: &[libc::c_long] = &[
    libc::SYS_accept4,
    libc::SYS_connect,
    libc::SYS_dup,
    libc::SYS_epoll_ctl,
    libc::SYS_epoll_pwait,
    libc::SYS_eventfd2,
    libc::SYS_fallocate,
    libc::SYS_fchmod,
    libc::SYS_fchmodat,
    libc::SYS_fchown,
    libc::SYS_fchownat,
    libc::SYS_fdatasync,
    libc::SYS_fgetxattr,
    libc::SYS_flistxattr,
    libc::SYS_fremovexattr,
    libc::SYS_fsetxattr,
    libc::SYS_fstat,
    libc::SYS_fstatfs,
    libc::SYS_fsync,
    libc::SYS_ftruncate,
    libc::SYS_getdents64,
    libc::SYS_getsockopt,
    libc::SYS_getxattr,
    libc::SYS_linkat,
    libc::SYS_listxattr,
    libc::SYS_lseek,
    libc::SYS_mkdirat,
    libc::SYS_mknodat,
    libc::SYS_newfstatat,
    libc::SYS_openat,
    libc::SYS_pread64,
    libc::SYS_preadv,
    libc::SYS_pwrite64,
    libc::SYS_pwritev,
    libc::SYS_readlinkat,
    libc::SYS_recvfrom,
    libc::SYS_recvmsg,
    libc::SYS_removexattr,
    libc::SYS_renameat2,
    libc::SYS_sendmsg,
    libc::SYS_sendto,
    libc::SYS_setresgid,
    libc::SYS_setresuid,
    libc::SYS_setxattr,
    libc::SYS_shutdown,
    libc::SYS_socket,
    libc::SYS_statfs,
    libc::SYS_statx,
    libc::SYS_symlinkat,
    libc::SYS_umask,
    libc::SYS_unlinkat,
    libc::SYS_utimensat,
];

/// The exit status of a process a confined thread made a forbidden syscall in
/// (128 + SIGSYS, what a shell reports for a kill by SIGSYS).
pub const BAD_SYSCALL_EXIT: i32 = 128 + libc::SIGSYS;

/// The SIGSYS handler: names the trapped syscall on stderr, then ends the process.
extern "C" fn on_bad_syscall(_: libc::c_int, info: *mut libc::siginfo_t, _: *mut libc::c_void) {
    // siginfo_t's SIGSYS part: si_call_addr (a pointer) then si_syscall (an int), after
    // the three ints and the padding that start every siginfo_t (16 bytes on 64 bits).
    // SAFETY: the kernel passes a valid siginfo_t for SA_SIGINFO handlers; the read stays
    // within its 128 bytes.
    let syscall = unsafe { info.cast::<u8>().add(24).cast::<i32>().read_unaligned() };
    const PREFIX: &[u8] = b"kata-rv: seccomp: forbidden syscall ";
    let mut line = [0u8; PREFIX.len() + 12];
    line[..PREFIX.len()].copy_from_slice(PREFIX);
    let mut digits = [0u8; 10];
    let (mut n, mut count) = (syscall.unsigned_abs(), 0);
    loop {
        digits[count] = b'0' + (n % 10) as u8;
        count += 1;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for i in 0..count {
        line[PREFIX.len() + i] = digits[count - 1 - i];
    }
    line[PREFIX.len() + count] = b'\n';
    let len = PREFIX.len() + count + 1;
    // SAFETY: write(2) and _exit(2) are async-signal-safe and allowed on every confined
    // thread; the buffer is a live local.
    unsafe {
        libc::write(2, line.as_ptr().cast(), len);
        libc::_exit(BAD_SYSCALL_EXIT);
    }
}

/// Installs the SIGSYS handler that names a trapped syscall on stderr and ends the
/// process with [`BAD_SYSCALL_EXIT`] (once per process). The shim's own filter uses it
/// too.
pub fn install_reporter() -> Result<(), std::io::Error> {
    static ONCE: std::sync::Once = std::sync::Once::new();
    let mut result = Ok(());
    ONCE.call_once(|| {
        result = vmm_sys_util::signal::register_signal_handler(libc::SIGSYS, on_bad_syscall)
            .map_err(|e| std::io::Error::from_raw_os_error(e.errno()));
    });
    result
}

/// KVM_RUN: `_IO(KVMIO, 0x80)` (the same on every architecture).
pub const KVM_RUN: u64 = 0xae80;
/// KVM_IRQ_LINE: `_IOW(KVMIO, 0x61, struct kvm_irq_level)`.
pub const KVM_IRQ_LINE: u64 = 0x4008_ae61;
/// FIONBIO (a socket made non-blocking), the generic value on both architectures.
pub const FIONBIO: u64 = 0x5421;

/// A rule allowing `ioctl` with one of `requests` as its second argument.
fn ioctl_rules(requests: &[u64]) -> Result<Vec<SeccompRule>, seccompiler::BackendError> {
    requests
        .iter()
        .map(|&request| {
            SeccompRule::new(vec![SeccompCondition::new(
                1,
                SeccompCmpArgLen::Dword,
                SeccompCmpOp::Eq,
                request,
            )?])
        })
        .collect()
}

/// The BPF program of `role` on this architecture.
pub fn filter(role: ThreadRole) -> Result<BpfProgram, SeccompError> {
    let build = |source| SeccompError::Build { role, source };
    let (own, arch_own, ioctls): (&[libc::c_long], &[libc::c_long], &[u64]) = match role {
        ThreadRole::Vcpu => (
            VCPU,
            crate::arch::SECCOMP_VCPU,
            crate::arch::SECCOMP_VCPU_IOCTLS,
        ),
        ThreadRole::EventLoop => (
            EVENT_LOOP,
            crate::arch::SECCOMP_EVENT_LOOP,
            crate::arch::SECCOMP_EVENT_LOOP_IOCTLS,
        ),
    };
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = COMMON
        .iter()
        .chain(own)
        .chain(arch_own)
        .chain(crate::arch::SECCOMP_COMMON)
        .map(|&nr| (nr, Vec::new()))
        .collect();
    // An empty rule list would allow every ioctl: none listed, none allowed.
    if !ioctls.is_empty() {
        rules.insert(libc::SYS_ioctl, ioctl_rules(ioctls).map_err(build)?);
    }
    let arch = TargetArch::try_from(std::env::consts::ARCH).map_err(build)?;
    let filter = SeccompFilter::new(rules, SeccompAction::Trap, SeccompAction::Allow, arch)
        .map_err(build)?;
    filter.try_into().map_err(build)
}

/// Confines the calling thread to `role`'s list, for the rest of its life.
pub fn confine_this_thread(role: ThreadRole) -> Result<(), SeccompError> {
    let program = filter(role)?;
    install_reporter().map_err(|source| SeccompError::Reporter { role, source })?;
    // A trap while SIGSYS is blocked kills without a report: keep it deliverable.
    let mut sigsys = nix::sys::signal::SigSet::empty();
    sigsys.add(nix::sys::signal::SIGSYS);
    sigsys
        .thread_unblock()
        .map_err(|e| SeccompError::Reporter {
            role,
            source: e.into(),
        })?;
    seccompiler::apply_filter(&program).map_err(|source| SeccompError::Install { role, source })
}

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
    fn the_ioctl_numbers_are_the_kernels() {
        assert_eq!(KVM_RUN, KVM_RUN_NR());
        assert_eq!(KVM_IRQ_LINE, KVM_IRQ_LINE_NR());
        assert_eq!(FIONBIO, libc::FIONBIO as u64);
    }

    #[test]
    fn both_filters_build_on_this_architecture() {
        for role in [ThreadRole::Vcpu, ThreadRole::EventLoop] {
            let program = filter(role).unwrap();
            assert!(!program.is_empty(), "{role:?}");
        }
    }

    /// Runs `body` in a forked child confined to `role`'s filter (built before the
    /// fork) and returns how the child ended.
    fn in_confined_child(role: ThreadRole, body: fn()) -> nix::sys::wait::WaitStatus {
        let program = filter(role).unwrap();
        // SAFETY: the child only installs the prebuilt filter, makes raw syscalls and
        // leaves with _exit: nothing that needs the parent's other threads or locks.
        match unsafe { nix::unistd::fork() }.unwrap() {
            nix::unistd::ForkResult::Child => {
                if install_reporter().is_err() || seccompiler::apply_filter(&program).is_err() {
                    // SAFETY: ends the child without running the parent's destructors.
                    unsafe { libc::_exit(2) };
                }
                body();
                // SAFETY: as above.
                unsafe { libc::_exit(0) }
            }
            nix::unistd::ForkResult::Parent { child } => {
                nix::sys::wait::waitpid(child, None).unwrap()
            }
        }
    }

    #[test]
    fn a_forbidden_syscall_on_a_vcpu_thread_kills_the_process() {
        let status = in_confined_child(ThreadRole::Vcpu, || {
            // SAFETY: a plain socket(2) call; the filter must stop it before it runs.
            unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0) };
        });
        assert_eq!(
            status,
            nix::sys::wait::WaitStatus::Exited(status.pid().unwrap(), BAD_SYSCALL_EXIT),
            "socket() on a confined vCPU thread"
        );
    }

    #[test]
    fn an_ioctl_outside_the_list_kills_the_process() {
        let status = in_confined_child(ThreadRole::EventLoop, || {
            // SAFETY: TIOCGWINSZ on stdin with a valid buffer; the filter stops it first.
            let mut size: libc::winsize = unsafe { std::mem::zeroed() };
            unsafe { libc::ioctl(0, libc::TIOCGWINSZ, &mut size) };
        });
        assert_eq!(
            status,
            nix::sys::wait::WaitStatus::Exited(status.pid().unwrap(), BAD_SYSCALL_EXIT),
            "an ioctl outside the list"
        );
    }

    #[test]
    fn what_a_confined_thread_does_still_works() {
        for role in [ThreadRole::Vcpu, ThreadRole::EventLoop] {
            let status = in_confined_child(role, || {
                let mut now: libc::timespec = libc::timespec {
                    tv_sec: 0,
                    tv_nsec: 0,
                };
                // SAFETY: allowed calls on valid buffers and this process's own fds.
                unsafe {
                    libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now);
                    let fd = libc::eventfd(0, libc::EFD_NONBLOCK);
                    let one = 1u64;
                    libc::write(fd, (&one as *const u64).cast(), 8);
                    libc::close(fd);
                }
            });
            assert_eq!(
                status,
                nix::sys::wait::WaitStatus::Exited(status.pid().unwrap(), 0),
                "{role:?}"
            );
        }
    }

    #[test]
    fn neither_list_allows_exec_fork_mount_or_ptrace() {
        for list in [COMMON, VCPU, EVENT_LOOP] {
            for forbidden in [
                libc::SYS_execve,
                libc::SYS_clone,
                libc::SYS_mount,
                libc::SYS_ptrace,
                libc::SYS_setns,
                libc::SYS_unshare,
                libc::SYS_bpf,
                libc::SYS_init_module,
            ] {
                assert!(!list.contains(&forbidden), "syscall {forbidden} is allowed");
            }
        }
    }
}
