//! The sandbox cgroup against the real cgroupfs (root; v1 or v2, whichever this host
//! mounts): entering it with its limits, refusing one in use, leaving it, and removing
//! what a dead shim left in it. One test, since it moves this whole process.

mod support;

use std::process::Command;

use std::time::Duration;
use support::has_root;

use kata_resource::cgroup::{self, CgroupError, CgroupPath, CgroupRequest};

/// Where `pid` is in the memory controller's hierarchy (v1) or the unified one (v2).
fn memory_cgroup_of(pid: u32) -> String {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let v2 = cgroups_rs::hierarchies::is_cgroup2_unified_mode();
    text.lines()
        .map(|line| line.splitn(3, ':').collect::<Vec<_>>())
        .find(|f| {
            if v2 {
                f[0] == "0"
            } else {
                f[1].split(',').any(|c| c == "memory")
            }
        })
        .map(|f| f[2].to_string())
        .unwrap()
}

/// The memory limit file of cgroup `path`.
fn memory_limit(path: &str) -> u64 {
    let file = if cgroups_rs::hierarchies::is_cgroup2_unified_mode() {
        format!("/sys/fs/cgroup/{path}/memory.max")
    } else {
        format!("/sys/fs/cgroup/memory/{path}/memory.limit_in_bytes")
    };
    std::fs::read_to_string(&file)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

fn memory_dir(path: &str) -> std::path::PathBuf {
    if cgroups_rs::hierarchies::is_cgroup2_unified_mode() {
        format!("/sys/fs/cgroup/{path}").into()
    } else {
        format!("/sys/fs/cgroup/memory/{path}").into()
    }
}

#[test]
fn the_shim_enters_its_sandbox_cgroup_leaves_it_and_a_dead_ones_is_removed() {
    if !has_root() {
        return;
    }
    let me = std::process::id();
    let parent = format!("kata-rv-cgroup-test-{me}");
    let path = CgroupPath::parse(&format!("/{parent}/sandbox")).unwrap();
    let request = CgroupRequest::for_vm(path.clone(), 1, 128);
    let origin = memory_cgroup_of(me);

    let entered = cgroup::enter(&request).unwrap();
    assert_eq!(memory_cgroup_of(me), format!("/{}", path.as_str()));
    assert_eq!(memory_limit(path.as_str()), request.memory_bytes);
    // What the shim starts afterwards (virtiofsd) runs there too.
    let mut child = Command::new("sleep").arg("60").spawn().unwrap();
    assert_eq!(memory_cgroup_of(child.id()), format!("/{}", path.as_str()));

    // Another sandbox may not take over a cgroup in use.
    match cgroup::enter(&request) {
        Err(CgroupError::InUse { pid, .. }) => {
            assert!(pid == u64::from(me) || pid == u64::from(child.id()))
        }
        other => panic!(
            "entered a cgroup in use: {:?}",
            other.map(|c| c.path().clone())
        ),
    }

    // Leaving moves this process back; a process it started keeps the cgroup alive.
    let error = entered.leave(Duration::from_millis(200)).unwrap_err();
    assert!(
        error.to_string().contains("removing host cgroup"),
        "{error}"
    );
    assert_eq!(memory_cgroup_of(me), origin);

    // `delete` after a crash: what is left in the recorded cgroup is killed, then it goes.
    assert!(cgroup::remove_cgroup(&path).is_none());
    let status = child.wait().unwrap();
    assert!(!status.success());
    assert!(
        !memory_dir(path.as_str()).exists(),
        "the sandbox cgroup is left"
    );
    assert!(
        cgroup::remove_cgroup(&path).is_none(),
        "removing twice is not an error"
    );

    // The parent is the caller's (kubelet's pod cgroup, ctr's namespace): it stays.
    assert!(memory_dir(&parent).exists());
    let parent = CgroupPath::parse(&parent).unwrap();
    assert!(cgroup::remove_cgroup(&parent).is_none());
    assert!(!memory_dir(parent.as_str()).exists());
}
