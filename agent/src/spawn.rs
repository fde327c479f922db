//! Starting container processes: a throwaway thread enters (or creates) the PID
//! namespace and forks; the child sets up namespaces, mounts, pivot_root, credentials and
//! stdio from a plan built beforehand, reports READY or the failing step over a pipe,
//! waits for the start signal (container init) and execs.
//!
//! The child of a multi-threaded process must not allocate: every string it needs is a
//! `CString` in the plan, and it only makes system calls.

use std::ffi::{CStr, CString};
use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};

use nix::errno::Errno;
use nix::mount::{MntFlags, MsFlags};
use nix::sched::CloneFlags;
use nix::unistd::{Gid, Pid, Uid};

use crate::capabilities::{self, CapSets};
use crate::reaper::{ExitWatch, Reaper};

/// One `mount(2)` in the new root.
#[derive(Debug)]
pub struct MountStep {
    /// The container path, for error messages.
    pub destination: String,
    /// Source (device, directory, or a pseudo-fs name).
    pub source: CString,
    /// Absolute target: rootfs + destination.
    pub target: CString,
    /// Filesystem type (empty for binds).
    pub fstype: CString,
    /// Flags for the first mount call.
    pub flags: MsFlags,
    /// Filesystem data.
    pub data: CString,
    /// Bind mounts needing a second call to apply ro/nosuid/...
    pub remount_flags: Option<MsFlags>,
    /// Propagation to set after mounting.
    pub propagation: MsFlags,
    /// Directories to create first, outermost first.
    pub create_dirs: Vec<CString>,
    /// The target is a file (bind of a file): create it empty.
    pub target_is_file: bool,
}

/// A device node to create under the new root's /dev.
#[derive(Debug)]
pub struct DeviceNode {
    /// Container path, for error messages.
    pub path_in_container: String,
    /// Absolute path under rootfs.
    pub path: CString,
    /// `S_IFCHR`/`S_IFBLK`/`S_IFIFO` | permission bits.
    pub mode: libc::mode_t,
    /// Device number.
    pub dev: libc::dev_t,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
}

/// Everything a container's init process sets up before its first exec.
#[derive(Debug)]
pub struct ContainerSetup {
    /// New namespaces besides PID (which the forking thread creates).
    pub unshare: CloneFlags,
    /// Whether the child is the first process of a new PID namespace.
    pub new_pid_ns: bool,
    /// The prepared rootfs (a bind mount owned by the agent).
    pub rootfs: CString,
    /// Propagation for `/` in the new mount namespace.
    pub root_propagation: MsFlags,
    /// The mount the rootfs is (or lies on): made private before the rootfs is bound onto
    /// itself, since pivot_root refuses a shared new root or parent (a rootfsPropagation
    /// of rshared makes everything shared).
    pub rootfs_parent_mount: Option<CString>,
    /// Spec mounts, in order.
    pub mounts: Vec<MountStep>,
    /// Device nodes and their symlinks.
    pub devices: Vec<DeviceNode>,
    /// `/dev` symlinks (target, link path) such as `/proc/self/fd` → `/dev/fd`.
    pub dev_symlinks: Vec<(CString, CString)>,
    /// Remount the root read-only after pivot_root.
    pub readonly_rootfs: bool,
    /// Paths hidden behind /dev/null (files) or an empty read-only tmpfs (dirs).
    pub masked_paths: Vec<CString>,
    /// Paths made read-only.
    pub readonly_paths: Vec<CString>,
    /// `/proc/sys/...` files and values.
    pub sysctls: Vec<(CString, CString)>,
    /// Hostname for a new UTS namespace.
    pub hostname: Option<CString>,
}

/// Namespaces of a running container that an exec joins.
#[derive(Debug)]
pub struct JoinNamespaces {
    /// The PID namespace (joined by the forking thread).
    pub pid: Option<OwnedFd>,
    /// Mount, UTS, IPC namespaces (joined by the child).
    pub others: Vec<(OwnedFd, CloneFlags)>,
    /// The init's root directory (`/proc/<pid>/root`): after joining the mount namespace
    /// the child chroots here, which also covers containers rooted by chroot.
    pub root: Option<OwnedFd>,
}

/// How the child's standard streams are wired.
#[derive(Debug)]
pub enum ChildStdio {
    /// Three pipe ends: stdin (read), stdout and stderr (write).
    Pipes {
        /// Read end of the stdin pipe.
        stdin: OwnedFd,
        /// Write end of the stdout pipe.
        stdout: OwnedFd,
        /// Write end of the stderr pipe.
        stderr: OwnedFd,
    },
    /// A terminal allocated inside the container (its own devpts, so `tty` names it):
    /// the child sends the master back over this socket and keeps the slave.
    Pty {
        /// The child's end of the socket pair.
        socket: OwnedFd,
    },
}

/// The process itself: what to exec and as whom.
#[derive(Debug)]
pub struct ProcessSetup {
    /// argv.
    pub argv: Vec<CString>,
    /// envp (`KEY=value`).
    pub envp: Vec<CString>,
    /// Executable paths to try in order (PATH lookup done up front).
    pub exec_candidates: Vec<CString>,
    /// Working directory (created if missing).
    pub cwd: CString,
    /// User.
    pub uid: Uid,
    /// Group.
    pub gid: Gid,
    /// Supplementary groups.
    pub additional_gids: Vec<Gid>,
    /// Capabilities; `None` keeps the agent's (all).
    pub capabilities: Option<CapSets>,
    /// Resource limits (resource, soft, hard).
    pub rlimits: Vec<(i32, u64, u64)>,
    /// Set no_new_privs.
    pub no_new_privs: bool,
    /// Text for /proc/self/oom_score_adj.
    pub oom_score_adj: Option<CString>,
    /// The cgroup.procs file to join.
    pub cgroup_procs: Option<CString>,
    /// Standard streams; taken (and the agent's copies closed) once the child is forked.
    pub stdio: Option<ChildStdio>,
    /// Window size for a pty (rows, cols).
    pub console_size: Option<(u16, u16)>,
    /// The container's compiled seccomp profile.
    pub seccomp: Option<crate::seccomp::SeccompPlan>,
}

/// Where a child failed, for error messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum Step {
    /// Joining the cgroup.
    Cgroup = 1,
    /// Creating namespaces.
    Unshare,
    /// Joining namespaces.
    Setns,
    /// Root propagation.
    Propagation,
    /// Binding the rootfs onto itself.
    RootfsBind,
    /// Creating a mount point.
    MountPoint,
    /// A spec mount.
    Mount,
    /// A device node.
    Device,
    /// pivot_root.
    PivotRoot,
    /// Read-only root.
    ReadonlyRoot,
    /// A masked path.
    MaskedPath,
    /// A read-only path.
    ReadonlyPath,
    /// A sysctl.
    Sysctl,
    /// Hostname.
    Hostname,
    /// oom_score_adj.
    OomScore,
    /// A resource limit.
    Rlimit,
    /// Session and controlling terminal.
    Terminal,
    /// Standard streams.
    Stdio,
    /// Supplementary groups.
    Groups,
    /// setgid.
    Gid,
    /// setuid.
    Uid,
    /// Capabilities.
    Capabilities,
    /// no_new_privs.
    NoNewPrivs,
    /// Working directory.
    Cwd,
    /// Waiting for the start signal.
    Start,
    /// The exec itself.
    Exec,
    /// Installing the seccomp profile (index: which of its programs).
    Seccomp,
}

impl Step {
    fn from_u32(value: u32) -> Option<Self> {
        use Step::*;
        const ALL: [Step; 27] = [
            Cgroup,
            Unshare,
            Setns,
            Propagation,
            RootfsBind,
            MountPoint,
            Mount,
            Device,
            PivotRoot,
            ReadonlyRoot,
            MaskedPath,
            ReadonlyPath,
            Sysctl,
            Hostname,
            OomScore,
            Rlimit,
            Terminal,
            Stdio,
            Groups,
            Gid,
            Uid,
            Capabilities,
            NoNewPrivs,
            Cwd,
            Start,
            Exec,
            Seccomp,
        ];
        ALL.into_iter().find(|step| *step as u32 == value)
    }
}

/// A failure reported by the child: the step, an index into the plan's list for that
/// step (mount number, ...), and errno.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChildFailure {
    /// The step.
    pub step: Step,
    /// Index within the step's list.
    pub index: u32,
    /// The system error.
    pub errno: Errno,
}

const RECORD_LEN: usize = 12;

fn encode(step: u32, index: u32, errno: i32) -> [u8; RECORD_LEN] {
    let mut record = [0u8; RECORD_LEN];
    record[0..4].copy_from_slice(&step.to_le_bytes());
    record[4..8].copy_from_slice(&index.to_le_bytes());
    record[8..12].copy_from_slice(&errno.to_le_bytes());
    record
}

/// What the report pipe said.
#[derive(Debug, PartialEq, Eq)]
pub enum Report {
    /// Set up and waiting (init) — or, read after the start signal, exec succeeded (EOF).
    Ready,
    /// The pipe closed: the child exec'd (or died without a word).
    Closed,
    /// The child failed.
    Failed(ChildFailure),
}

/// Reads one report record. Blocking: call from a blocking context.
pub fn read_report(pipe: &mut std::fs::File) -> Report {
    let mut record = [0u8; RECORD_LEN];
    let mut filled = 0;
    while filled < RECORD_LEN {
        match pipe.read(&mut record[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        }
    }
    if filled == 0 {
        return Report::Closed;
    }
    if filled < RECORD_LEN {
        return Report::Failed(ChildFailure {
            step: Step::Exec,
            index: 0,
            errno: Errno::EPIPE,
        });
    }
    let step = u32::from_le_bytes(record[0..4].try_into().expect("4 bytes"));
    let index = u32::from_le_bytes(record[4..8].try_into().expect("4 bytes"));
    let errno = i32::from_le_bytes(record[8..12].try_into().expect("4 bytes"));
    if step == 0 {
        return Report::Ready;
    }
    Report::Failed(ChildFailure {
        step: Step::from_u32(step).unwrap_or(Step::Exec),
        index,
        errno: Errno::from_raw(errno),
    })
}

/// A forked child and its pipes.
pub struct Spawned {
    /// The child's pid in the agent's namespace.
    pub pid: Pid,
    /// Turns `Some(status)` when reaped.
    pub exit: ExitWatch,
    /// Child → agent reports.
    pub report: std::fs::File,
    /// Agent → child start signal; `None` when the child does not wait.
    pub start: Option<OwnedFd>,
}

/// Forks the child in a throwaway thread that first creates or joins the PID namespace.
pub fn spawn(
    reaper: &Reaper,
    container: Option<&ContainerSetup>,
    join: Option<&JoinNamespaces>,
    process: &mut ProcessSetup,
    wait_for_start: bool,
) -> std::io::Result<Spawned> {
    let (report_read, report_write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    let (start_read, start_write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    let reaper = reaper.clone();
    let child_view: &ProcessSetup = process;
    let outcome = std::thread::scope(|scope| {
        scope
            .spawn(|| -> std::io::Result<(Pid, ExitWatch)> {
                if container.is_some_and(|c| c.new_pid_ns) {
                    nix::sched::unshare(CloneFlags::CLONE_NEWPID)?;
                } else if let Some(pid_ns) = join.and_then(|j| j.pid.as_ref()) {
                    nix::sched::setns(pid_ns.as_fd(), CloneFlags::CLONE_NEWPID)?;
                }
                reaper.spawn_registered(|| {
                    // SAFETY: the child only makes system calls on data prepared before
                    // the fork (see child_main) and ends in exec or _exit.
                    match unsafe { nix::unistd::fork() }? {
                        nix::unistd::ForkResult::Child => child_main(
                            container,
                            join,
                            child_view,
                            report_write.as_raw_fd(),
                            wait_for_start.then_some(start_read.as_raw_fd()),
                        ),
                        nix::unistd::ForkResult::Parent { child } => Ok(child),
                    }
                })
            })
            .join()
            .map_err(|_| std::io::Error::other("the spawning thread panicked"))?
    });
    let (pid, exit) = outcome?;
    // The child has its own copies now.
    process.stdio = None;
    drop(report_write);
    drop(start_read);
    Ok(Spawned {
        pid,
        exit,
        report: std::fs::File::from(report_read),
        start: wait_for_start.then_some(start_write),
    })
}

fn last_errno() -> i32 {
    Errno::last_raw()
}

/// Reports a failure and exits the child.
fn fail(report: RawFd, step: Step, index: usize, errno: i32) -> ! {
    let record = encode(step as u32, index as u32, errno);
    // SAFETY: writing a stack buffer to a pipe we own, then exiting without running
    // any of the parent's destructors.
    unsafe {
        libc::write(report, record.as_ptr().cast(), record.len());
        libc::_exit(127)
    }
}

fn check(report: RawFd, step: Step, index: usize, rc: libc::c_int) {
    if rc < 0 {
        fail(report, step, index, last_errno());
    }
}

fn ptr_or_null(text: &CStr) -> *const libc::c_char {
    if text.is_empty() {
        std::ptr::null()
    } else {
        text.as_ptr()
    }
}

// SAFETY (for the raw calls below): every pointer is a NUL-terminated CString or a
// stack value that outlives the call; the child is single-threaded.
fn mount_raw(
    source: &CStr,
    target: &CStr,
    fstype: &CStr,
    flags: MsFlags,
    data: &CStr,
) -> libc::c_int {
    // SAFETY: see the note above.
    unsafe {
        libc::mount(
            ptr_or_null(source),
            target.as_ptr(),
            ptr_or_null(fstype),
            flags.bits(),
            ptr_or_null(data).cast(),
        )
    }
}

fn setup_mounts(container: &ContainerSetup, report: RawFd) {
    let empty = c"";
    check(
        report,
        Step::Propagation,
        0,
        mount_raw(empty, c"/", empty, container.root_propagation, empty),
    );
    // Before the rootfs is bound onto itself, so that bind is private too.
    if let Some(parent) = &container.rootfs_parent_mount {
        check(
            report,
            Step::Propagation,
            2,
            mount_raw(empty, parent, empty, MsFlags::MS_PRIVATE, empty),
        );
    }
    check(
        report,
        Step::RootfsBind,
        0,
        mount_raw(
            &container.rootfs,
            &container.rootfs,
            empty,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            empty,
        ),
    );
    for (index, step) in container.mounts.iter().enumerate() {
        for dir in &step.create_dirs {
            // SAFETY: see the note above mount_raw.
            let rc = unsafe { libc::mkdir(dir.as_ptr(), 0o755) };
            if rc < 0 && last_errno() != libc::EEXIST {
                fail(report, Step::MountPoint, index, last_errno());
            }
        }
        if step.target_is_file {
            // SAFETY: see the note above mount_raw.
            let fd = unsafe {
                libc::open(
                    step.target.as_ptr(),
                    libc::O_CREAT | libc::O_CLOEXEC | libc::O_WRONLY,
                    0o644,
                )
            };
            if fd < 0 && last_errno() != libc::EISDIR {
                fail(report, Step::MountPoint, index, last_errno());
            }
            if fd >= 0 {
                // SAFETY: closing the descriptor just opened.
                unsafe { libc::close(fd) };
            }
        } else {
            // SAFETY: see the note above mount_raw.
            let rc = unsafe { libc::mkdir(step.target.as_ptr(), 0o755) };
            if rc < 0 && last_errno() != libc::EEXIST {
                fail(report, Step::MountPoint, index, last_errno());
            }
        }
        check(
            report,
            Step::Mount,
            index,
            mount_raw(
                &step.source,
                &step.target,
                &step.fstype,
                step.flags,
                &step.data,
            ),
        );
        if let Some(flags) = step.remount_flags {
            check(
                report,
                Step::Mount,
                index,
                mount_raw(empty, &step.target, empty, flags, empty),
            );
        }
        if !step.propagation.is_empty() {
            check(
                report,
                Step::Mount,
                index,
                mount_raw(empty, &step.target, empty, step.propagation, empty),
            );
        }
    }
    for (index, node) in container.devices.iter().enumerate() {
        // SAFETY: see the note above mount_raw.
        let rc = unsafe { libc::mknod(node.path.as_ptr(), node.mode, node.dev) };
        if rc < 0 && last_errno() != libc::EEXIST {
            fail(report, Step::Device, index, last_errno());
        }
        // SAFETY: see the note above mount_raw.
        check(report, Step::Device, index, unsafe {
            libc::chown(node.path.as_ptr(), node.uid, node.gid)
        });
        // SAFETY: see the note above mount_raw.
        check(report, Step::Device, index, unsafe {
            libc::chmod(node.path.as_ptr(), node.mode & 0o7777)
        });
    }
    for (target, link) in &container.dev_symlinks {
        // SAFETY: see the note above mount_raw.
        unsafe { libc::symlink(target.as_ptr(), link.as_ptr()) };
    }
}

fn pivot_into(container: &ContainerSetup, report: RawFd) {
    // SAFETY: see the note above mount_raw.
    check(report, Step::PivotRoot, 0, unsafe {
        libc::chdir(container.rootfs.as_ptr())
    });
    let dot = c".";
    // SAFETY: pivot_root(".", ".") stacks the old root under the new one.
    let rc = unsafe { libc::syscall(libc::SYS_pivot_root, dot.as_ptr(), dot.as_ptr()) };
    if rc < 0 && last_errno() == libc::EINVAL {
        // The VM's root is the initramfs, which cannot be pivoted away from: move the
        // container root over "/" and chroot into it (what Kata does for initrd guests).
        check(
            report,
            Step::PivotRoot,
            4,
            mount_raw(dot, c"/", c"", MsFlags::MS_MOVE, c""),
        );
        // SAFETY: see the note above mount_raw.
        check(report, Step::PivotRoot, 5, unsafe {
            libc::chroot(dot.as_ptr())
        });
        // SAFETY: see the note above mount_raw.
        check(report, Step::PivotRoot, 6, unsafe {
            libc::chdir(c"/".as_ptr())
        });
        apply_root_propagation(container, report);
        return;
    }
    check(report, Step::PivotRoot, 0, rc as libc::c_int);
    // Keep unmount events of the old root from reaching the agent's namespace.
    check(
        report,
        Step::PivotRoot,
        1,
        mount_raw(c"", dot, c"", MsFlags::MS_SLAVE | MsFlags::MS_REC, c""),
    );
    // SAFETY: see the note above mount_raw.
    check(report, Step::PivotRoot, 2, unsafe {
        libc::umount2(dot.as_ptr(), MntFlags::MNT_DETACH.bits())
    });
    // SAFETY: see the note above mount_raw.
    check(report, Step::PivotRoot, 3, unsafe {
        libc::chdir(c"/".as_ptr())
    });
    apply_root_propagation(container, report);
}

/// A shared rootfsPropagation (a bidirectional mount) applies to the container's own
/// root once it is "/" (runc does the same after its pivot).
fn apply_root_propagation(container: &ContainerSetup, report: RawFd) {
    if container.root_propagation.contains(MsFlags::MS_SHARED) {
        check(
            report,
            Step::Propagation,
            1,
            mount_raw(c"", c"/", c"", container.root_propagation, c""),
        );
    }
}

fn harden_paths(container: &ContainerSetup, report: RawFd) {
    let empty = c"";
    // Sysctls first, as runc does: /proc/sys is usually among the read-only paths below.
    for (index, (path, value)) in container.sysctls.iter().enumerate() {
        // SAFETY: see the note above mount_raw.
        let fd = unsafe { libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC) };
        check(report, Step::Sysctl, index, fd);
        // SAFETY: writing a CString's bytes to the descriptor just opened.
        let rc = unsafe { libc::write(fd, value.as_ptr().cast(), value.to_bytes().len()) };
        // SAFETY: closing the descriptor just opened.
        unsafe { libc::close(fd) };
        check(report, Step::Sysctl, index, rc as libc::c_int);
    }

    if container.readonly_rootfs {
        let flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
        check(
            report,
            Step::ReadonlyRoot,
            0,
            mount_raw(empty, c"/", empty, flags, empty),
        );
    }
    for (index, path) in container.readonly_paths.iter().enumerate() {
        let rc = mount_raw(path, path, empty, MsFlags::MS_BIND | MsFlags::MS_REC, empty);
        if rc < 0 {
            if last_errno() == libc::ENOENT {
                continue;
            }
            fail(report, Step::ReadonlyPath, index, last_errno());
        }
        let flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | MsFlags::MS_REC;
        check(
            report,
            Step::ReadonlyPath,
            index,
            mount_raw(empty, path, empty, flags, empty),
        );
    }
    for (index, path) in container.masked_paths.iter().enumerate() {
        let rc = mount_raw(c"/dev/null", path, empty, MsFlags::MS_BIND, empty);
        if rc < 0 {
            match last_errno() {
                libc::ENOENT => continue,
                libc::ENOTDIR => {
                    let rc = mount_raw(c"tmpfs", path, c"tmpfs", MsFlags::MS_RDONLY, empty);
                    check(report, Step::MaskedPath, index, rc);
                }
                errno => fail(report, Step::MaskedPath, index, errno),
            }
        }
    }
}

fn write_file(path: &CStr, value: &CStr) -> libc::c_int {
    // SAFETY: see the note above mount_raw.
    let fd = unsafe { libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC) };
    if fd < 0 {
        return fd;
    }
    // SAFETY: writing a CString's bytes to the descriptor just opened.
    let rc = unsafe { libc::write(fd, value.as_ptr().cast(), value.to_bytes().len()) };
    // SAFETY: closing the descriptor just opened.
    unsafe { libc::close(fd) };
    if rc < 0 { -1 } else { 0 }
}

/// Sends `fd` over the unix socket `socket` (SCM_RIGHTS) without allocating.
fn send_fd(socket: RawFd, fd: RawFd) -> libc::c_int {
    let mut byte = 0u8;
    let mut iov = libc::iovec {
        iov_base: (&mut byte as *mut u8).cast(),
        iov_len: 1,
    };
    let mut control = [0u64; 8];
    // SAFETY: msghdr is a plain C struct; all-zero is its empty value.
    let mut message: libc::msghdr = unsafe { std::mem::zeroed() };
    message.msg_iov = &mut iov;
    message.msg_iovlen = 1;
    message.msg_control = control.as_mut_ptr().cast();
    // SAFETY: CMSG_SPACE is a pure size computation.
    message.msg_controllen = unsafe { libc::CMSG_SPACE(std::mem::size_of::<RawFd>() as u32) } as _;
    // SAFETY: the control buffer is large enough for one descriptor and aligned for cmsghdr.
    unsafe {
        let header = libc::CMSG_FIRSTHDR(&message);
        (*header).cmsg_level = libc::SOL_SOCKET;
        (*header).cmsg_type = libc::SCM_RIGHTS;
        (*header).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<RawFd>() as u32) as _;
        std::ptr::write_unaligned(libc::CMSG_DATA(header).cast::<RawFd>(), fd);
    }
    // SAFETY: message points at live stack buffers.
    unsafe { libc::sendmsg(socket, &message, 0) as libc::c_int }
}

/// `send_fd` for unit tests elsewhere in the crate.
#[cfg(test)]
pub fn send_fd_for_tests(socket: RawFd, fd: RawFd) -> libc::c_int {
    send_fd(socket, fd)
}

/// Opens a pty in the (container's) /dev/pts, sends the master to the agent and returns
/// the slave.
fn open_container_pty(socket: RawFd, report: RawFd) -> RawFd {
    // SAFETY: see the note above mount_raw.
    let master = unsafe {
        libc::open(
            c"/dev/ptmx".as_ptr(),
            libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
        )
    };
    check(report, Step::Terminal, 2, master);
    let unlock: libc::c_int = 0;
    // SAFETY: TIOCSPTLCK reads one int.
    check(report, Step::Terminal, 3, unsafe {
        libc::ioctl(master, libc::TIOCSPTLCK, &unlock)
    });
    // SAFETY: TIOCGPTPEER returns a new descriptor for the slave.
    let slave = unsafe { libc::ioctl(master, libc::TIOCGPTPEER, libc::O_RDWR | libc::O_NOCTTY) };
    check(report, Step::Terminal, 4, slave);
    check(report, Step::Terminal, 5, send_fd(socket, master));
    // SAFETY: the agent has its own copy now.
    unsafe { libc::close(master) };
    slave
}

fn setup_stdio(process: &ProcessSetup, report: RawFd) {
    // SAFETY: setsid has no arguments.
    check(report, Step::Terminal, 0, unsafe { libc::setsid() });
    match &process.stdio {
        Some(ChildStdio::Pipes {
            stdin,
            stdout,
            stderr,
        }) => {
            for (index, (fd, target)) in [(stdin, 0), (stdout, 1), (stderr, 2)]
                .into_iter()
                .enumerate()
            {
                // SAFETY: dup2 onto the standard descriptors.
                check(report, Step::Stdio, index, unsafe {
                    libc::dup2(fd.as_raw_fd(), target)
                });
            }
        }
        Some(ChildStdio::Pty { socket }) => {
            let slave = open_container_pty(socket.as_raw_fd(), report);
            // SAFETY: the pty slave becomes the controlling terminal of the new session.
            check(report, Step::Terminal, 1, unsafe {
                libc::ioctl(slave, libc::TIOCSCTTY, 0)
            });
            if let Some((rows, cols)) = process.console_size {
                let size = libc::winsize {
                    ws_row: rows,
                    ws_col: cols,
                    ws_xpixel: 0,
                    ws_ypixel: 0,
                };
                // SAFETY: TIOCSWINSZ reads one winsize from the stack.
                unsafe { libc::ioctl(slave, libc::TIOCSWINSZ, &size) };
            }
            for target in 0..3 {
                // SAFETY: dup2 onto the standard descriptors.
                check(report, Step::Stdio, target as usize, unsafe {
                    libc::dup2(slave, target)
                });
            }
        }
        None => {}
    }
}

fn set_credentials(process: &ProcessSetup, report: RawFd) {
    for (index, (resource, soft, hard)) in process.rlimits.iter().enumerate() {
        let limit = libc::rlimit {
            rlim_cur: *soft,
            rlim_max: *hard,
        };
        // SAFETY: setrlimit reads one rlimit from the stack.
        check(report, Step::Rlimit, index, unsafe {
            libc::setrlimit(*resource as _, &limit)
        });
    }
    if let Some(caps) = &process.capabilities
        && let Err(errno) = capabilities::drop_bounding(caps)
    {
        fail(report, Step::Capabilities, 0, errno);
    }
    // Keep the permitted set across the uid change; capset below trims it.
    // SAFETY: prctl with integer arguments only.
    check(report, Step::Capabilities, 1, unsafe {
        libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0)
    });
    let groups: &[Gid] = &process.additional_gids;
    // SAFETY: Gid is a transparent gid_t; the slice outlives the call.
    let rc = unsafe { libc::setgroups(groups.len(), groups.as_ptr().cast()) };
    check(report, Step::Groups, 0, rc);
    // SAFETY: integer arguments only.
    check(report, Step::Gid, 0, unsafe {
        libc::setgid(process.gid.as_raw())
    });
    // SAFETY: integer arguments only.
    check(report, Step::Uid, 0, unsafe {
        libc::setuid(process.uid.as_raw())
    });
    if let Some(caps) = &process.capabilities
        && let Err(errno) = capabilities::apply(caps)
    {
        fail(report, Step::Capabilities, 2, errno);
    }
    if process.no_new_privs {
        // SAFETY: prctl with integer arguments only.
        check(report, Step::NoNewPrivs, 0, unsafe {
            libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
        });
    }
}

/// Installs the container's seccomp programs, if it has a profile.
fn apply_seccomp(process: &ProcessSetup, report: RawFd) {
    if let Some(plan) = &process.seccomp
        && let Err((index, errno)) = crate::seccomp::install(plan)
    {
        fail(report, Step::Seccomp, index, errno);
    }
}

/// A container's program must be runnable when it is created (as with runc), so that a
/// missing executable fails Create, not Start: the first candidate that exists decides,
/// as in the exec loop below.
fn check_executable(process: &ProcessSetup, report: RawFd) {
    for candidate in &process.exec_candidates {
        // SAFETY: stat is plain data; zeroed is a valid value.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: a NUL-terminated path and a stack buffer.
        if unsafe { libc::stat(candidate.as_ptr(), &mut st) } != 0 {
            match last_errno() {
                libc::ENOENT | libc::ENOTDIR => continue,
                errno => fail(report, Step::Exec, 0, errno),
            }
        }
        if st.st_mode & libc::S_IFMT != libc::S_IFREG {
            fail(report, Step::Exec, 0, libc::EACCES);
        }
        // SAFETY: a NUL-terminated path.
        if unsafe { libc::access(candidate.as_ptr(), libc::X_OK) } != 0 {
            fail(report, Step::Exec, 0, last_errno());
        }
        return;
    }
    fail(report, Step::Exec, 0, libc::ENOENT)
}

/// Gives the workload default signal handling: dispositions the agent ignores (SIGPIPE
/// in a Rust program) would otherwise survive exec, and so would a blocked mask.
fn reset_signals() {
    for signal in 1..libc::SIGRTMAX() {
        if signal != libc::SIGKILL && signal != libc::SIGSTOP {
            // SAFETY: restoring the default disposition; no handler runs in this child.
            unsafe { libc::signal(signal, libc::SIG_DFL) };
        }
    }
    // SAFETY: an empty set on the stack.
    unsafe {
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
    }
}

/// The forked child. Never returns.
fn child_main(
    container: Option<&ContainerSetup>,
    join: Option<&JoinNamespaces>,
    process: &ProcessSetup,
    report: RawFd,
    start: Option<RawFd>,
) -> ! {
    reset_signals();
    if let Some(procs) = &process.cgroup_procs {
        check(report, Step::Cgroup, 0, write_file(procs, c"0"));
    }
    if let Some(text) = &process.oom_score_adj {
        check(
            report,
            Step::OomScore,
            0,
            write_file(c"/proc/self/oom_score_adj", text),
        );
    }
    if let Some(join) = join {
        for (index, (fd, kind)) in join.others.iter().enumerate() {
            // SAFETY: setns on a namespace descriptor the plan owns.
            check(report, Step::Setns, index, unsafe {
                libc::setns(fd.as_raw_fd(), kind.bits())
            });
        }
        if let Some(root) = &join.root {
            // SAFETY: fchdir on a directory descriptor the plan owns.
            check(report, Step::Setns, 100, unsafe {
                libc::fchdir(root.as_raw_fd())
            });
            // SAFETY: see the note above mount_raw.
            check(report, Step::Setns, 101, unsafe {
                libc::chroot(c".".as_ptr())
            });
            // SAFETY: see the note above mount_raw.
            check(report, Step::Setns, 102, unsafe {
                libc::chdir(c"/".as_ptr())
            });
        }
    }
    if let Some(container) = container {
        // SAFETY: integer arguments only; the child is single-threaded.
        check(report, Step::Unshare, 0, unsafe {
            libc::unshare(container.unshare.bits())
        });
        if let Some(name) = &container.hostname {
            // SAFETY: a CString and its length.
            let rc = unsafe { libc::sethostname(name.as_ptr(), name.as_bytes().len()) };
            check(report, Step::Hostname, 0, rc);
        }
        setup_mounts(container, report);
        pivot_into(container, report);
        harden_paths(container, report);
    }
    setup_stdio(process, report);
    // SAFETY: see the note above mount_raw.
    let rc = unsafe { libc::mkdir(process.cwd.as_ptr(), 0o755) };
    if rc < 0 && last_errno() != libc::EEXIST {
        fail(report, Step::Cwd, 0, last_errno());
    }
    if !process.no_new_privs {
        // Without no_new_privs installing a filter takes CAP_SYS_ADMIN: before the
        // credentials drop it.
        apply_seccomp(process, report);
    }
    set_credentials(process, report);
    // SAFETY: see the note above mount_raw.
    check(report, Step::Cwd, 1, unsafe {
        libc::chdir(process.cwd.as_ptr())
    });
    if let Some(start) = start {
        check_executable(process, report);
        let ready = encode(0, 0, 0);
        // SAFETY: a stack buffer to our pipe.
        unsafe { libc::write(report, ready.as_ptr().cast(), ready.len()) };
        let mut byte = 0u8;
        // SAFETY: one byte into a stack variable.
        let n = unsafe { libc::read(start, (&mut byte as *mut u8).cast(), 1) };
        if n != 1 {
            // The agent dropped the container before starting it.
            // SAFETY: exiting the child.
            unsafe { libc::_exit(1) };
        }
    }
    // Nothing of the agent's may leak into the workload.
    // SAFETY: close_range with integer arguments only; failure leaves O_CLOEXEC fds.
    unsafe {
        libc::syscall(
            libc::SYS_close_range,
            3u32,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    let mut argv: [*const libc::c_char; 256] = [std::ptr::null(); 256];
    for (slot, arg) in argv.iter_mut().zip(process.argv.iter().take(255)) {
        *slot = arg.as_ptr();
    }
    let mut envp: [*const libc::c_char; 1024] = [std::ptr::null(); 1024];
    for (slot, var) in envp.iter_mut().zip(process.envp.iter().take(1023)) {
        *slot = var.as_ptr();
    }
    if process.no_new_privs {
        // As late as possible: only execve runs under the filter.
        apply_seccomp(process, report);
    }
    let mut errno = libc::ENOENT;
    for candidate in &process.exec_candidates {
        // SAFETY: NUL-terminated argv/envp arrays of CStrings that outlive the call.
        unsafe { libc::execve(candidate.as_ptr(), argv.as_ptr(), envp.as_ptr()) };
        let this = last_errno();
        if this != libc::ENOENT && this != libc::ENOTDIR {
            errno = this;
            break;
        }
    }
    fail(report, Step::Exec, 0, errno)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_records_round_trip() {
        let (read, write) = nix::unistd::pipe().unwrap();
        let mut writer = std::fs::File::from(write);
        use std::io::Write;
        writer.write_all(&encode(0, 0, 0)).unwrap();
        writer
            .write_all(&encode(Step::Mount as u32, 3, libc::ENOENT))
            .unwrap();
        drop(writer);
        let mut reader = std::fs::File::from(read);
        assert_eq!(read_report(&mut reader), Report::Ready);
        assert_eq!(
            read_report(&mut reader),
            Report::Failed(ChildFailure {
                step: Step::Mount,
                index: 3,
                errno: Errno::ENOENT
            })
        );
        assert_eq!(read_report(&mut reader), Report::Closed);
    }

    #[test]
    fn every_step_decodes() {
        for value in 1..=26 {
            assert_eq!(Step::from_u32(value).unwrap() as u32, value);
        }
        assert_eq!(Step::from_u32(99), None);
    }
}
