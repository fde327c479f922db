//! The sandbox VM's static size over fakes: Kata's enabled annotations, containerd's CRI
//! sandbox sizing, a single container's own limits, and refusals that name what was asked
//! for before anything is created.

mod fakes;

use std::sync::atomic::Ordering;

use fakes::{Setup, World};
use kata_runtimes::{Code, PodSetup};

const VCPUS: &str = "io.katacontainers.config.hypervisor.default_vcpus";
const MEMORY: &str = "io.katacontainers.config.hypervisor.default_memory";
const MIB: u64 = 1 << 20;

const POD_NAMESPACES: &str = r#"[{"type": "pid"}, {"type": "ipc"}, {"type": "uts"},
    {"type": "mount"}, {"type": "network", "path": "/var/run/netns/cni-1"}]"#;

const SHARED_NAMESPACES: &str = r#"[{"type": "pid", "path": "/proc/77/ns/pid"},
    {"type": "ipc", "path": "/proc/77/ns/ipc"}, {"type": "uts", "path": "/proc/77/ns/uts"},
    {"type": "mount"}, {"type": "network", "path": "/proc/77/ns/net"}]"#;

/// A CRI sandbox's annotations with these extra `"key": "value"` pairs.
fn sandbox(extra: &str) -> String {
    let comma = if extra.is_empty() { "" } else { ", " };
    format!(
        r#"{{"io.kubernetes.cri.container-type": "sandbox", "io.kubernetes.cri.sandbox-id": "pod"{comma}{extra}}}"#
    )
}

const APP: &str =
    r#"{"io.kubernetes.cri.container-type": "container", "io.kubernetes.cri.sandbox-id": "pod"}"#;

/// The (vcpus, memory_mib) of the one VM started.
fn booted(w: &World) -> (u8, u32) {
    let specs = w.vm.specs.lock().unwrap();
    assert_eq!(specs.len(), 1);
    (specs[0].vcpus, specs[0].memory_mib)
}

fn nothing_created(w: &World) {
    assert!(w.host.is_empty(), "host resources were left");
    assert_eq!(w.vm.starts.load(Ordering::SeqCst), 0);
    assert!(w.vm.specs.lock().unwrap().is_empty(), "a VM was tried");
    assert!(w.events.names().is_empty());
}

#[tokio::test]
async fn enabled_annotations_size_the_vm() {
    let w = World::with_config(
        "size-annotations",
        Setup::default(),
        r#"enable_annotations = ["default_vcpus", "default_memory"]"#,
    );
    w.create_with(
        "c1",
        &format!(r#"{{"{VCPUS}": "2.5", "{MEMORY}": "1024"}}"#),
        "[]",
    )
    .await
    .unwrap();
    assert_eq!(booted(&w), (3, 1024), "2.5 vCPUs round up");
}

#[tokio::test]
async fn an_annotation_not_enabled_is_refused_before_anything_is_created() {
    let w = World::with_config(
        "size-not-enabled",
        Setup::default(),
        r#"enable_annotations = ["default_memory"]"#,
    );
    let err = w
        .create_with(
            "c1",
            &format!(r#"{{"{MEMORY}": "512", "{VCPUS}": "4"}}"#),
            "[]",
        )
        .await
        .unwrap_err();
    assert_eq!(err.code, Code::InvalidArgument);
    let text = err.to_string();
    assert!(
        text.contains(VCPUS) && text.contains("\"4\"") && text.contains("not enabled"),
        "{text}"
    );
    nothing_created(&w);
    // The default configuration enables none.
    let w = World::new("size-none-enabled", Setup::default());
    let err = w
        .create_with("c1", &format!(r#"{{"{MEMORY}": "512"}}"#), "[]")
        .await
        .unwrap_err();
    assert!(err.to_string().contains(MEMORY), "{err}");
    nothing_created(&w);
}

#[tokio::test]
async fn out_of_range_annotations_are_refused() {
    let w = World::with_config(
        "size-range",
        Setup::default(),
        r#"enable_annotations = [".*"]"#,
    );
    for (key, value) in [
        (VCPUS, "65"),
        (VCPUS, "-1"),
        (MEMORY, "32"),
        (MEMORY, "lots"),
        // More than any test host has.
        (MEMORY, "4000000000"),
    ] {
        let err = w
            .create_with("c1", &format!(r#"{{"{key}": "{value}"}}"#), "[]")
            .await
            .unwrap_err();
        assert_eq!(err.code, Code::InvalidArgument, "{err}");
        assert!(
            err.to_string().contains(key) && err.to_string().contains(&format!("\"{value}\"")),
            "{err}"
        );
        nothing_created(&w);
    }
}

#[tokio::test]
async fn cri_sandbox_sizing_is_added_to_the_defaults() {
    let w = World::new("size-cri", Setup::default());
    let annotations = sandbox(&format!(
        r#""io.kubernetes.cri.sandbox-cpu-quota": "220000",
           "io.kubernetes.cri.sandbox-cpu-period": "100000",
           "io.kubernetes.cri.sandbox-cpu-shares": "2253",
           "io.kubernetes.cri.sandbox-memory": "{}""#,
        512 * MIB
    ));
    w.create_with("pod", &annotations, POD_NAMESPACES)
        .await
        .unwrap();
    assert_eq!(booted(&w), (4, 768), "ceil(1 + 2.2) vCPUs, 256 + 512 MiB");
    // A container within the pod's limits joins.
    w.create_limited(
        "app",
        APP,
        SHARED_NAMESPACES,
        &format!(
            r#"{{"cpu": {{"quota": 220000, "period": 100000}}, "memory": {{"limit": {}}}}}"#,
            512 * MIB
        ),
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn a_bad_cri_sizing_annotation_is_named() {
    let w = World::new("size-cri-bad", Setup::default());
    let err = w
        .create_with(
            "pod",
            &sandbox(r#""io.kubernetes.cri.sandbox-memory": "1Gi""#),
            POD_NAMESPACES,
        )
        .await
        .unwrap_err();
    assert_eq!(err.code, Code::InvalidArgument);
    assert!(
        err.to_string().contains("io.kubernetes.cri.sandbox-memory")
            && err.to_string().contains("\"1Gi\""),
        "{err}"
    );
    nothing_created(&w);
}

#[tokio::test]
async fn a_single_container_sizes_its_vm_from_its_limits() {
    let w = World::new("size-single", Setup::default());
    w.create_limited(
        "c1",
        "{}",
        "[]",
        &format!(
            r#"{{"cpu": {{"quota": 150000, "period": 100000}}, "memory": {{"limit": {}}}}}"#,
            1024 * MIB
        ),
    )
    .await
    .unwrap();
    assert_eq!(booted(&w), (3, 1280));
}

#[tokio::test]
async fn a_container_bigger_than_the_vm_is_refused_and_the_sandbox_stays() {
    let w = World::new("size-too-big", Setup::default());
    w.create_with("pod", &sandbox(""), POD_NAMESPACES)
        .await
        .unwrap();
    assert_eq!(booted(&w), (1, 256));
    let shares_before = w.host.containers.lock().unwrap().len();
    let err = w
        .create_limited(
            "app",
            APP,
            SHARED_NAMESPACES,
            &format!(r#"{{"memory": {{"limit": {}}}}}"#, 512 * MIB),
        )
        .await
        .unwrap_err();
    assert_eq!(err.code, Code::InvalidArgument);
    let text = err.to_string();
    for part in ["container app", &(512 * MIB).to_string(), "256 MiB"] {
        assert!(text.contains(part), "{part}: {text}");
    }
    let err = w
        .create_limited(
            "app",
            APP,
            SHARED_NAMESPACES,
            r#"{"cpu": {"quota": 200000, "period": 100000}}"#,
        )
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("container app") && err.to_string().contains("1 vCPUs"),
        "{err}"
    );
    assert!(!w.runtime.has_container("app").await);
    assert_eq!(w.host.containers.lock().unwrap().len(), shares_before);
    assert_eq!(w.agent.count("CreateContainer"), 1, "only the sandbox's");
    assert_eq!(w.vm.running(), 1, "the sandbox keeps running");
    assert_eq!(w.events.names(), ["Created pod"]);
    // A container that fits still joins.
    w.create_limited(
        "app",
        APP,
        SHARED_NAMESPACES,
        &format!(r#"{{"memory": {{"limit": {}}}}}"#, 256 * MIB),
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn the_sandbox_api_sizes_at_create_and_boots_that_size() {
    let w = World::new("size-pod-api", Setup::default());
    let setup = |pairs: &[(&str, String)]| PodSetup {
        annotations: pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect(),
        ..Default::default()
    };
    let err = w
        .runtime
        .create_pod("pod", setup(&[(VCPUS, "2".into())]), &w.loader())
        .await
        .unwrap_err();
    assert_eq!(err.code, Code::InvalidArgument);
    assert!(err.to_string().contains(VCPUS), "{err}");
    assert!(
        w.runtime.pod_status("pod").await.is_err(),
        "no sandbox record"
    );
    nothing_created(&w);
    w.runtime
        .create_pod(
            "pod",
            setup(&[
                ("io.kubernetes.cri.container-type", "sandbox".into()),
                ("io.kubernetes.cri.sandbox-cpu-quota", "100000".into()),
                ("io.kubernetes.cri.sandbox-cpu-period", "100000".into()),
                ("io.kubernetes.cri.sandbox-memory", (128 * MIB).to_string()),
            ]),
            &w.loader(),
        )
        .await
        .unwrap();
    w.runtime.start_pod("pod").await.unwrap();
    assert_eq!(booted(&w), (2, 384));
    w.runtime.stop_pod("pod").await.unwrap();
    assert!(w.host.is_empty());
}
