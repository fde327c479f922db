//! The sandbox's host cgroup through the lifecycle rules, over fakes: it comes from the
//! sandbox spec's linux.cgroupsPath, is sized from the VM, goes with the sandbox, and a
//! path that cannot be used is refused before anything is created.

mod fakes;

use fakes::{Setup, World};
use kata_resource::cgroup::{CPU_PERIOD_US, MEMORY_OVERHEAD_MIB};
use kata_runtimes::Code;

#[tokio::test]
async fn the_sandbox_runs_in_the_cgroup_its_spec_names_sized_from_its_vm() {
    let w = World::with_config(
        "cgroup-sized",
        Setup::default(),
        "default_vcpus = 2\ndefault_memory = 256",
    );
    w.create_in_cgroup("c1", "/default/c1").await.unwrap();
    let cgroup = w.host.cgroups.lock().unwrap()["c1"].clone();
    assert_eq!(cgroup.path.as_str(), "default/c1");
    assert_eq!(cgroup.memory_bytes, (256 + MEMORY_OVERHEAD_MIB) << 20);
    assert_eq!(cgroup.cpu_quota_us, 3 * CPU_PERIOD_US);
    w.runtime.delete("c1", "").await.unwrap();
    assert!(w.host.cgroups.lock().unwrap().is_empty());
    assert!(w.host.sandboxes.lock().unwrap().is_empty());
}

#[tokio::test]
async fn a_cgroup_path_that_climbs_out_is_refused_before_anything_exists() {
    let w = World::new("cgroup-bad", Setup::default());
    let error = w
        .create_in_cgroup("c1", "/kubepods/../../etc")
        .await
        .unwrap_err();
    assert_eq!(error.code, Code::InvalidArgument);
    assert!(
        error
            .message
            .contains("linux.cgroupsPath '/kubepods/../../etc'"),
        "{}",
        error.message
    );
    assert!(w.host.sandboxes.lock().unwrap().is_empty());
    assert!(w.vm.specs.lock().unwrap().is_empty());
}

#[tokio::test]
async fn without_sandbox_cgroup_only_or_a_path_the_shim_stays_where_it_is() {
    let unnamed = World::new("cgroup-unnamed", Setup::default());
    unnamed.create("c1").await.unwrap();
    assert!(unnamed.host.sandboxes.lock().unwrap().contains("c1"));
    assert!(unnamed.host.cgroups.lock().unwrap().is_empty());
    let off = World::new("cgroup-off", Setup::default());
    off.append_runtime_config("sandbox_cgroup_only = false");
    off.create_in_cgroup("c1", "/default/c1").await.unwrap();
    assert!(off.host.sandboxes.lock().unwrap().contains("c1"));
    assert!(off.host.cgroups.lock().unwrap().is_empty());
}
