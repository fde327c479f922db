//! What every VM test needs: the KVM check, a scratch directory, a VM configuration, and
//! counts of the process's threads and fds (to find leaks).

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use dragonball::{ConsoleConfig, VmConfigInfo};
use kvm_host::testing::kvm_required;

/// Whether `/dev/kvm` is there; without it the test is skipped, or fails when
/// `KATA_TEST_REQUIRE_KVM=1`.
pub fn kvm_or_skip(test: &str) -> bool {
    if Path::new("/dev/kvm").exists() {
        return true;
    }
    assert!(
        !kvm_required(),
        "{test}: KATA_TEST_REQUIRE_KVM=1 but /dev/kvm is missing"
    );
    eprintln!("SKIPPED {test}: no /dev/kvm");
    false
}

/// A directory of one test, removed when dropped.
pub struct Scratch(pub PathBuf);

impl Scratch {
    /// Creates `<tmp>/db-test-<name>-<pid>`.
    pub fn new(name: &str) -> Self {
        let p = std::env::temp_dir().join(format!("db-test-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&p).unwrap();
        Scratch(p)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A confined VM of `vcpus` and `mem` MiB whose console goes to the file `console`.
pub fn config(vcpus: u8, mem: usize, console: &Path) -> VmConfigInfo {
    VmConfigInfo {
        vcpu_count: vcpus,
        mem_size_mib: mem,
        console: ConsoleConfig::File(console.to_path_buf()),
        seccomp: true,
        transparent_huge_pages: false,
    }
}

/// This process's (threads, fds).
pub fn resources() -> (usize, usize) {
    let count = |dir: &str| std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0);
    (count("/proc/self/task"), count("/proc/self/fd"))
}

/// Threads and fds now, once the kernel has finished reaping threads that were already
/// joined (a joined thread can linger in /proc/self/task for a moment under load).
pub fn resources_settled(expected: (usize, usize)) -> (usize, usize) {
    for _ in 0..300 {
        let now = resources();
        // Fewer is fine: a thread of an earlier test may still have been exiting when
        // `expected` was sampled.
        if now.0 <= expected.0 && now.1 <= expected.1 {
            return expected;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    resources()
}
