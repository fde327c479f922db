//! The guest kernel boots the test initrd built by rootfs-builder (needs the built kernel
//! and `make initrd`; runs under plain QEMU TCG, no KVM): the static test init prints its
//! marker with an uptime and powers the VM off.

use std::process::Command;
use std::time::Instant;

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
            let mut c = Command::new("qemu-system-x86_64");
            c.args([
                "-M", "microvm", "-accel", "tcg", "-cpu", "qemu64", "-smp", "2",
            ])
            .args(["-append", "console=ttyS0 reboot=t panic=-1 quiet"]);
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
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{test}: running QEMU: {e}"));
    let console = String::from_utf8_lossy(&out.stdout);
    let marker = console
        .lines()
        .find(|l| l.contains("KATA-RV-TEST-INIT: booted"))
        .unwrap_or_else(|| {
            panic!(
                "{test}: no marker; QEMU {}; console:\n{console}",
                out.status
            )
        });
    println!(
        "{arch}: {} (QEMU TCG wall {:.2} s)",
        marker.trim(),
        start.elapsed().as_secs_f64()
    );
    let cpus = match arch {
        Arch::Riscv64 => "cpus=0-1",
        Arch::X86_64 => "cpus=0",
    };
    assert!(marker.contains(cpus), "expected {cpus}: {marker}");
    assert!(out.status.success(), "QEMU exited with {}", out.status);
}

#[test]
fn riscv64_guest_kernel_boots_test_initrd() {
    boot_test_initrd(Arch::Riscv64, "riscv64_guest_kernel_boots_test_initrd");
}

#[test]
fn x86_64_guest_kernel_boots_test_initrd() {
    boot_test_initrd(Arch::X86_64, "x86_64_guest_kernel_boots_test_initrd");
}
