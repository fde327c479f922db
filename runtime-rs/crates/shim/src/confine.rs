//! The serving shim's seccomp allow-list: its main thread and every async-runtime
//! thread (workers and blocking pool, which read what the guest's agent sends), for the
//! rest of their lives. What must not inherit it runs from the launcher thread started
//! before it (`kata_launcher`): the VMM's threads (stricter lists of their own),
//! virtiofsd (its own filter), the pod-netns thread. A syscall outside the list is
//! trapped: the SIGSYS handler shared with the VMM names it on stderr (containerd's
//! log) and ends the shim with 159, and containerd's `delete` cleans up after it, as
//! after any shim crash. `rt_sigaction` is not allowed, so a subverted thread cannot
//! replace that handler; the shim's own signal handlers are set before it confines
//! itself. The list comes from what the code calls (std, tokio, glibc on riscv64 and
//! musl on x86_64 make different calls for the same thing), checked two ways: the ctr
//! and CRI end-to-end tests run confined on both arches without a trap, and a ctr
//! session (run, exec with and without a tty, ps, metrics, pause/resume, kill, delete)
//! under strace on x86_64 made 48 distinct syscalls from confined threads, every one
//! listed. `[hypervisor.dragonball] disable_seccomp` does not reach it (it is
//! installed before any configuration is read), `KATA_RV_SHIM_SECCOMP=off` in
//! containerd's environment does.

use std::collections::BTreeMap;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

/// Syscalls of every architecture the shim's threads make.
const ALLOWED: &[libc::c_long] = &[
    // Memory, threads, time, signals, leaving.
    libc::SYS_brk,
    libc::SYS_mmap,
    libc::SYS_munmap,
    libc::SYS_mprotect,
    libc::SYS_mremap,
    libc::SYS_madvise,
    libc::SYS_futex,
    libc::SYS_rseq,
    libc::SYS_set_robust_list,
    libc::SYS_exit,
    libc::SYS_exit_group,
    libc::SYS_gettid,
    libc::SYS_getpid,
    libc::SYS_getppid,
    libc::SYS_getuid,
    libc::SYS_geteuid,
    libc::SYS_getgid,
    libc::SYS_getegid,
    libc::SYS_tgkill,
    libc::SYS_tkill,
    libc::SYS_rt_sigprocmask,
    libc::SYS_rt_sigreturn,
    libc::SYS_sigaltstack,
    libc::SYS_sched_yield,
    libc::SYS_sched_getaffinity,
    libc::SYS_clock_gettime,
    libc::SYS_clock_nanosleep,
    libc::SYS_nanosleep,
    libc::SYS_getrandom,
    libc::SYS_prlimit64,
    libc::SYS_restart_syscall,
    libc::SYS_prctl,
    libc::SYS_uname,
    libc::SYS_sysinfo,
    libc::SYS_getrusage,
    // Descriptors, pipes, polling.
    libc::SYS_read,
    libc::SYS_readv,
    libc::SYS_write,
    libc::SYS_writev,
    libc::SYS_pread64,
    libc::SYS_pwrite64,
    libc::SYS_close,
    libc::SYS_close_range,
    libc::SYS_fcntl,
    libc::SYS_dup,
    libc::SYS_dup3,
    libc::SYS_pipe2,
    libc::SYS_eventfd2,
    libc::SYS_epoll_create1,
    libc::SYS_epoll_ctl,
    libc::SYS_epoll_pwait,
    libc::SYS_epoll_pwait2,
    libc::SYS_ppoll,
    libc::SYS_lseek,
    // Files: bundles, the share, cgroups, FIFOs, /proc, the console file.
    libc::SYS_openat,
    libc::SYS_openat2,
    libc::SYS_newfstatat,
    libc::SYS_fstat,
    libc::SYS_statx,
    libc::SYS_statfs,
    libc::SYS_fstatfs,
    libc::SYS_getdents64,
    libc::SYS_readlinkat,
    libc::SYS_mkdirat,
    libc::SYS_mknodat,
    libc::SYS_unlinkat,
    libc::SYS_renameat2,
    libc::SYS_symlinkat,
    libc::SYS_linkat,
    libc::SYS_fchmod,
    libc::SYS_fchmodat,
    libc::SYS_fchown,
    libc::SYS_fchownat,
    libc::SYS_ftruncate,
    libc::SYS_fallocate,
    libc::SYS_fsync,
    libc::SYS_fdatasync,
    libc::SYS_flock,
    libc::SYS_utimensat,
    libc::SYS_faccessat,
    libc::SYS_faccessat2,
    libc::SYS_getcwd,
    libc::SYS_chdir,
    libc::SYS_fchdir,
    libc::SYS_umask,
    libc::SYS_fgetxattr,
    libc::SYS_getxattr,
    libc::SYS_lgetxattr,
    // Mounts: the rootfs and volume binds into the share, and their removal.
    libc::SYS_mount,
    libc::SYS_umount2,
    // Sockets: containerd's ttrpc, the VMM's hybrid vsock, the VMM API.
    libc::SYS_socket,
    libc::SYS_socketpair,
    libc::SYS_bind,
    libc::SYS_listen,
    libc::SYS_accept,
    libc::SYS_accept4,
    libc::SYS_connect,
    libc::SYS_getsockname,
    libc::SYS_getpeername,
    libc::SYS_getsockopt,
    libc::SYS_setsockopt,
    libc::SYS_sendto,
    libc::SYS_recvfrom,
    libc::SYS_sendmsg,
    libc::SYS_recvmsg,
    libc::SYS_shutdown,
    // Processes: virtiofsd and leftovers are signalled and reaped here.
    libc::SYS_kill,
    libc::SYS_wait4,
    libc::SYS_waitid,
    libc::SYS_pidfd_open,
    libc::SYS_pidfd_send_signal,
];

/// What x86_64 adds: the older calls its libc and crates still make.
#[cfg(target_arch = "x86_64")]
const ALLOWED_ARCH: &[libc::c_long] = &[
    libc::SYS_open,
    libc::SYS_stat,
    libc::SYS_lstat,
    libc::SYS_access,
    libc::SYS_readlink,
    libc::SYS_mkdir,
    libc::SYS_rmdir,
    libc::SYS_unlink,
    libc::SYS_rename,
    libc::SYS_renameat,
    libc::SYS_dup2,
    libc::SYS_pipe,
    libc::SYS_poll,
    libc::SYS_epoll_wait,
    libc::SYS_arch_prctl,
];
#[cfg(target_arch = "riscv64")]
const ALLOWED_ARCH: &[libc::c_long] = &[];

/// The ioctls the shim's threads make: non-blocking and close-on-exec toggles, and the
/// terminal queries of isatty. (The request type is u64 in glibc and i32 in musl.)
#[allow(clippy::unnecessary_cast)]
const IOCTLS: &[u64] = &[
    libc::FIONBIO as u64,
    libc::FIOCLEX as u64,
    libc::FIONCLEX as u64,
    libc::TCGETS as u64,
    libc::TIOCGWINSZ as u64,
];

/// The environment variable that turns the filter off (`off`), for debugging.
pub const SWITCH: &str = "KATA_RV_SHIM_SECCOMP";

/// The shim's filters could not be built or installed.
#[derive(Debug, thiserror::Error)]
pub enum ConfineError {
    /// seccompiler refused the rules (a bug in the list).
    #[error("building the shim's seccomp filter: {0}")]
    Build(#[source] seccompiler::BackendError),
    /// The SIGSYS reporter could not be installed.
    #[error("installing the SIGSYS reporter: {0}")]
    Reporter(#[source] std::io::Error),
    /// The kernel refused the filter.
    #[error("installing the shim's seccomp filter: {0}")]
    Install(#[source] seccompiler::Error),
}

/// The shim's BPF programs on this architecture, in the order they are installed.
/// Threads, never processes: `clone` only with CLONE_THREAD, and `clone3` (whose flags
/// sit in memory a filter cannot read) fails with ENOSYS, which makes libc fall back to
/// `clone`.
pub fn filter() -> Result<Vec<BpfProgram>, ConfineError> {
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = ALLOWED
        .iter()
        .chain(ALLOWED_ARCH)
        .map(|&nr| (nr, Vec::new()))
        .collect();
    let arg_rule = |index, op, value| {
        SeccompCondition::new(index, SeccompCmpArgLen::Dword, op, value)
            .and_then(|c| SeccompRule::new(vec![c]))
    };
    let ioctls = IOCTLS
        .iter()
        .map(|&request| arg_rule(1, SeccompCmpOp::Eq, request))
        .collect::<Result<Vec<_>, _>>()
        .map_err(ConfineError::Build)?;
    rules.insert(libc::SYS_ioctl, ioctls);
    let thread = libc::CLONE_THREAD as u64;
    rules.insert(
        libc::SYS_clone,
        vec![arg_rule(0, SeccompCmpOp::MaskedEq(thread), thread).map_err(ConfineError::Build)?],
    );
    // Allowed here so that it reaches the ENOSYS program below.
    rules.insert(libc::SYS_clone3, Vec::new());
    let arch = TargetArch::try_from(std::env::consts::ARCH).map_err(ConfineError::Build)?;
    let no_clone3 = SeccompFilter::new(
        [(libc::SYS_clone3, Vec::new())].into_iter().collect(),
        SeccompAction::Allow,
        SeccompAction::Errno(libc::ENOSYS as u32),
        arch,
    )
    .and_then(BpfProgram::try_from)
    .map_err(ConfineError::Build)?;
    let main = SeccompFilter::new(rules, SeccompAction::Trap, SeccompAction::Allow, arch)
        .and_then(BpfProgram::try_from)
        .map_err(ConfineError::Build)?;
    Ok(vec![no_clone3, main])
}

/// Whether the filter is wanted (not turned off through [`SWITCH`]).
pub fn wanted() -> bool {
    std::env::var(SWITCH).as_deref() != Ok("off")
}

/// Confines the calling thread unless it already is (a thread made by a confined one
/// inherits its filter).
pub fn confine_this_thread(programs: &[BpfProgram]) -> Result<(), ConfineError> {
    // SAFETY: prctl with integer arguments only.
    if unsafe { libc::prctl(libc::PR_GET_SECCOMP) } == 2 {
        return Ok(());
    }
    dragonball::seccomp::install_reporter().map_err(ConfineError::Reporter)?;
    for program in programs {
        seccompiler::apply_filter(program).map_err(ConfineError::Install)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `body` in a forked child confined to the shim's filter; returns how it ended.
    fn in_confined_child(body: fn()) -> nix::sys::wait::WaitStatus {
        let programs = filter().unwrap();
        // SAFETY: the child installs the prebuilt filter, makes raw syscalls and leaves
        // with _exit.
        match unsafe { nix::unistd::fork() }.unwrap() {
            nix::unistd::ForkResult::Child => {
                if confine_this_thread(&programs).is_err() {
                    // SAFETY: ends the child without the parent's destructors.
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
    fn the_filter_builds_and_allows_what_the_shim_does() {
        let status = in_confined_child(|| {
            let dir = std::env::temp_dir();
            let _ = std::fs::read_dir(dir).map(|d| d.count());
            let _ = std::os::unix::net::UnixStream::pair();
            let _ = std::thread::spawn(|| 1).join();
        });
        assert!(
            matches!(status, nix::sys::wait::WaitStatus::Exited(_, 0)),
            "{status:?}"
        );
    }

    #[test]
    fn a_forbidden_syscall_ends_the_process_with_its_report() {
        for body in [
            // Forking (only the launcher forks).
            (|| {
                // SAFETY: a raw fork; trapped before it runs.
                unsafe { libc::syscall(libc::SYS_clone, libc::SIGCHLD, 0, 0, 0, 0) };
            }) as fn(),
            || {
                let _ = std::process::Command::new("/bin/true").status();
            },
            // Replacing the SIGSYS handler.
            || {
                // SAFETY: a raw call; trapped before it runs.
                unsafe { libc::syscall(libc::SYS_rt_sigaction, libc::SIGSYS, 0, 0, 8) };
            },
            // Loading a kernel module, ptrace, an ioctl not listed (TUNSETIFF).
            || {
                // SAFETY: a raw call; trapped before it runs.
                unsafe { libc::syscall(libc::SYS_ptrace, 0, 0, 0, 0) };
            },
            || {
                // SAFETY: a raw call; trapped before it runs.
                unsafe { libc::syscall(libc::SYS_ioctl, 0, 0x400454ca_u64, 0) };
            },
            || {
                // SAFETY: a raw call; trapped before it runs.
                unsafe { libc::syscall(libc::SYS_setns, -1, 0) };
            },
        ] {
            // Reported and ended by the handler, or, where libc blocked every signal
            // around the call (posix_spawn does), killed by the kernel with SIGSYS.
            let status = in_confined_child(body);
            assert!(
                matches!(status, nix::sys::wait::WaitStatus::Exited(_, code) if code == dragonball::seccomp::BAD_SYSCALL_EXIT)
                    || matches!(
                        status,
                        nix::sys::wait::WaitStatus::Signaled(
                            _,
                            nix::sys::signal::Signal::SIGSYS,
                            _
                        )
                    ),
                "{status:?}"
            );
        }
    }
}
