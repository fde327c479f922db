//! The Sandbox API's lifecycle over fakes: the VM boots at StartSandbox with no container,
//! outlives its containers, and goes at StopSandbox; WaitSandbox and SandboxStatus follow.

mod fakes;

use std::time::Duration;

use fakes::{Setup, World};
use kata_runtimes::{Code, PodPhase};

const SOON: Duration = Duration::from_secs(5);

#[tokio::test]
async fn create_start_join_stop_wait_shutdown_leaves_nothing() {
    let w = World::new("pod-life", Setup::default());
    w.runtime
        .create_pod(
            "pod",
            kata_runtimes::PodSetup {
                hostname: "pod-host".into(),
                netns: None,
                ..Default::default()
            },
            &w.loader(),
        )
        .await
        .unwrap();
    assert_eq!(w.vm.running(), 0, "CreateSandbox boots nothing");
    assert_eq!(
        w.runtime.pod_status("pod").await.unwrap().phase,
        PodPhase::Created
    );
    w.runtime.start_pod("pod").await.unwrap();
    assert_eq!(w.vm.running(), 1);
    assert_eq!(w.agent.count("CreateSandbox"), 1);
    let waiter = {
        let runtime = w.runtime.clone();
        tokio::spawn(async move { runtime.wait_pod("pod").await })
    };
    // A container joins, runs and goes; the VM stays.
    w.create("app").await.unwrap();
    w.runtime.start("app", "").await.unwrap();
    w.agent.exit("app", "", 0);
    tokio::time::timeout(SOON, w.runtime.wait("app", ""))
        .await
        .unwrap()
        .unwrap();
    w.runtime.delete("app", "").await.unwrap();
    assert_eq!(w.vm.running(), 1, "the pod's VM outlives its containers");
    assert!(
        !w.runtime.shutdown().await,
        "Task.Shutdown keeps a pod's shim"
    );
    assert!(!waiter.is_finished());
    w.runtime.stop_pod("pod").await.unwrap();
    assert_eq!(w.vm.running(), 0);
    let exit = tokio::time::timeout(SOON, waiter)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(exit.status, 0);
    let status = w.runtime.pod_status("pod").await.unwrap();
    assert_eq!(status.phase, PodPhase::Stopped);
    assert_eq!(status.exited_at, Some(exit.at));
    // Stopping again is fine; shutdown forgets it and lets the shim go.
    w.runtime.stop_pod("pod").await.unwrap();
    assert!(w.runtime.shutdown_pod("pod").await.unwrap());
    assert!(w.host.is_empty());
    assert_eq!(
        w.runtime.pod_status("pod").await.unwrap_err().code,
        Code::NotFound
    );
}

#[tokio::test]
async fn out_of_order_calls_are_refused_by_name() {
    let w = World::new("pod-order", Setup::default());
    let err = w.runtime.start_pod("pod").await.unwrap_err();
    assert_eq!(err.code, Code::NotFound);
    w.runtime
        .create_pod("pod", Default::default(), &w.loader())
        .await
        .unwrap();
    let err = w
        .runtime
        .create_pod("other", Default::default(), &w.loader())
        .await
        .unwrap_err();
    assert_eq!(err.code, Code::AlreadyExists);
    let err = w.create("app").await.unwrap_err();
    assert_eq!(err.code, Code::FailedPrecondition, "{err}");
    assert!(err.message.contains("app"), "{err}");
    let err = w.runtime.stop_pod("other").await.unwrap_err();
    assert_eq!(err.code, Code::NotFound);
    w.runtime.start_pod("pod").await.unwrap();
    let err = w.runtime.start_pod("pod").await.unwrap_err();
    assert_eq!(err.code, Code::FailedPrecondition);
    assert!(w.runtime.shutdown_pod("pod").await.unwrap());
    assert_eq!(w.vm.running(), 0);
    assert!(w.host.is_empty());
}

#[tokio::test]
async fn a_vm_that_fails_to_start_leaves_the_pod_created_and_nothing_else() {
    let w = World::new(
        "pod-vm-fails",
        Setup {
            vm_fails: true,
            ..Default::default()
        },
    );
    w.runtime
        .create_pod("pod", Default::default(), &w.loader())
        .await
        .unwrap();
    assert!(w.runtime.start_pod("pod").await.is_err());
    assert_eq!(
        w.runtime.pod_status("pod").await.unwrap().phase,
        PodPhase::Created
    );
    assert!(w.host.is_empty());
    assert!(w.runtime.shutdown_pod("pod").await.unwrap());
}

#[tokio::test]
async fn sandbox_api_pod_containers_get_their_own_namespaces() {
    let w = World::new("pod-namespaces", Setup::default());
    w.runtime
        .create_pod("pod", Default::default(), &w.loader())
        .await
        .unwrap();
    w.runtime.start_pod("pod").await.unwrap();
    // What containerd 2.x's CRI writes for a pod container: the sandbox's namespaces.
    let annotations = r#"{"io.kubernetes.cri.container-type": "container", "io.kubernetes.cri.sandbox-id": "pod"}"#;
    let namespaces = r#"[{"type": "pid", "path": "/proc/9/ns/pid"}, {"type": "ipc", "path": "/proc/9/ns/ipc"},
        {"type": "uts", "path": "/proc/9/ns/uts"}, {"type": "mount"}]"#;
    w.create_with("app", annotations, namespaces).await.unwrap();
    let specs = w.agent.specs.lock().unwrap();
    assert!(
        specs["app"]
            .Linux
            .Namespaces
            .iter()
            .all(|n| n.Path.is_empty()),
        "no sandbox container in the guest to join: {:?}",
        specs["app"].Linux.Namespaces
    );
}
