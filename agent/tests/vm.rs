//! The agent as PID 1 of a Dragonball VM (needs KVM: `make vm-suite` runs this inside
//! the KVM test host of each arch): Health over hybrid vsock, the container lifecycle on
//! a busybox rootfs shared over virtio-fs, then what needs the guest's cgroup v2: a
//! memory limit whose OOM kill is reported, stats, pause/resume. The VM powers off after
//! DestroySandbox.

#![cfg(any(target_arch = "riscv64", target_arch = "x86_64"))]

mod support;

use std::io::Read;
use std::path::Path;
use std::time::{Duration, Instant};

use agent_client::{AgentClient, Endpoint, connect_hybrid_vsock, context};
use dragonball::{
    BootSourceConfig, ConsoleConfig, FsBackend, FsDeviceConfigInfo, VmConfigInfo, VmmAction,
    VsockDeviceConfigInfo, start_vmm_thread,
};
use kata_agent_protocols::agent as api;
use kata_agent_protocols::oci;
use kvm_host::{Arch, artifacts, testing::kvm_required};
use support::*;

/// Where the guest mounts the share (Kata's path).
const GUEST_SHARE: &str = "/run/kata-containers/shared/containers/";

fn arch() -> Arch {
    Arch::native().expect("riscv64 or x86_64")
}

fn kvm_or_skip(test: &str) -> bool {
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

fn share_storage() -> api::Storage {
    api::Storage {
        driver: "virtio-fs".into(),
        source: "kataShared".into(),
        fstype: "virtiofs".into(),
        options: vec!["nodev".into()],
        mount_point: GUEST_SHARE.into(),
        ..Default::default()
    }
}

async fn vm_only_scenarios(client: &AgentClient, root: &str) {
    // A memory limit: the hog, a child of the container's init, is OOM-killed and the
    // kill is reported while the init lives on (no exit prompts a look: the agent's watch
    // on memory.events must see it), then the init itself is the hog (137) and is
    // reported; the pause keeps the two kills apart.
    let hog = process(
        &[
            "sh",
            "-c",
            "echo started; awk 'BEGIN { s = \"x\"; while (1) s = s s }'; sleep 2; \
             exec awk 'BEGIN { s = \"x\"; while (1) s = s s }'",
        ],
        false,
    );
    let mut limited = spec(root, hog);
    limited.Linux.as_mut().unwrap().Resources = Some(oci::LinuxResources {
        Memory: Some(oci::LinuxMemory {
            Limit: 32 << 20,
            ..Default::default()
        })
        .into(),
        Pids: Some(oci::LinuxPids {
            Limit: 64,
            ..Default::default()
        })
        .into(),
        ..Default::default()
    })
    .into();
    create(client, "hog", limited).await.unwrap();
    start(client, "hog").await.unwrap();
    let oom_request = api::GetOOMEventRequest::new();
    let child_oom = tokio::time::timeout(
        Duration::from_secs(120),
        client.agent.get_oom_event(context(FOREVER), &oom_request),
    )
    .await
    .expect("an OOM event for the child hog within 120 s")
    .expect("GetOOMEvent");
    assert_eq!(child_oom.container_id, "hog");
    let oom = tokio::time::timeout(
        Duration::from_secs(120),
        client.agent.get_oom_event(context(FOREVER), &oom_request),
    );
    let (status, oom) = tokio::join!(wait(client, "hog", ""), oom);
    assert_eq!(status, 137, "the memory hog should be killed by SIGKILL");
    let oom = oom
        .expect("an OOM event within 120 s")
        .expect("GetOOMEvent");
    assert_eq!(oom.container_id, "hog");
    remove(client, "hog").await.unwrap();

    // Stats, pause and resume of a running container.
    let busy = process(
        &["sh", "-c", "while true; do echo tick > /dev/null; done"],
        false,
    );
    create(client, "busy", spec(root, busy)).await.unwrap();
    start(client, "busy").await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let request = api::StatsContainerRequest {
        container_id: "busy".into(),
        ..Default::default()
    };
    let stats = client
        .agent
        .stats_container(context(RPC), &request)
        .await
        .unwrap();
    let cgroup = stats.cgroup_stats.as_ref().unwrap();
    assert!(cgroup.cpu_stats.cpu_usage.total_usage > 0);
    assert!(cgroup.memory_stats.usage.usage > 0);
    assert_eq!(cgroup.pids_stats.current, 1);
    let pause = api::PauseContainerRequest {
        container_id: "busy".into(),
        ..Default::default()
    };
    client
        .agent
        .pause_container(context(RPC), &pause)
        .await
        .unwrap();
    let again = client
        .agent
        .pause_container(context(RPC), &pause)
        .await
        .map(drop);
    assert_eq!(code(again), ttrpc::Code::FAILED_PRECONDITION);
    let resume = api::ResumeContainerRequest {
        container_id: "busy".into(),
        ..Default::default()
    };
    client
        .agent
        .resume_container(context(RPC), &resume)
        .await
        .unwrap();
    signal(client, "busy", "", 9).await.unwrap();
    assert_eq!(wait(client, "busy", "").await, 137);
    remove(client, "busy").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_in_a_vm_runs_containers_from_a_virtio_fs_share() {
    if !kvm_or_skip("agent_in_a_vm_runs_containers_from_a_virtio_fs_share") {
        return;
    }
    let scratch = Scratch::new(&std::env::temp_dir(), "agent-vm");
    let share = scratch.0.join("share");
    busybox_rootfs(
        &share.join("bb/rootfs"),
        &artifacts::out_dir(arch()).join("busybox"),
    );
    let uds = scratch.0.join("kata.hvsock");
    let console = scratch.0.join("console.log");
    let initrd = artifacts::out_dir(arch()).join("kata-containers-initrd.img");
    assert!(
        initrd.exists(),
        "{} is missing: make agent-initrd ARCH=…",
        initrd.display()
    );
    let reboot = if arch() == Arch::X86_64 {
        " reboot=k pci=off"
    } else {
        ""
    };

    let (vmm, vmm_thread) = start_vmm_thread().unwrap();
    let actions = vec![
        VmmAction::SetVmConfiguration(VmConfigInfo {
            vcpu_count: 2,
            mem_size_mib: 256,
            console: ConsoleConfig::File(console.clone()),
            seccomp: true,
            transparent_huge_pages: false,
        }),
        VmmAction::ConfigureBootSource(BootSourceConfig {
            kernel_path: artifacts::kernel(arch()),
            initrd_path: Some(initrd),
            boot_args: Some(format!(
                "console=ttyS0 quiet panic=-1 agent.log=debug{reboot}"
            )),
        }),
        VmmAction::InsertVsockDevice(VsockDeviceConfigInfo {
            guest_cid: 3,
            uds_path: uds.clone(),
        }),
        VmmAction::InsertFsDevice(FsDeviceConfigInfo {
            tag: "kataShared".into(),
            backend: FsBackend::Inline {
                shared_dir: share.clone(),
            },
        }),
    ];
    for action in actions {
        vmm.request(action).expect("configuring the VM");
    }
    let started = Instant::now();
    vmm.request(VmmAction::StartMicroVm)
        .expect("starting the VM");
    let client = AgentClient::connect(
        &Endpoint::HybridVsock {
            uds: uds.clone(),
            port: 1024,
        },
        Duration::from_secs(120),
    )
    .await
    .unwrap_or_else(|e| {
        panic!(
            "{e}\nconsole:\n{}",
            std::fs::read_to_string(&console).unwrap_or_default()
        )
    });
    println!(
        "agent answered Health.Check {} ms after StartMicroVm",
        started.elapsed().as_millis()
    );

    // The log port carries the agent's JSON records, from its start.
    let mut logs = connect_hybrid_vsock(&uds, 1025)
        .await
        .expect("log port")
        .into_std()
        .unwrap();
    logs.set_nonblocking(false).unwrap();
    logs.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut head = String::new();
    let mut chunk = vec![0u8; 4096];
    while !head.lines().any(|l| l.contains("agent listening")) || !head.ends_with('\n') {
        let n = logs.read(&mut chunk).expect("reading the agent log port");
        assert!(n > 0, "the log port closed early: {head}");
        head.push_str(&String::from_utf8_lossy(&chunk[..n]));
    }
    let first: serde_json::Value = serde_json::from_str(head.lines().next().unwrap()).unwrap();
    assert_eq!(first["source"], "agent");
    let listening = head
        .lines()
        .find(|l| l.contains("agent listening"))
        .expect("'agent listening' in the log backlog");
    let listening: serde_json::Value = serde_json::from_str(listening).unwrap();
    let starting = head
        .lines()
        .find(|l| l.contains("kata-agent starting"))
        .expect("'kata-agent starting' in the log");
    let starting: serde_json::Value = serde_json::from_str(starting).unwrap();
    println!(
        "agent started at guest uptime {} s, listening at {} s",
        starting["uptime_s"], listening["uptime_s"]
    );

    let sandbox = api::CreateSandboxRequest {
        hostname: "pod".into(),
        sandbox_id: "sandbox-1".into(),
        storages: vec![share_storage()],
        dns: vec!["nameserver 10.0.0.53".into()],
        ..Default::default()
    };
    client
        .agent
        .create_sandbox(context(RPC), &sandbox)
        .await
        .expect("CreateSandbox");
    let details = client
        .agent
        .get_guest_details(
            context(RPC),
            &api::GuestDetailsRequest {
                mem_block_size: true,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert!(details.agent_details.init_daemon);

    let root = format!("{GUEST_SHARE}bb/rootfs");
    lifecycle_scenarios(
        &client,
        &Rootfs {
            agent_path: root.clone(),
        },
    )
    .await;
    pod_scenarios(
        &client,
        &Rootfs {
            agent_path: root.clone(),
        },
    )
    .await;
    vm_only_scenarios(&client, &root).await;

    let raw = connect_hybrid_vsock(&uds, 1024).await.unwrap();
    garbage_frames(raw).await;
    client
        .check(RPC)
        .await
        .expect("still serving after garbage");

    client
        .agent
        .destroy_sandbox(context(RPC), &api::DestroySandboxRequest::new())
        .await
        .expect("DestroySandbox");
    let code = tokio::task::spawn_blocking(move || vmm_thread.join().unwrap())
        .await
        .unwrap();
    let console_text = std::fs::read_to_string(&console).unwrap_or_default();
    assert_eq!(
        code, 0,
        "the VM should power off cleanly; console:\n{console_text}"
    );
}
