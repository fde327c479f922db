//! What the shim reads from a bundle's `config.json` (containerd's or kubelet's spec, or
//! anything): the pod role, host-namespace checks, pod sizing from resources and
//! annotations, the host cgroup path, the container's fit in its VM, and the spec
//! rewrite for the guest. Errors are fine; panics are not.
#![no_main]

use std::path::Path;

use kata_config::Config;
use kata_runtimes::{PodSetup, VmSize, cri, sizing, spec};
use libfuzzer_sys::fuzz_target;
use oci_spec::runtime::Spec;

/// The shipped configuration, with every hypervisor annotation enabled.
fn config() -> Config {
    let text = include_str!("../../configuration/configuration-dragonball-x86_64.toml")
        .replace("enable_annotations = []", "enable_annotations = [\".*\"]");
    Config::parse(&text, Path::new("fuzz.toml")).expect("the shipped configuration parses")
}

fuzz_target!(|data: &[u8]| {
    let Ok(spec) = serde_json::from_slice::<Spec>(data) else {
        return;
    };
    let mut config = config();
    let role = cri::role(&spec);
    let _ = cri::check_host_namespaces(&spec, &role);
    let pod = PodSetup::from_spec(&spec);
    let _ = config.apply_annotations(&pod.annotations);
    let size = match sizing::vm_size(&config, &pod, Some(64 * 1024)) {
        Ok(s) => s.size,
        Err(_) => VmSize {
            vcpus: 1,
            memory_mib: 256,
        },
    };
    let _ = pod.host_cgroup(&config, size);
    let resources = spec.linux().as_ref().and_then(|l| l.resources().as_ref());
    let _ = sizing::check_container("fuzz", resources, size);
    let _ = spec::for_guest(&spec, "fuzz");
});
