//! Kubernetes pods through the lifecycle rules, over fakes: the sandbox container joins
//! the VM to the pod network, the pod's containers join its VM and namespaces, and what a
//! VM cannot honour is refused before anything is created.

mod fakes;

use std::path::Path;

use fakes::{Setup, World};
use kata_runtimes::Code;

const NETNS: &str = "/var/run/netns/cni-1";

const SANDBOX: &str =
    r#"{"io.kubernetes.cri.container-type": "sandbox", "io.kubernetes.cri.sandbox-id": "pod"}"#;

fn container_of(sandbox: &str) -> String {
    format!(
        r#"{{"io.kubernetes.cri.container-type": "container", "io.kubernetes.cri.sandbox-id": "{sandbox}"}}"#
    )
}

fn sandbox_namespaces() -> String {
    format!(
        r#"[{{"type": "pid"}}, {{"type": "ipc"}}, {{"type": "uts"}}, {{"type": "mount"}},
            {{"type": "network", "path": "{NETNS}"}}]"#
    )
}

const SHARED_NAMESPACES: &str = r#"[{"type": "pid", "path": "/proc/77/ns/pid"},
    {"type": "ipc", "path": "/proc/77/ns/ipc"}, {"type": "uts", "path": "/proc/77/ns/uts"},
    {"type": "mount"}, {"type": "network", "path": "/proc/77/ns/net"}]"#;

#[tokio::test]
async fn a_pod_sandbox_joins_its_vm_to_the_pod_network() {
    let w = World::new("cri-network", Setup::default());
    w.host.namespaces.lock().unwrap().insert(NETNS.into());
    w.create_with("pod", SANDBOX, &sandbox_namespaces())
        .await
        .unwrap();
    let spec = w.vm.specs.lock().unwrap()[0].clone();
    assert_eq!(spec.netns.as_deref(), Some(Path::new(NETNS)));
    assert_eq!(spec.nets.len(), 1);
    assert_eq!(
        (spec.nets[0].tap.as_str(), spec.nets[0].mac.as_str()),
        ("tap0_kata", "0a:58:0a:58:00:05")
    );
    assert!(w.host.connected.lock().unwrap().contains(Path::new(NETNS)));
    let calls = w.agent.calls.lock().unwrap().clone();
    let position = |rpc: &str| calls.iter().position(|c| c == rpc).unwrap();
    assert!(position("UpdateInterface") < position("UpdateRoutes"));
    assert!(position("UpdateRoutes") < position("CreateSandbox"));
    {
        let network = w.agent.network.lock().unwrap();
        let interface = &network.0[0];
        assert_eq!(interface.hwAddr, "0a:58:0a:58:00:05");
        assert_eq!(
            (
                interface.IPAddresses[0].address.as_str(),
                interface.IPAddresses[0].mask.as_str()
            ),
            ("10.88.0.5", "16")
        );
        assert_eq!(
            (network.1[0].dest.as_str(), network.1[0].gateway.as_str()),
            ("", "10.88.0.1")
        );
    }
    w.runtime.delete("pod", "").await.unwrap();
    assert_eq!(w.vm.running(), 0);
    assert!(
        w.host.is_empty(),
        "the tap redirect or the sandbox was left"
    );
}

#[tokio::test]
async fn a_pod_container_joins_the_sandbox_vm_and_namespaces() {
    let w = World::new("cri-join", Setup::default());
    w.create_with("pod", SANDBOX, &sandbox_namespaces())
        .await
        .unwrap();
    w.create_with("app", &container_of("pod"), SHARED_NAMESPACES)
        .await
        .unwrap();
    assert_eq!(w.vm.starts.load(std::sync::atomic::Ordering::SeqCst), 1);
    let specs = w.agent.specs.lock().unwrap();
    let namespaces: Vec<(String, String)> = specs["app"]
        .Linux
        .Namespaces
        .iter()
        .map(|n| (n.Type.clone(), n.Path.clone()))
        .collect();
    assert_eq!(
        namespaces,
        [
            ("pid".to_string(), "/proc/77/ns/pid".to_string()),
            ("ipc".into(), "/proc/77/ns/ipc".into()),
            ("uts".into(), "/proc/77/ns/uts".into()),
            ("mount".into(), String::new()),
        ],
        "pod namespaces keep their path (the agent joins the sandbox's); network goes"
    );
    // No CNI interface in the namespace: the VM runs without one.
    assert!(w.vm.specs.lock().unwrap()[0].nets.is_empty());
}

#[tokio::test]
async fn host_namespaces_are_refused_before_anything_is_created() {
    let w = World::new("cri-host-ns", Setup::default());
    let host_network = r#"[{"type": "pid"}, {"type": "ipc"}, {"type": "mount"}]"#;
    let err = w
        .create_with("pod", SANDBOX, host_network)
        .await
        .unwrap_err();
    assert_eq!(err.code, Code::InvalidArgument);
    assert!(err.to_string().contains("hostNetwork"), "{err}");
    let host_pid = r#"[{"type": "ipc", "path": "/proc/77/ns/ipc"}, {"type": "uts", "path": "/proc/77/ns/uts"}, {"type": "mount"}]"#;
    w.create_with("pod", SANDBOX, &sandbox_namespaces())
        .await
        .unwrap();
    let err = w
        .create_with("app", &container_of("pod"), host_pid)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("hostPID"), "{err}");
    assert!(!w.runtime.has_container("app").await);
    w.runtime.delete("pod", "").await.unwrap();
    assert!(w.host.is_empty());
    assert_eq!(w.vm.running(), 0);
}

#[tokio::test]
async fn a_pod_container_without_its_sandbox_is_refused() {
    let w = World::new("cri-orphan", Setup::default());
    let err = w
        .create_with("app", &container_of("gone"), SHARED_NAMESPACES)
        .await
        .unwrap_err();
    assert_eq!(err.code, Code::FailedPrecondition);
    assert!(err.to_string().contains("gone"), "{err}");
    assert_eq!(w.vm.starts.load(std::sync::atomic::Ordering::SeqCst), 0);
    assert!(w.host.is_empty());
}

#[tokio::test]
async fn a_vm_that_fails_to_start_leaves_no_network_behind() {
    let w = World::new(
        "cri-vm-fails",
        Setup {
            vm_fails: true,
            ..Default::default()
        },
    );
    w.host.namespaces.lock().unwrap().insert(NETNS.into());
    let err = w
        .create_with("pod", SANDBOX, &sandbox_namespaces())
        .await
        .unwrap_err();
    assert_eq!(err.code, Code::Internal);
    assert!(w.host.is_empty());
}

#[tokio::test]
async fn a_bad_network_namespace_is_named() {
    let w = World::new("cri-bad-netns", Setup::default());
    let namespaces = r#"[{"type": "pid"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"},
        {"type": "network", "path": "/nonexistent/ns"}]"#;
    let err = w.create_with("pod", SANDBOX, namespaces).await.unwrap_err();
    assert_eq!(err.code, Code::InvalidArgument);
    assert!(err.to_string().contains("/nonexistent/ns"), "{err}");
    assert_eq!(w.vm.starts.load(std::sync::atomic::Ordering::SeqCst), 0);
    assert!(w.host.is_empty());
}
