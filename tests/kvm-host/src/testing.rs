//! Helpers for tests that need KVM: run a command in the test host of an architecture,
//! failing (not skipping) when `KATA_TEST_REQUIRE_KVM=1` and something is missing.

use crate::harness::{self, Invocation, Mode, Outcome};
use crate::{Arch, artifacts};

/// Whether KVM tests must run (CI sets `KATA_TEST_REQUIRE_KVM=1`).
pub fn kvm_required() -> bool {
    std::env::var("KATA_TEST_REQUIRE_KVM").as_deref() == Ok("1")
}

/// Why a KVM test cannot run here, if it cannot.
pub fn unavailable(arch: Arch) -> Option<String> {
    if harness::detect_mode(arch) == Mode::Native {
        return None;
    }
    if let Err(e) = artifacts::l1(arch) {
        return Some(e.to_string());
    }
    let qemu = match arch {
        Arch::Riscv64 => "qemu-system-riscv64",
        Arch::X86_64 => "qemu-system-x86_64",
    };
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(qemu).is_file()))
        .unwrap_or(false);
    (!found).then(|| format!("{qemu} is not installed: run `make setup`"))
}

/// Runs `inv` in its KVM test host. Returns `None` (after saying why on stderr) when the
/// host cannot be had and KVM is not required; panics when it is required.
pub fn run_or_skip(test: &str, inv: &Invocation) -> Option<Outcome> {
    if let Some(why) = unavailable(inv.arch) {
        if kvm_required() {
            panic!(
                "{test}: KATA_TEST_REQUIRE_KVM=1 but the {} KVM test host is unavailable: {why}",
                inv.arch
            );
        }
        eprintln!("SKIPPED {test}: {why} (set KATA_TEST_REQUIRE_KVM=1 to make this a failure)");
        return None;
    }
    match harness::run(inv) {
        Ok(outcome) => Some(outcome),
        Err(e) => panic!("{test}: the {} KVM test host failed: {e}", inv.arch),
    }
}

/// The path of a project binary for `arch` as the test host sees it.
pub fn binary(arch: Arch, name: &str) -> String {
    artifacts::binary(arch, name).display().to_string()
}
