//! PID 1 of an emulated KVM test host (L1): mounts the kernel filesystems and the 9p
//! shares described by the job, runs the command, prints its exit status on the console
//! and ends the VM.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};
use kvm_host::job::{self, Job};
use kvm_host::pid1;
use nix::mount::MsFlags;

fn mount_9p(tag: &str, target: &Path, read_only: bool) -> Result<()> {
    let mut flags = MsFlags::empty();
    // The read-only root is never written from here; loose caching makes it fast.
    let cache = if read_only {
        flags |= MsFlags::MS_RDONLY;
        "loose"
    } else {
        "mmap"
    };
    let opts = format!("trans=virtio,version=9p2000.L,msize=512000,cache={cache}");
    pid1::mount_fs(tag, target, "9p", flags, Some(&opts))
        .with_context(|| format!("9p share '{tag}'"))?;
    Ok(())
}

/// Sets up the filesystem view of the job; returns the root the command runs in.
fn prepare(job: &Job) -> Result<PathBuf> {
    pid1::mount_kernel_filesystems(Path::new("/"))?;
    // Like any host, the test host has its loopback up (containerd's CRI streaming
    // server listens on 127.0.0.1).
    kvm_host::netcfg::link_up("lo").context("bringing lo up")?;
    let root = match &job.root {
        Some(tag) => {
            let root = PathBuf::from("/host");
            mount_9p(tag, &root, true)?;
            pid1::mount_kernel_filesystems(&root)?;
            root
        }
        None => PathBuf::from("/"),
    };
    let inside = |p: &Path| root.join(p.strip_prefix("/").unwrap_or(p));
    for t in &job.tmpfs {
        let target = inside(t);
        if job.root.is_some() && !target.is_dir() {
            // A read-only root cannot grow new mount points.
            eprintln!(
                "kvm-host-init: no {} in the root; skipping its tmpfs",
                t.display()
            );
            continue;
        }
        pid1::mount_fs("tmpfs", &target, "tmpfs", MsFlags::MS_NOSUID, None)?;
    }
    for m in &job.mounts {
        mount_9p(&m.tag, &inside(&m.path), m.read_only)?;
    }
    if job.root.is_none() {
        // The files every host has and containerd's CRI copies into each pod.
        std::fs::create_dir_all("/etc")?;
        for (file, text) in [
            ("/etc/hosts", "127.0.0.1 localhost\n::1 localhost\n"),
            ("/etc/resolv.conf", "# no name servers in a KVM test host\n"),
        ] {
            if !Path::new(file).exists() {
                std::fs::write(file, text).with_context(|| format!("writing {file}"))?;
            }
        }
    }
    if Path::new("/bin/busybox").exists() && job.root.is_none() {
        let status = Command::new("/bin/busybox")
            .args(["--install", "-s", "/bin"])
            .status()?;
        anyhow::ensure!(status.success(), "busybox --install failed: {status}");
    }
    Ok(root)
}

fn run_command(job: &Job, root: &Path) -> Result<i32> {
    let command = std::fs::read_to_string(job::COMMAND_PATH)
        .with_context(|| format!("reading {}", job::COMMAND_PATH))?;
    let mut cmd = Command::new("/bin/sh");
    cmd.arg("-c").arg(command).env_clear();
    cmd.env(
        "PATH",
        "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    )
    .env("HOME", "/root")
    .env("TERM", "dumb");
    cmd.envs(job.env.iter().cloned());
    let root = root.to_path_buf();
    let cwd = job.cwd.clone().unwrap_or_else(|| "/".into());
    // SAFETY: the closure only calls async-signal-safe syscalls (chroot, chdir) between
    // fork and exec.
    unsafe {
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(move || {
            nix::unistd::chroot(&root)?;
            nix::unistd::chdir(&cwd)?;
            Ok(())
        });
    }
    // The marker goes out before the command can print anything.
    println!("\n{} uptime={:.2}", job::BEGIN_MARKER, pid1::uptime());
    let child = cmd.spawn().context("starting /bin/sh")?;
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    loop {
        if let Some(code) = pid1::reap(pid) {
            return Ok(code);
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

fn main() {
    let result = std::fs::read_to_string(job::JOB_PATH)
        .context("reading the job")
        .and_then(|text| Ok(Job::parse(&text)?))
        .and_then(|job| {
            let root = prepare(&job)?;
            run_command(&job, &root)
        });
    let status = match result {
        Ok(code) => code,
        Err(e) => {
            println!("\nkvm-host-init: {e:#}");
            // The command never ran; 125 is "the runner failed", as in env(1)/docker.
            125
        }
    };
    println!(
        "\n{} status={status} uptime={:.2}",
        job::EXIT_MARKER,
        pid1::uptime()
    );
    pid1::end_vm();
}
