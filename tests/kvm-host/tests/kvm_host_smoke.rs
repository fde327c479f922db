//! KVM test host smoke tests (need the guest kernels and static binaries that `make test`
//! builds, and QEMU; inside them, real KVM). Each runs a command in the test host of one
//! architecture: natively where this machine has real KVM, else in an emulated L1.

use kvm_host::testing::{binary, run_or_skip};
use kvm_host::{Arch, Invocation};

fn smoke(arch: Arch, test: &str, expected: &[&str]) {
    let inv = Invocation::new(arch, binary(arch, "kvm-smoke"));
    let Some(out) = run_or_skip(test, &inv) else {
        return;
    };
    println!(
        "{arch} test host ({:?}): wall {:.2} s, L1 ready at {:?} s\n{}",
        out.mode,
        out.wall.as_secs_f64(),
        out.l1_uptime_at_start,
        out.output
    );
    assert_eq!(
        out.exit_code, 0,
        "kvm-smoke failed:\n{}\n---- console ----\n{}",
        out.output, out.console
    );
    for line in expected {
        assert!(
            out.output.contains(line),
            "missing {line:?} in:\n{}",
            out.output
        );
    }
}

#[test]
fn riscv64_kvm_host_smoke_runs_a_nested_vcpu() {
    smoke(
        Arch::Riscv64,
        "riscv64_kvm_host_smoke_runs_a_nested_vcpu",
        &[
            "KVM_CAP_IRQCHIP (in-kernel AIA) = true",
            "aia: APLIC + IMSIC initialised",
            "exit: KVM_EXIT_RISCV_SBI legacy console putchar 'K'",
            "exit: KVM_EXIT_SYSTEM_EVENT type 1",
            "smoke: PASS",
        ],
    );
}

#[test]
fn x86_64_kvm_host_smoke_runs_a_nested_vcpu() {
    smoke(
        Arch::X86_64,
        "x86_64_kvm_host_smoke_runs_a_nested_vcpu",
        &[
            "KVM_CAP_IRQCHIP = true",
            "exit: KVM_EXIT_IO out port 0x3f8 data \"K\"",
            "exit: KVM_EXIT_HLT",
            "smoke: PASS",
        ],
    );
}

fn reports_status_and_output(arch: Arch, test: &str) {
    let inv = Invocation::new(
        arch,
        "echo hello-from-$(uname -m); echo to-stderr >&2; exit 7",
    );
    let Some(out) = run_or_skip(test, &inv) else {
        return;
    };
    assert_eq!(out.exit_code, 7, "console:\n{}", out.console);
    assert!(
        out.output.contains(&format!("hello-from-{arch}")),
        "output: {}",
        out.output
    );
    assert!(out.output.contains("to-stderr"), "output: {}", out.output);
}

#[test]
fn riscv64_kvm_host_reports_exit_status_and_output() {
    reports_status_and_output(
        Arch::Riscv64,
        "riscv64_kvm_host_reports_exit_status_and_output",
    );
}

#[test]
fn x86_64_kvm_host_reports_exit_status_and_output() {
    reports_status_and_output(
        Arch::X86_64,
        "x86_64_kvm_host_reports_exit_status_and_output",
    );
}

#[test]
fn riscv64_kvm_host_sees_the_shares_read_write_and_read_only() {
    let test = "riscv64_kvm_host_sees_the_shares_read_write_and_read_only";
    let root = kvm_host::artifacts::project_root();
    let scratch = root
        .join("target")
        .join(format!("kvm-host-share-test-{}", std::process::id()));
    std::fs::create_dir_all(&scratch).unwrap();
    let file = scratch.join("from-l1");
    let cache = kvm_host::artifacts::cache_dir();
    let cmd = format!(
        "echo written-in-l1 > {} && ! touch {}/must-fail 2>/dev/null && ls {}",
        file.display(),
        cache.display(),
        kvm_host::artifacts::kernel(Arch::Riscv64).display()
    );
    let inv = Invocation::new(Arch::Riscv64, cmd);
    let out = run_or_skip(test, &inv);
    let written = std::fs::read_to_string(&file);
    std::fs::remove_dir_all(&scratch).unwrap();
    let Some(out) = out else { return };
    assert_eq!(out.exit_code, 0, "console:\n{}", out.console);
    assert_eq!(written.unwrap(), "written-in-l1\n");
}
