//! Boot benchmark of the `dragonball` CLI, run where KVM is (the riscv64 test host):
//! time from process start, and from StartMicroVm, to the guest's marker line and to its
//! power-off; medians of repeated runs; and the VMM's own RSS excluding guest memory.
//!
//! With `--qemu PATH` (x86_64), QEMU's microvm with KVM boots the same kernel, initrd,
//! vCPUs and memory in alternating runs, and the ratio is printed.
//!
//! ```text
//! boot-bench --dragonball PATH --kernel PATH --initrd PATH [--runs N] [--vcpus N] [--mem MIB]
//!            [--qemu PATH]
//! ```

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

const MARKER: &str = "KATA-RV-TEST-INIT: booted";

struct Args {
    dragonball: String,
    kernel: String,
    initrd: String,
    runs: usize,
    vcpus: String,
    mem: String,
    qemu: Option<String>,
}

fn parse() -> Result<Args> {
    let mut a = Args {
        dragonball: String::new(),
        kernel: String::new(),
        initrd: String::new(),
        runs: 10,
        vcpus: "1".into(),
        mem: "128".into(),
        qemu: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let v = it.next().with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--dragonball" => a.dragonball = v,
            "--kernel" => a.kernel = v,
            "--initrd" => a.initrd = v,
            "--runs" => a.runs = v.parse().context("--runs")?,
            "--vcpus" => a.vcpus = v,
            "--mem" => a.mem = v,
            "--qemu" => a.qemu = Some(v),
            other => bail!("unknown flag {other}"),
        }
    }
    if a.dragonball.is_empty() || a.kernel.is_empty() || a.initrd.is_empty() {
        bail!(
            "usage: boot-bench --dragonball PATH --kernel PATH --initrd PATH [--runs N] [--vcpus N] [--mem MIB]"
        );
    }
    Ok(a)
}

/// Guest command line for this architecture (x86_64 guests end with a triple fault).
fn guest_cmdline(extra: &str) -> String {
    let base = if cfg!(target_arch = "x86_64") {
        "console=ttyS0 reboot=t panic=-1 quiet"
    } else {
        "console=ttyS0 panic=-1 quiet"
    };
    format!("{base} {extra}").trim().to_string()
}

/// QEMU microvm with KVM, same kernel/initrd/vCPUs/memory: (start → marker, start → exit).
fn qemu_run(a: &Args, qemu: &str) -> Result<(f64, f64)> {
    let t0 = Instant::now();
    let mut child = Command::new(qemu)
        .args(["-M", "microvm,acpi=off", "-enable-kvm", "-cpu", "host"])
        .args(["-smp", &a.vcpus, "-m", &a.mem])
        .args([
            "-nodefaults",
            "-no-user-config",
            "-display",
            "none",
            "-serial",
            "stdio",
            "-no-reboot",
        ])
        .args([
            "-kernel",
            &a.kernel,
            "-initrd",
            &a.initrd,
            "-append",
            &guest_cmdline(""),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("spawning qemu")?;
    let stdout = child.stdout.take().context("stdout")?;
    let mut marker_ms = None;
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        if marker_ms.is_none() && line.contains(MARKER) {
            marker_ms = Some(t0.elapsed().as_secs_f64() * 1e3);
        }
    }
    child.wait()?;
    Ok((
        marker_ms.context("no marker from the QEMU guest")?,
        t0.elapsed().as_secs_f64() * 1e3,
    ))
}

fn command(a: &Args, cmdline: &str) -> Command {
    let mut c = Command::new(&a.dragonball);
    c.args([
        "--kernel", &a.kernel, "--initrd", &a.initrd, "--vcpus", &a.vcpus, "--mem", &a.mem,
    ])
    .args(["--cmdline", cmdline])
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    c
}

/// One boot: (process start → marker, StartMicroVm → marker, process start → exit), ms.
fn one_run(a: &Args) -> Result<(f64, f64, f64)> {
    let t0 = Instant::now();
    let mut child = command(a, "console=ttyS0 panic=-1 quiet")
        .spawn()
        .context("spawning dragonball")?;
    let stdout = child.stdout.take().context("stdout")?;
    let mut marker_ms = None;
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        if marker_ms.is_none() && line.contains(MARKER) {
            marker_ms = Some(t0.elapsed().as_secs_f64() * 1e3);
        }
    }
    let out = child.wait_with_output()?;
    let exit_ms = t0.elapsed().as_secs_f64() * 1e3;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        bail!("dragonball failed ({}): {stderr}", out.status);
    }
    let marker_ms = marker_ms.context("no marker on the console")?;
    let start_requested: f64 = stderr
        .split_whitespace()
        .find_map(|w| w.strip_prefix("start_requested_ms="))
        .and_then(|v| v.parse().ok())
        .context("no timing line from dragonball")?;
    Ok((marker_ms, marker_ms - start_requested, exit_ms))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// RSS (KiB) of `pid`, and the RSS of the mapping holding the guest RAM: the one at
/// least as large as guest memory (the kernel may merge a small neighbour into it, so
/// the VMM's own figure errs low by at most that neighbour).
fn rss_split(pid: u32, mem_mib: u64) -> Result<(u64, u64)> {
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps"))?;
    let (mut total, mut guest) = (0u64, 0u64);
    let mut size_kib = 0u64;
    for line in smaps.lines() {
        let mut f = line.split_whitespace();
        match (f.next(), f.next()) {
            (Some("Size:"), Some(v)) => size_kib = v.parse().unwrap_or(0),
            (Some("Rss:"), Some(v)) => {
                let rss: u64 = v.parse().unwrap_or(0);
                total += rss;
                if size_kib >= mem_mib * 1024 && size_kib < (mem_mib + 8) * 1024 {
                    guest += rss;
                }
            }
            _ => {}
        }
    }
    Ok((total, guest))
}

fn vmm_rss(a: &Args) -> Result<(u64, u64)> {
    let mut child = command(a, &guest_cmdline("test_init.mode=sleep")).spawn()?;
    let stdout = child.stdout.take().context("stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        match lines.next() {
            Some(Ok(l)) if l.contains(MARKER) => break,
            Some(Ok(_)) => {}
            _ => bail!("the sleeping guest never booted"),
        }
        if Instant::now() > deadline {
            bail!("timeout");
        }
    }
    std::thread::sleep(Duration::from_millis(500));
    let split = rss_split(child.id(), a.mem.parse()?);
    // SAFETY: signalling our own child process.
    unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
    let _ = child.wait();
    split
}

fn main() -> Result<()> {
    let a = parse()?;
    let (mut marker, mut from_start, mut exit) = (Vec::new(), Vec::new(), Vec::new());
    let (mut q_marker, mut q_exit) = (Vec::new(), Vec::new());
    for i in 0..a.runs {
        let (m, s, e) = one_run(&a).with_context(|| format!("run {i}"))?;
        marker.push(m);
        from_start.push(s);
        exit.push(e);
        if let Some(q) = &a.qemu {
            let (m, e) = qemu_run(&a, q).with_context(|| format!("qemu run {i}"))?;
            q_marker.push(m);
            q_exit.push(e);
        }
    }
    let (total, guest) = vmm_rss(&a)?;
    println!(
        "boot-bench: {} runs, {} vCPU(s), {} MiB, {}",
        a.runs,
        a.vcpus,
        a.mem,
        std::env::consts::ARCH
    );
    println!(
        "  process start -> guest marker : median {:8.1} ms",
        median(marker)
    );
    println!(
        "  StartMicroVm  -> guest marker : median {:8.1} ms",
        median(from_start)
    );
    println!(
        "  process start -> VMM exit     : median {:8.1} ms",
        median(exit)
    );
    println!(
        "  VMM RSS excluding guest memory: {} KiB (total {} KiB, guest RAM {} KiB)",
        total - guest,
        total,
        guest
    );
    Ok(())
}
