//! PID 1 duties: the base mounts of a booted VM, and powering it off at the end.

use std::path::Path;

use nix::mount::MsFlags;

/// One mount PID 1 makes: (source, target, fstype, flags, data).
type BaseMount = (
    &'static str,
    &'static str,
    &'static str,
    MsFlags,
    &'static str,
);

const NOSUID_NODEV_NOEXEC: MsFlags = MsFlags::MS_NOSUID
    .union(MsFlags::MS_NODEV)
    .union(MsFlags::MS_NOEXEC);

const BASE_MOUNTS: [BaseMount; 7] = [
    ("proc", "/proc", "proc", NOSUID_NODEV_NOEXEC, ""),
    ("sysfs", "/sys", "sysfs", NOSUID_NODEV_NOEXEC, ""),
    (
        "devtmpfs",
        "/dev",
        "devtmpfs",
        MsFlags::MS_NOSUID,
        "mode=0755",
    ),
    (
        "devpts",
        "/dev/pts",
        "devpts",
        MsFlags::MS_NOSUID.union(MsFlags::MS_NOEXEC),
        "newinstance,ptmxmode=0666,mode=0620",
    ),
    (
        "shm",
        "/dev/shm",
        "tmpfs",
        MsFlags::MS_NOSUID.union(MsFlags::MS_NODEV),
        "mode=1777",
    ),
    (
        "tmpfs",
        "/run",
        "tmpfs",
        MsFlags::MS_NOSUID.union(MsFlags::MS_NODEV),
        "mode=0755",
    ),
    (
        "cgroup2",
        "/sys/fs/cgroup",
        "cgroup2",
        NOSUID_NODEV_NOEXEC,
        "",
    ),
];

/// Mounts proc, sys, dev, devpts, shm, run and cgroup2 (already-mounted ones are kept),
/// points /dev/ptmx at the devpts instance and sets PATH.
pub fn mount_base() -> Result<(), String> {
    for (source, target, fstype, flags, data) in BASE_MOUNTS {
        std::fs::create_dir_all(target).map_err(|e| format!("creating {target}: {e}"))?;
        let data = (!data.is_empty()).then_some(data);
        match nix::mount::mount(Some(source), target, Some(fstype), flags, data) {
            Ok(()) | Err(nix::errno::Errno::EBUSY) => {}
            Err(e) => return Err(format!("mounting {fstype} on {target}: {e}")),
        }
    }
    let ptmx = Path::new("/dev/ptmx");
    let _ = std::fs::remove_file(ptmx);
    std::os::unix::fs::symlink("pts/ptmx", ptmx).map_err(|e| format!("linking /dev/ptmx: {e}"))?;
    // SAFETY: still single-threaded: nothing else reads the environment yet.
    unsafe { std::env::set_var("PATH", "/bin:/sbin:/usr/bin:/usr/sbin") };
    Ok(())
}

/// Syncs and ends the VM: power-off (SBI SRST) on riscv64; on x86_64 a reboot, which
/// Dragonball turns into the end of the VM just as it does an ACPI power-off, and which
/// also works with a guest kernel built without ACPI. Never returns.
pub fn power_off() -> ! {
    nix::unistd::sync();
    #[cfg(target_arch = "x86_64")]
    let how = nix::sys::reboot::RebootMode::RB_AUTOBOOT;
    #[cfg(not(target_arch = "x86_64"))]
    let how = nix::sys::reboot::RebootMode::RB_POWER_OFF;
    let _ = nix::sys::reboot::reboot(how);
    // reboot(2) only fails without CAP_SYS_BOOT; PID 1 exiting panics the kernel, which
    // the VMM also treats as the end of the VM.
    std::process::exit(1)
}
