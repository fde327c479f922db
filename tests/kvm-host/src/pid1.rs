//! Duties of a tiny PID 1 inside a guest or an L1 test host: mount the kernel
//! filesystems, report uptime, reap children and end the VM.

use std::path::Path;

use nix::errno::Errno;
use nix::mount::{MsFlags, mount};

/// A mount that failed, naming what and where.
#[derive(Debug, thiserror::Error)]
#[error("mounting {fstype} at {target}: {errno}")]
pub struct MountError {
    /// Filesystem type.
    pub fstype: String,
    /// Mount point.
    pub target: String,
    /// The error from mount(2).
    pub errno: Errno,
}

/// Mounts `fstype` from `source` at `target` (creating it), with `data` options.
pub fn mount_fs(
    source: &str,
    target: &Path,
    fstype: &str,
    flags: MsFlags,
    data: Option<&str>,
) -> Result<(), MountError> {
    let err = |errno| MountError {
        fstype: fstype.to_string(),
        target: target.display().to_string(),
        errno,
    };
    if !target.exists() {
        std::fs::create_dir_all(target)
            .map_err(|e| err(Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO))))?;
    }
    mount(Some(source), target, Some(fstype), flags, data).map_err(err)
}

/// Mounts proc, sysfs, devtmpfs, devpts, cgroup2 and tmpfs (/tmp, /run) under `root`.
pub fn mount_kernel_filesystems(root: &Path) -> Result<(), MountError> {
    let nodev = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    mount_fs("proc", &root.join("proc"), "proc", nodev, None)?;
    mount_fs("sysfs", &root.join("sys"), "sysfs", nodev, None)?;
    mount_fs(
        "devtmpfs",
        &root.join("dev"),
        "devtmpfs",
        MsFlags::MS_NOSUID,
        None,
    )?;
    mount_fs(
        "devpts",
        &root.join("dev/pts"),
        "devpts",
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("ptmxmode=0666"),
    )?;
    mount_fs(
        "cgroup2",
        &root.join("sys/fs/cgroup"),
        "cgroup2",
        nodev,
        None,
    )?;
    mount_fs(
        "tmpfs",
        &root.join("tmp"),
        "tmpfs",
        MsFlags::MS_NOSUID,
        None,
    )?;
    mount_fs(
        "tmpfs",
        &root.join("run"),
        "tmpfs",
        MsFlags::MS_NOSUID,
        Some("mode=0755"),
    )?;
    Ok(())
}

/// Seconds since boot from /proc/uptime, or 0 if unreadable.
pub fn uptime() -> f64 {
    std::fs::read_to_string("/proc/uptime")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0)
}

/// Reaps every exited child without blocking; returns the exit status of `pid` if it
/// was among them (code, or 128 + signal).
pub fn reap(pid: nix::unistd::Pid) -> Option<i32> {
    use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
    let mut found = None;
    loop {
        match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(p, code)) if p == pid => found = Some(code),
            Ok(WaitStatus::Signaled(p, sig, _)) if p == pid => found = Some(128 + sig as i32),
            Ok(WaitStatus::StillAlive) | Err(_) => return found,
            Ok(_) => {}
        }
    }
}

/// Flushes filesystems and ends the VM: power-off on riscv64 (SBI SRST); on x86_64 a
/// reboot, which the VMMs treat as the end of the run (it needs no ACPI, which the L1 test
/// hosts do not have).
pub fn end_vm() -> ! {
    end_vm_by(cfg!(not(target_arch = "x86_64")))
}

/// Flushes filesystems and ends the VM by power-off (`power_off`) or by reboot.
pub fn end_vm_by(power_off: bool) -> ! {
    // Console output is written by the tty layer asynchronously: let it drain first.
    let _ = nix::sys::termios::tcdrain(std::io::stdout());
    nix::unistd::sync();
    let how = if power_off {
        nix::sys::reboot::RebootMode::RB_POWER_OFF
    } else {
        nix::sys::reboot::RebootMode::RB_AUTOBOOT
    };
    let err = nix::sys::reboot::reboot(how);
    eprintln!("end_vm: reboot(2) failed: {err:?}");
    loop {
        std::thread::sleep(std::time::Duration::from_secs(3600));
    }
}
