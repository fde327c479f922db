//! The agent's mount option lists (OCI `mounts[].options`, from the shim and so from
//! any bundle): every list maps to flags, propagation and data without panicking, and
//! the last of `ro`/`rw` wins.
#![no_main]

// The agent is a binary crate: its option parser is compiled in here as it is.
#[allow(dead_code)]
#[path = "../../agent/src/mount_options.rs"]
mod mount_options;

use libfuzzer_sys::fuzz_target;
use nix::mount::MsFlags;

fuzz_target!(|options: Vec<String>| {
    let parsed = mount_options::parse(&options);
    let last = options
        .iter()
        .rev()
        .find(|o| matches!(o.as_str(), "ro" | "rw" | "defaults"));
    match last.map(String::as_str) {
        Some("ro") => assert!(parsed.flags.contains(MsFlags::MS_RDONLY)),
        Some(_) => assert!(!parsed.flags.contains(MsFlags::MS_RDONLY)),
        None => {}
    }
    for o in &options {
        let _ = mount_options::propagation_flags(o);
    }
});
