//! The agent in host mode (root, private mount namespace, unix socket): the container
//! lifecycle and a CRI pod sharing namespaces, without a VM. The host has no cgroup v2, so
//! resource limits, stats, pause and OOM events run only in the VM suite (tests/vm.rs).

mod support;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use agent_client::{AgentClient, Endpoint};
use kvm_host::{Arch, artifacts};
use support::*;

/// The agent, stopped on drop.
struct HostAgent(Child);

impl Drop for HostAgent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn root_or_skip(test: &str) -> bool {
    if nix::unistd::Uid::effective().is_root() {
        return true;
    }
    assert!(
        !kvm_host::testing::kvm_required(),
        "{test}: KATA_TEST_REQUIRE_KVM=1 but not root"
    );
    eprintln!("SKIPPED {test}: needs root");
    false
}

fn start_agent(socket: &Path) -> HostAgent {
    let child = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "--"])
        .arg(env!("CARGO_BIN_EXE_kata-agent"))
        .arg("--server-addr")
        .arg(format!("unix://{}", socket.display()))
        .arg("--log-level")
        .arg("debug")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("running unshare + kata-agent");
    HostAgent(child)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_mode_container_lifecycle_and_bad_input() {
    if !root_or_skip("host_mode_container_lifecycle_and_bad_input") {
        return;
    }
    let scratch = Scratch::new(&std::env::temp_dir(), "agent-host");
    let rootfs = scratch.0.join("rootfs");
    busybox_rootfs(
        &rootfs,
        &artifacts::out_dir(Arch::native().expect("riscv64 or x86_64")).join("busybox"),
    );
    let socket = scratch.0.join("agent.sock");
    let agent = start_agent(&socket);
    let client = AgentClient::connect(&Endpoint::Unix(socket.clone()), Duration::from_secs(20))
        .await
        .expect("the host-mode agent answers Health.Check");
    let version = client
        .health
        .version(agent_client::context(RPC), &Default::default())
        .await
        .unwrap();
    assert_eq!(version.agent_version, env!("CARGO_PKG_VERSION"));

    lifecycle_scenarios(
        &client,
        &Rootfs {
            agent_path: rootfs.to_string_lossy().into_owned(),
        },
    )
    .await;
    pod_scenarios(
        &client,
        &Rootfs {
            agent_path: rootfs.to_string_lossy().into_owned(),
        },
    )
    .await;

    garbage_frames(tokio::net::UnixStream::connect(&socket).await.unwrap()).await;
    client
        .check(RPC)
        .await
        .expect("still serving after garbage");
    let fresh = AgentClient::connect(&Endpoint::Unix(socket), Duration::from_secs(5))
        .await
        .unwrap();
    fresh.check(RPC).await.unwrap();

    // Nothing is left behind in the agent's bundle directory or mount table.
    let agent_pid = agent.0.id();
    let mounts = std::fs::read_to_string(format!("/proc/{agent_pid}/mountinfo")).unwrap();
    assert!(
        !mounts.contains("/run/kata-containers/"),
        "leaked mounts:\n{mounts}"
    );
    drop(agent);
}
