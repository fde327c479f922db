//! Host side of a KVM test host: runs a shell command where real KVM exists.
//!
//! With real KVM for the requested architecture the command runs natively. Otherwise an
//! L1 Linux boots under QEMU TCG (riscv64 with H + AIA, or x86_64 with emulated SVM +
//! NPT), mounts the shares over virtio-9p at the same paths, runs the command with
//! `kvm-host-init` as PID 1 and prints its exit status on the console; the harness turns
//! that into an [`Outcome`] and enforces a timeout.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use rootfs_builder::{Archive, Compression};

use crate::Arch;
use crate::artifacts::{self, MissingArtifact};
use crate::job::{self, Job, Mount};

/// How the command runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Directly on this machine (it has real KVM for the architecture).
    Native,
    /// Inside an emulated L1 that has KVM.
    Emulated,
}

/// A host directory made visible to the command at the same path.
#[derive(Debug, Clone)]
pub struct Share {
    /// Absolute host path.
    pub path: PathBuf,
    /// Whether the command may only read it.
    pub read_only: bool,
}

/// One command to run in a KVM test host.
#[derive(Debug, Clone)]
pub struct Invocation {
    /// Which KVM architecture the command needs.
    pub arch: Arch,
    /// Shell command (`/bin/sh -c`).
    pub command: String,
    /// Directories to share (emulated mode; native mode sees everything).
    pub shares: Vec<Share>,
    /// Working directory.
    pub cwd: Option<PathBuf>,
    /// Extra environment.
    pub env: Vec<(String, String)>,
    /// Whole-run limit, boot included.
    pub timeout: Duration,
    /// L1 memory.
    pub memory_mib: u32,
    /// L1 vCPUs (riscv64 virt; x86_64 microvm stays at 1).
    pub cpus: u32,
    /// Copy the command's output to our stdout while it runs.
    pub echo: bool,
    /// Force a mode instead of detecting it.
    pub mode: Option<Mode>,
    /// riscv64 L1 with the AIA (in-kernel irqchip for L2); `false` gives L1 a PLIC, so
    /// its KVM has no irqchip (to exercise userspace interrupt controllers).
    pub riscv_aia: bool,
}

/// What came out of a run.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Where the command ran.
    pub mode: Mode,
    /// Exit status: code, or 128 + signal.
    pub exit_code: i32,
    /// What the command printed (stdout and stderr interleaved).
    pub output: String,
    /// The whole L1 console (emulated mode), for diagnosis.
    pub console: String,
    /// L1 uptime when the command started (emulated mode).
    pub l1_uptime_at_start: Option<f64>,
    /// Wall time of the whole run.
    pub wall: Duration,
}

/// Why a run could not produce an exit status.
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    /// An artifact is missing.
    #[error(transparent)]
    Missing(#[from] MissingArtifact),
    /// QEMU or the shell could not be started.
    #[error("starting {program}: {source} (is it installed? run `make setup`)")]
    Spawn {
        /// The program.
        program: String,
        /// The error.
        source: std::io::Error,
    },
    /// The run exceeded its time limit and was killed.
    #[error("timed out after {:?}; last console lines:\n{tail}", .after)]
    Timeout {
        /// The limit.
        after: Duration,
        /// Tail of the console.
        tail: String,
    },
    /// L1 ended without reporting an exit status.
    #[error(
        "the {arch} test host ended without reporting the command's exit status ({status}); last console lines:\n{tail}"
    )]
    NoExitStatus {
        /// Architecture.
        arch: Arch,
        /// How QEMU ended.
        status: String,
        /// Tail of the console.
        tail: String,
    },
    /// A share or the working directory is not usable.
    #[error("{0}")]
    Invalid(String),
    /// Local I/O failed (temp files, pipes).
    #[error("kvm-host I/O: {0}")]
    Io(#[from] std::io::Error),
}

impl Invocation {
    /// A command for `arch` with the default shares (project root read-write, artifact
    /// cache read-only), the project root as cwd, and a 10-minute limit.
    pub fn new(arch: Arch, command: impl Into<String>) -> Self {
        let mut shares = vec![Share {
            path: artifacts::project_root(),
            read_only: false,
        }];
        let cache = artifacts::cache_dir();
        if cache.is_dir() {
            shares.push(Share {
                path: cache,
                read_only: true,
            });
        }
        Invocation {
            arch,
            command: command.into(),
            shares,
            cwd: Some(artifacts::project_root()),
            env: Vec::new(),
            timeout: Duration::from_secs(600),
            memory_mib: 2048,
            cpus: 2,
            echo: false,
            mode: None,
            riscv_aia: true,
        }
    }
}

/// Whether this machine itself has usable KVM for `arch` (not kvm-pvm, which cannot run
/// stock guests). `KATA_KVM_HOST=native|emulated` overrides the detection.
pub fn detect_mode(arch: Arch) -> Mode {
    match std::env::var("KATA_KVM_HOST").as_deref() {
        Ok("native") => return Mode::Native,
        Ok("emulated") => return Mode::Emulated,
        _ => {}
    }
    if Arch::native() != Some(arch) || !Path::new("/dev/kvm").exists() {
        return Mode::Emulated;
    }
    if Path::new("/sys/module/kvm_pvm").exists() {
        return Mode::Emulated;
    }
    let hw_virt = match arch {
        Arch::X86_64 => std::fs::read_to_string("/proc/cpuinfo")
            .map(|c| {
                c.lines()
                    .filter(|l| l.starts_with("flags"))
                    .any(|l| l.split_whitespace().any(|f| f == "vmx" || f == "svm"))
            })
            .unwrap_or(false),
        Arch::Riscv64 => true,
    };
    if hw_virt {
        Mode::Native
    } else {
        Mode::Emulated
    }
}

/// Runs the invocation and returns its outcome.
pub fn run(inv: &Invocation) -> Result<Outcome, HarnessError> {
    for share in &inv.shares {
        if !share.path.is_absolute() || !share.path.is_dir() {
            return Err(HarnessError::Invalid(format!(
                "share '{}' must be an existing absolute directory",
                share.path.display()
            )));
        }
    }
    match inv.mode.unwrap_or_else(|| detect_mode(inv.arch)) {
        Mode::Native => run_native(inv),
        Mode::Emulated => run_emulated(inv),
    }
}

/// Lines of a child's output, read on a thread.
fn spawn_line_reader(stream: impl Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stream);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match reader.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => return,
                Ok(_) => {
                    let line = String::from_utf8_lossy(&buf);
                    let line = line.trim_end_matches(['\n', '\r']).replace('\r', "");
                    if tx.send(line).is_err() {
                        return;
                    }
                }
            }
        }
    });
    rx
}

fn tail(lines: &[String], n: usize) -> String {
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn kill(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

fn run_native(inv: &Invocation) -> Result<Outcome, HarnessError> {
    let start = Instant::now();
    let (reader, writer) = std::io::pipe()?;
    let mut cmd = Command::new("/bin/sh");
    cmd.arg("-c")
        .arg(&inv.command)
        .stdin(Stdio::null())
        .stdout(writer.try_clone()?)
        .stderr(writer)
        .envs(inv.env.iter().cloned());
    if let Some(cwd) = &inv.cwd {
        cmd.current_dir(cwd);
    }
    let mut child = cmd.spawn().map_err(|source| HarnessError::Spawn {
        program: "/bin/sh".into(),
        source,
    })?;
    drop(cmd);
    let lines = spawn_line_reader(reader);
    let mut output = Vec::new();
    let deadline = start + inv.timeout;
    loop {
        match lines.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(line) => {
                echo(inv, &line);
                output.push(line);
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                kill(&mut child);
                return Err(HarnessError::Timeout {
                    after: inv.timeout,
                    tail: tail(&output, 40),
                });
            }
        }
    }
    let status = child.wait()?;
    use std::os::unix::process::ExitStatusExt;
    let exit_code = status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(-1);
    Ok(Outcome {
        mode: Mode::Native,
        exit_code,
        output: output.join("\n"),
        console: String::new(),
        l1_uptime_at_start: None,
        wall: start.elapsed(),
    })
}

fn echo(inv: &Invocation, line: &str) {
    if inv.echo {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
    }
}

/// A temporary directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(prefix: &str) -> std::io::Result<Self> {
        use std::sync::atomic::{AtomicU32, Ordering};
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("{prefix}-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&path)?;
        Ok(TempDir(path))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// What an L1 boot is made of: its initrd (init + job + command) and the tagged shares.
struct L1Boot {
    initrd: Vec<u8>,
    shares: Vec<(String, Share)>,
}

/// The job, command and initrd for an L1 run.
fn build_l1_initrd(inv: &Invocation, l1: &artifacts::L1Artifacts) -> Result<L1Boot, HarnessError> {
    let mut job = Job {
        cwd: inv.cwd.clone(),
        env: inv.env.clone(),
        ..Job::default()
    };
    let mut tagged = Vec::new();
    if inv.arch == Arch::X86_64 {
        // x86_64 L1 uses this machine's own userland, read-only.
        job.root = Some("hostroot".into());
        tagged.push((
            "hostroot".to_string(),
            Share {
                path: "/".into(),
                read_only: true,
            },
        ));
        // /var/lib/cni: CNI's result cache and host-local's leases (`make setup` creates
        // the mount point).
        job.tmpfs = ["/tmp", "/run", "/var/tmp", "/root", "/var/lib/cni"]
            .iter()
            .map(PathBuf::from)
            .collect();
    }
    for (i, share) in inv.shares.iter().enumerate() {
        let tag = format!("share{i}");
        job.mounts.push(Mount {
            tag: tag.clone(),
            path: share.path.clone(),
            read_only: share.read_only,
        });
        tagged.push((tag, share.clone()));
    }
    job.env.push((
        "KATA_KVM_HOST".into(),
        "native".into(), // inside L1, KVM is real
    ));

    let mut archive = Archive::new();
    let read = |p: &Path| {
        std::fs::read(p)
            .map_err(|e| HarnessError::Invalid(format!("reading '{}': {e}", p.display())))
    };
    archive
        .add_file("init", 0o755, read(&l1.init)?)
        .and_then(|a| a.add_file(job::JOB_PATH, 0o644, job.render().into_bytes()))
        .and_then(|a| a.add_file(job::COMMAND_PATH, 0o644, inv.command.clone().into_bytes()))
        .and_then(|a| a.add_dir("tmp", 0o1777))
        .map_err(|e| HarnessError::Invalid(e.to_string()))?;
    if let Some(busybox) = &l1.busybox {
        archive
            .add_file("bin/busybox", 0o755, read(busybox)?)
            .and_then(|a| a.add_symlink("bin/sh", "busybox"))
            .map_err(|e| HarnessError::Invalid(e.to_string()))?;
    }
    let bytes = archive
        .to_bytes(Compression::None)
        .map_err(|e| HarnessError::Invalid(e.to_string()))?;
    Ok(L1Boot {
        initrd: bytes,
        shares: tagged,
    })
}

/// The host TSC frequency in kHz, which an x86_64 guest under TCG needs
/// (`tsc_early_khz=`): calibrating against the emulated PIT fails on a loaded host, and
/// the kernel then hangs in early boot.
pub fn host_tsc_khz() -> Option<u64> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    let mhz: f64 = cpuinfo
        .lines()
        .find(|l| l.starts_with("cpu MHz"))?
        .split(':')
        .nth(1)?
        .trim()
        .parse()
        .ok()?;
    Some((mhz * 1000.0) as u64)
}

fn qemu_command(inv: &Invocation, l1: &artifacts::L1Artifacts, initrd: &Path) -> Command {
    let mem = format!("{}M", inv.memory_mib);
    let mut cmd;
    match inv.arch {
        Arch::Riscv64 => {
            cmd = Command::new("qemu-system-riscv64");
            let machine = if inv.riscv_aia {
                "virt,aia=aplic-imsic,aia-guests=3"
            } else {
                "virt"
            };
            cmd.args(["-M", machine, "-cpu", "rv64"])
                .args(["-smp", &inv.cpus.max(1).to_string(), "-m", &mem])
                .args(["-bios", "default"])
                .arg("-append")
                .arg("console=ttyS0 earlycon=sbi panic=-1 quiet rdinit=/init");
        }
        Arch::X86_64 => {
            cmd = Command::new("qemu-system-x86_64");
            // A periodic tick (no high-res timers, no NOHZ): under TCG with nested SVM an
            // L1 has been seen to lose a one-shot LAPIC timer interrupt and then never
            // wake again (the whole test host stalled); a periodic tick survives a lost one.
            // acpi=off: the guest kernel (also L1's) has ACPI for Dragonball's power-off;
            // the L1 machine has no tables and needs none.
            let mut append =
                String::from("console=ttyS0 reboot=t panic=-1 quiet highres=off nohz=off acpi=off");
            if let Some(khz) = host_tsc_khz() {
                append += &format!(" tsc_early_khz={khz}");
            }
            cmd.args([
                "-M",
                "microvm,acpi=off",
                "-accel",
                "tcg",
                "-cpu",
                "qemu64,+svm,+npt",
            ])
            .args(["-smp", "1", "-m", &mem])
            .arg("-append")
            .arg(append);
        }
    }
    cmd.args(["-nodefaults", "-no-user-config", "-display", "none"])
        .args(["-serial", "stdio", "-monitor", "none", "-no-reboot"])
        .arg("-kernel")
        .arg(&l1.kernel)
        .arg("-initrd")
        .arg(initrd);
    cmd
}

fn run_emulated(inv: &Invocation) -> Result<Outcome, HarnessError> {
    let start = Instant::now();
    let l1 = artifacts::l1(inv.arch)?;
    let tmp = TempDir::new("kvm-host")?;
    let boot = build_l1_initrd(inv, &l1)?;
    let initrd = tmp.0.join("l1-initrd.cpio");
    std::fs::write(&initrd, &boot.initrd)?;

    let mut cmd = qemu_command(inv, &l1, &initrd);
    for (i, (tag, share)) in boot.shares.iter().enumerate() {
        let ro = if share.read_only { ",readonly=on" } else { "" };
        cmd.arg("-fsdev")
            .arg(format!(
                "local,id=fs{i},path={},security_model=none{ro}",
                share.path.display()
            ))
            .arg("-device")
            .arg(format!("virtio-9p-device,fsdev=fs{i},mount_tag={tag}"));
    }
    let program = cmd.get_program().to_string_lossy().into_owned();
    let (reader, writer) = std::io::pipe()?;
    cmd.stdin(Stdio::null())
        .stdout(writer.try_clone()?)
        .stderr(writer);
    let mut child = cmd
        .spawn()
        .map_err(|source| HarnessError::Spawn { program, source })?;
    drop(cmd);
    let lines = spawn_line_reader(reader);

    let mut console = Vec::new();
    let mut output = Vec::new();
    let mut in_command = false;
    let mut exit_code = None;
    let mut l1_uptime_at_start = None;
    let mut deadline = start + inv.timeout;
    loop {
        let line = match lines.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(line) => line,
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) if exit_code.is_some() => {
                // The command finished but L1 did not shut down: stop it ourselves.
                kill(&mut child);
                break;
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                kill(&mut child);
                return Err(HarnessError::Timeout {
                    after: inv.timeout,
                    tail: tail(&console, 60),
                });
            }
        };
        let trimmed = line.trim_start();
        if trimmed.starts_with(job::BEGIN_MARKER) {
            in_command = true;
            l1_uptime_at_start = job::parse_marker_uptime(trimmed);
        } else if let Some(code) = job::parse_exit_marker(trimmed) {
            in_command = false;
            exit_code = Some(code);
            deadline = deadline.min(Instant::now() + Duration::from_secs(30));
        } else if in_command {
            echo(inv, &line);
            output.push(line.clone());
        }
        console.push(line);
    }
    // The console closed: QEMU is exiting (L1 powered off or rebooted).
    let status = child.wait()?;
    match exit_code {
        Some(exit_code) => Ok(Outcome {
            mode: Mode::Emulated,
            exit_code,
            output: output.join("\n"),
            console: console.join("\n"),
            l1_uptime_at_start,
            wall: start.elapsed(),
        }),
        None => Err(HarnessError::NoExitStatus {
            arch: inv.arch,
            status: status.to_string(),
            tail: tail(&console, 60),
        }),
    }
}
