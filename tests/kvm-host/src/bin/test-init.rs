//! The small static test `/init` for guest initrds: mounts proc/sys/dev, prints a marker
//! line with its uptime and the online CPUs, and powers the VM off.

use std::path::Path;

use kvm_host::pid1;

/// The marker tests look for on the guest console.
const MARKER: &str = "KATA-RV-TEST-INIT";

fn main() {
    if let Err(e) = pid1::mount_kernel_filesystems(Path::new("/")) {
        println!("{MARKER}: error: {e}");
    }
    let cpus = std::fs::read_to_string("/sys/devices/system/cpu/online")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|e| format!("unknown ({e})"));
    println!("{MARKER}: booted uptime={:.3} cpus={cpus}", pid1::uptime());
    pid1::end_vm();
}
