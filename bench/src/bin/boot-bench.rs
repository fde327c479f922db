//! Boot benchmark of the `dragonball` CLI, run where KVM is (the riscv64 test host):
//! time from process start, and from StartMicroVm, to the guest's marker line and to its
//! power-off; medians of repeated runs; and the VMM's own RSS excluding guest memory.
//!
//! With `--qemu PATH` (x86_64), QEMU's microvm with KVM boots the same kernel, initrd,
//! vCPUs and memory in alternating runs, and the ratio is printed.
//!
//! With `--thp`, dragonball backs guest RAM with transparent huge pages, as QEMU does
//! by default (it advises MADV_HUGEPAGE on its RAM blocks).
//!
//! With `--parallel N`, N VMs are then started at once (dragonball, then QEMU with
//! `--qemu`): how many reach the marker and when the last one does, against the median of
//! one. This separates the VMM from the shim and agent in the `parallel` bench.
//!
//! ```text
//! boot-bench --dragonball PATH --kernel PATH --initrd PATH [--runs N] [--vcpus N] [--mem MIB]
//!            [--qemu PATH] [--parallel N] [--thp]
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
    parallel: usize,
    thp: bool,
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
        parallel: 0,
        thp: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "--thp" {
            a.thp = true;
            continue;
        }
        let v = it.next().with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--dragonball" => a.dragonball = v,
            "--kernel" => a.kernel = v,
            "--initrd" => a.initrd = v,
            "--runs" => a.runs = v.parse().context("--runs")?,
            "--vcpus" => a.vcpus = v,
            "--mem" => a.mem = v,
            "--qemu" => a.qemu = Some(v),
            "--parallel" => a.parallel = v.parse().context("--parallel")?,
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

/// Guest command line for this architecture (x86_64 guests end with a triple fault and
/// skip the PCI probe, as the shim's do).
fn guest_cmdline(extra: &str) -> String {
    let base = if cfg!(target_arch = "x86_64") {
        "console=ttyS0 reboot=t panic=-1 quiet pci=off"
    } else {
        "console=ttyS0 panic=-1 quiet"
    };
    format!("{base} {extra}").trim().to_string()
}

/// QEMU microvm with KVM booting the same kernel/initrd/vCPUs/memory with `cmdline`.
fn qemu_command(a: &Args, qemu: &str, cmdline: &str) -> Command {
    let mut c = Command::new(qemu);
    c.args(["-M", "microvm,acpi=off", "-enable-kvm", "-cpu", "host"])
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
            "-kernel", &a.kernel, "-initrd", &a.initrd, "-append", cmdline,
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    c
}

/// A boot that never ended is killed after this long and reported as hung.
const RUN_TIMEOUT: Duration = Duration::from_secs(90);

/// What one boot printed and when.
struct Boot {
    /// Spawn → marker line, ms.
    marker_ms: f64,
    /// Spawn → process exit, ms.
    exit_ms: f64,
    /// The process's stderr.
    stderr: String,
}

/// Runs `command` (stdout piped) to its end: times the marker line and the exit; kills
/// it after [`RUN_TIMEOUT`] and says where its console stopped.
fn boot_once(mut command: Command, what: &str) -> Result<Boot> {
    use std::io::Read;
    let t0 = Instant::now();
    let mut child = command
        .spawn()
        .with_context(|| format!("spawning {what}"))?;
    let stdout = child.stdout.take().context("stdout")?;
    let (done_tx, done) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut marker_ms = None;
        let mut tail = std::collections::VecDeque::new();
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if marker_ms.is_none() && line.contains(MARKER) {
                marker_ms = Some(t0.elapsed().as_secs_f64() * 1e3);
            }
            if tail.len() == 8 {
                tail.pop_front();
            }
            tail.push_back(line);
        }
        let _ = done_tx.send(());
        (marker_ms, Vec::from(tail).join("\n"))
    });
    let hung = done.recv_timeout(RUN_TIMEOUT).is_err();
    if hung {
        let _ = child.kill();
    }
    let status = child.wait()?;
    let exit_ms = t0.elapsed().as_secs_f64() * 1e3;
    let mut stderr = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut stderr);
    }
    let (marker_ms, tail) = reader
        .join()
        .map_err(|_| anyhow::anyhow!("reader panicked"))?;
    if hung {
        bail!("{what} hung: no exit within {RUN_TIMEOUT:?}; console ended with:\n{tail}");
    }
    if !status.success() {
        bail!("{what} failed ({status}): {stderr}");
    }
    let marker_ms = marker_ms.with_context(|| format!("no marker from {what}:\n{tail}"))?;
    Ok(Boot {
        marker_ms,
        exit_ms,
        stderr,
    })
}

/// One QEMU boot: (start → marker, start → exit), ms.
fn qemu_run(a: &Args, qemu: &str) -> Result<(f64, f64)> {
    let boot = boot_once(qemu_command(a, qemu, &guest_cmdline("")), "qemu")?;
    Ok((boot.marker_ms, boot.exit_ms))
}

fn command(a: &Args, cmdline: &str) -> Command {
    let mut c = Command::new(&a.dragonball);
    c.args([
        "--kernel", &a.kernel, "--initrd", &a.initrd, "--vcpus", &a.vcpus, "--mem", &a.mem,
    ])
    .args(["--cmdline", cmdline])
    .args(a.thp.then_some("--thp"))
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    c
}

/// One boot: (process start → marker, StartMicroVm → marker, process start → exit), ms.
fn one_run(a: &Args) -> Result<(f64, f64, f64)> {
    let boot = boot_once(command(a, &guest_cmdline("")), "dragonball")?;
    let start_requested: f64 = boot
        .stderr
        .split_whitespace()
        .find_map(|w| w.strip_prefix("start_requested_ms="))
        .and_then(|v| v.parse().ok())
        .context("no timing line from dragonball")?;
    Ok((
        boot.marker_ms,
        boot.marker_ms - start_requested,
        boot.exit_ms,
    ))
}

/// Boots `n` VMs of `make()` at once: the markers reached (ms from the common start)
/// and the failures, each with its console tail.
fn boot_at_once(
    n: usize,
    what: &str,
    make: impl Fn() -> Command + Sync,
) -> (Vec<f64>, Vec<String>) {
    let results: Vec<Result<Boot>> = std::thread::scope(|scope| {
        let runs: Vec<_> = (0..n)
            .map(|_| scope.spawn(|| boot_once(make(), what)))
            .collect();
        runs.into_iter()
            .map(|r| {
                r.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("panicked")))
            })
            .collect()
    });
    let mut markers = Vec::new();
    let mut failures = Vec::new();
    for (i, r) in results.into_iter().enumerate() {
        match r {
            Ok(boot) => markers.push(boot.marker_ms),
            Err(e) => failures.push(format!("{what} #{i}: {e:#}")),
        }
    }
    (markers, failures)
}

/// Prints one `--parallel` line: how many of `n` booted, the last marker, the ratio to
/// `single` (the median of one at a time).
fn report_at_once(
    what: &str,
    n: usize,
    single: f64,
    (markers, failures): &(Vec<f64>, Vec<String>),
) {
    for f in failures {
        eprintln!("{f}");
    }
    let last = markers.iter().copied().fold(0.0, f64::max);
    println!(
        "  {n} at once, {what:<10}: {} booted, {} failed; last marker {last:8.1} ms, median {:8.1} ms; last / one {:.2}",
        markers.len(),
        failures.len(),
        if markers.is_empty() {
            0.0
        } else {
            median(markers)
        },
        last / single
    );
}

fn median(samples: &[f64]) -> f64 {
    let mut v = samples.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// RSS (KiB) of `pid`, and the RSS of the mapping holding the guest RAM: of the mappings
/// at least as large as guest memory, the one with the most resident pages (the kernel
/// may merge an anonymous neighbour into QEMU's, so the VMM's own figure errs low by at
/// most that neighbour).
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
                if size_kib >= mem_mib * 1024 {
                    guest = guest.max(rss);
                }
            }
            _ => {}
        }
    }
    Ok((total, guest))
}

/// RSS split of a VMM started by `command` once its sleeping guest has booted.
fn vmm_rss(mut command: Command, mem_mib: u64) -> Result<(u64, u64)> {
    let mut child = command.spawn()?;
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
    let split = rss_split(child.id(), mem_mib);
    // SAFETY: signalling our own child process.
    unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
    let _ = child.wait();
    split
}

fn main() -> Result<()> {
    let a = parse()?;
    let (mut marker, mut from_start, mut exit) = (Vec::new(), Vec::new(), Vec::new());
    let (mut q_marker, mut q_exit) = (Vec::new(), Vec::new());
    // A failed run is reported and counted, not fatal: the emulated test hosts
    // occasionally lose an L2 guest (both VMMs have been seen to).
    let (mut failed, mut q_failed) = (0, 0);
    for i in 0..a.runs {
        match one_run(&a) {
            Ok((m, s, e)) => {
                eprintln!("run {i}: dragonball marker {m:.0} ms, exit {e:.0} ms");
                marker.push(m);
                from_start.push(s);
                exit.push(e);
            }
            Err(e) => {
                eprintln!("run {i}: dragonball: {e:#}");
                failed += 1;
            }
        }
        if let Some(q) = &a.qemu {
            match qemu_run(&a, q) {
                Ok((m, e)) => {
                    eprintln!("run {i}: qemu marker {m:.0} ms, exit {e:.0} ms");
                    q_marker.push(m);
                    q_exit.push(e);
                }
                Err(e) => {
                    eprintln!("run {i}: qemu: {e:#}");
                    q_failed += 1;
                }
            }
        }
    }
    if marker.is_empty() || (a.qemu.is_some() && q_marker.is_empty()) {
        bail!("no successful runs ({failed} dragonball and {q_failed} QEMU runs failed)");
    }
    let mem_mib: u64 = a.mem.parse().context("--mem")?;
    let sleeping = guest_cmdline("test_init.mode=sleep");
    let (total, guest) = vmm_rss(command(&a, &sleeping), mem_mib)?;
    println!(
        "boot-bench: {} runs ({failed} failed), {} vCPU(s), {} MiB, {}{}",
        a.runs,
        a.vcpus,
        a.mem,
        std::env::consts::ARCH,
        if a.thp { ", dragonball --thp" } else { "" }
    );
    println!(
        "  process start -> guest marker : median {:8.1} ms",
        median(&marker)
    );
    println!(
        "  StartMicroVm  -> guest marker : median {:8.1} ms",
        median(&from_start)
    );
    println!(
        "  process start -> VMM exit     : median {:8.1} ms",
        median(&exit)
    );
    println!(
        "  VMM RSS excluding guest memory: {} KiB (total {} KiB, guest RAM {} KiB)",
        total - guest,
        total,
        guest
    );
    if let Some(q) = &a.qemu {
        let (q_total, q_guest) = vmm_rss(qemu_command(&a, q, &sleeping), mem_mib)?;
        let (dm, de) = (median(&marker), median(&exit));
        let (qm, qe) = (median(&q_marker), median(&q_exit));
        println!(
            "  QEMU microvm (same kernel, initrd, vCPUs, memory, alternating runs; {q_failed} failed):"
        );
        println!(
            "  process start -> guest marker : median {qm:8.1} ms   dragonball/QEMU {:.2}",
            dm / qm
        );
        println!(
            "  process start -> VMM exit     : median {qe:8.1} ms   dragonball/QEMU {:.2}",
            de / qe
        );
        println!(
            "  QEMU RSS excluding guest memory: {} KiB (total {} KiB, guest RAM {} KiB)",
            q_total - q_guest,
            q_total,
            q_guest
        );
    }
    if a.parallel > 0 {
        let cmdline = guest_cmdline("");
        let ours = boot_at_once(a.parallel, "dragonball", || command(&a, &cmdline));
        report_at_once("dragonball", a.parallel, median(&marker), &ours);
        if let Some(q) = &a.qemu {
            let theirs = boot_at_once(a.parallel, "qemu", || qemu_command(&a, q, &cmdline));
            report_at_once("QEMU", a.parallel, median(&q_marker), &theirs);
        }
    }
    Ok(())
}
