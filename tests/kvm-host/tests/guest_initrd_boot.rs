//! The guest kernel boots the test initrd built by rootfs-builder (needs the built kernel
//! and `make initrd`; runs under plain QEMU TCG, no KVM): the static test init prints its
//! marker with an uptime and powers the VM off.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kvm_host::testing::kvm_required;
use kvm_host::{Arch, artifacts};

fn boot_test_initrd(arch: Arch, test: &str) {
    let kernel = artifacts::kernel(arch);
    let initrd = artifacts::out_dir(arch).join("test-initrd.cpio.gz");
    if !kernel.is_file() || !initrd.is_file() {
        let why = format!(
            "{} or {} not built (make kernel initrd ARCH={arch})",
            kernel.display(),
            initrd.display()
        );
        assert!(!kvm_required(), "{test}: {why}");
        eprintln!("SKIPPED {test}: {why}");
        return;
    }
    let mut cmd = match arch {
        Arch::Riscv64 => {
            let mut c = Command::new("qemu-system-riscv64");
            c.args([
                "-M", "virt", "-cpu", "rv64", "-smp", "2", "-bios", "default",
            ])
            .args(["-append", "console=ttyS0 panic=-1 quiet"]);
            c
        }
        Arch::X86_64 => {
            // As the x86_64 KVM test host boots: one vCPU (a second one's start-up
            // triple-faults in microvm's firmware under TCG now and then), no ACPI tables,
            // and the TSC frequency given rather than calibrated.
            let mut append = String::from("console=ttyS0 reboot=t panic=-1 quiet acpi=off");
            if let Some(khz) = kvm_host::harness::host_tsc_khz() {
                append += &format!(" tsc_early_khz={khz}");
            }
            let mut c = Command::new("qemu-system-x86_64");
            c.args([
                "-M",
                "microvm,acpi=off",
                "-accel",
                "tcg",
                "-cpu",
                "qemu64",
                "-smp",
                "1",
            ])
            .arg("-append")
            .arg(append);
            c
        }
    };
    cmd.args([
        "-m",
        "256M",
        "-nodefaults",
        "-no-user-config",
        "-display",
        "none",
    ])
    .args(["-serial", "stdio", "-monitor", "none", "-no-reboot"])
    .arg("-kernel")
    .arg(&kernel)
    .arg("-initrd")
    .arg(&initrd);
    let start = Instant::now();
    let (status, console) = run_bounded(&mut cmd, BOOT_BOUND).unwrap_or_else(|console| {
        panic!("{test}: QEMU did not exit within {BOOT_BOUND:?}; console:\n{console}")
    });
    let marker = console
        .lines()
        .find(|l| l.contains("KATA-RV-TEST-INIT: booted"))
        .unwrap_or_else(|| panic!("{test}: no marker; QEMU {status}; console:\n{console}"));
    println!(
        "{arch}: {} (QEMU TCG wall {:.2} s)",
        marker.trim(),
        start.elapsed().as_secs_f64()
    );
    let cpus = match arch {
        Arch::Riscv64 => "cpus=0-1",
        Arch::X86_64 => "cpus=0",
    };
    assert!(
        marker.split_whitespace().any(|word| word == cpus),
        "expected {cpus}: {marker}"
    );
    assert!(status.success(), "QEMU exited with {status}");
}

/// Bound on one TCG boot (it takes seconds; a hang must not stall the suite).
const BOOT_BOUND: Duration = Duration::from_secs(300);

/// Runs `cmd`, returning its status and stdout, or its stdout so far after killing it
/// when it outlives `bound`.
fn run_bounded(
    cmd: &mut Command,
    bound: Duration,
) -> Result<(std::process::ExitStatus, String), String> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("running QEMU: {e}"));
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = stdout.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    });
    let deadline = Instant::now() + bound;
    let status = loop {
        if let Some(status) = child.try_wait().expect("waiting for QEMU") {
            break Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let console = reader.join().unwrap();
    status.map(|s| (s, console.clone())).ok_or(console)
}

#[test]
fn riscv64_guest_kernel_boots_test_initrd() {
    boot_test_initrd(Arch::Riscv64, "riscv64_guest_kernel_boots_test_initrd");
}

#[test]
fn x86_64_guest_kernel_boots_test_initrd() {
    boot_test_initrd(Arch::X86_64, "x86_64_guest_kernel_boots_test_initrd");
}
