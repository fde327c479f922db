//! The in-process Dragonball driver: the VMM runs on its own thread inside the shim and
//! is configured through its action API, one request at a time.

use std::path::PathBuf;
use std::sync::Mutex;
use std::thread::JoinHandle;
use std::time::Duration;

use async_trait::async_trait;
use dragonball::{
    BootSourceConfig, ConsoleConfig, FsBackend, FsDeviceConfigInfo, NetworkInterfaceConfig,
    VmConfigInfo, VmmAction, VmmClient, VsockDeviceConfigInfo,
};

use crate::{Hypervisor, HypervisorError, SharedFs, VmExit, VmSpec};

/// How long a stop waits for the VMM thread before abandoning it.
pub const SHUTDOWN_BOUND: Duration = Duration::from_secs(30);

/// How long one configuration step or the start may take the VMM (the start builds the
/// VM and loads the kernel: well under a second natively, seconds under emulation).
pub const ACTION_BOUND: Duration = Duration::from_secs(120);

/// The guest's vsock context id (the only guest of its VMM).
const GUEST_CID: u32 = 3;

/// The command line: the sandbox defaults, what the machine needs, then `params`.
pub fn cmdline(params: &str) -> String {
    format!(
        "console=ttyS0 quiet panic=-1 {} {params}",
        dragonball::arch::PLATFORM_CMDLINE
    )
    .split_whitespace()
    .collect::<Vec<_>>()
    .join(" ")
}

/// The VMM's configuration requests for `spec`, ending with the start.
pub fn actions(spec: &VmSpec) -> Vec<VmmAction> {
    let backend = match &spec.shared_fs {
        SharedFs::Inline(dir) => FsBackend::Inline {
            shared_dir: dir.clone(),
        },
        SharedFs::VhostUser(socket) => FsBackend::VhostUser {
            socket: socket.clone(),
        },
    };
    let mut actions = vec![
        VmmAction::SetVmConfiguration(VmConfigInfo {
            vcpu_count: spec.vcpus,
            mem_size_mib: spec.memory_mib as usize,
            console: ConsoleConfig::File(spec.console.clone()),
            seccomp: spec.seccomp,
            transparent_huge_pages: spec.transparent_huge_pages,
        }),
        VmmAction::ConfigureBootSource(BootSourceConfig {
            kernel_path: spec.kernel.clone(),
            initrd_path: Some(spec.initrd.clone()),
            boot_args: Some(cmdline(&spec.kernel_params)),
        }),
        VmmAction::InsertVsockDevice(VsockDeviceConfigInfo {
            guest_cid: GUEST_CID,
            uds_path: spec.vsock_uds.clone(),
        }),
        VmmAction::InsertFsDevice(FsDeviceConfigInfo {
            tag: "kataShared".into(),
            backend,
        }),
    ];
    for (index, net) in spec.nets.iter().enumerate() {
        actions.push(VmmAction::InsertNetworkDevice(NetworkInterfaceConfig {
            iface_id: format!("eth{index}"),
            host_dev_name: net.tap.clone(),
            guest_mac: Some(net.mac.clone()),
        }));
    }
    actions.push(VmmAction::StartMicroVm);
    actions
}

/// Moves the calling thread into network namespace `netns` (threads it starts after
/// this, like the VMM's, are born there).
fn enter_netns(netns: &std::path::Path) -> Result<(), HypervisorError> {
    let error = |source: std::io::Error| HypervisorError::Netns {
        netns: netns.to_path_buf(),
        source,
    };
    use std::os::unix::fs::OpenOptionsExt;
    // Non-blocking: a FIFO at that path must not hang the boot.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NONBLOCK | nix::libc::O_CLOEXEC)
        .open(netns)
        .map_err(error)?;
    nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).map_err(|e| error(e.into()))
}

/// Starts the VMM thread and sends it `actions`, on a thread of its own that first
/// entered `netns` when given (the shim's threads never change namespace).
fn boot(
    actions: Vec<VmmAction>,
    netns: Option<PathBuf>,
) -> Result<(VmmClient, JoinHandle<i32>), HypervisorError> {
    if let Some(netns) = &netns {
        enter_netns(netns)?;
    }
    let (client, thread) = dragonball::start_vmm_thread().map_err(HypervisorError::Spawn)?;
    for action in actions {
        match client.request_within(action, ACTION_BOUND) {
            Ok(_) => {}
            // The VMM thread is stuck: leave it (it dies with the shim).
            Err(e @ dragonball::VmmActionError::Timeout { .. }) => {
                return Err(HypervisorError::Vmm(e));
            }
            Err(e) => {
                let _ = client.request_within(VmmAction::ShutdownMicroVm, ACTION_BOUND);
                let _ = thread.join();
                return Err(HypervisorError::Vmm(e));
            }
        }
    }
    Ok((client, thread))
}

/// A Dragonball VM on its own thread.
#[derive(Default)]
pub struct Dragonball {
    vmm: Mutex<Option<(VmmClient, JoinHandle<i32>)>>,
    console: Mutex<Option<PathBuf>>,
}

impl Dragonball {
    /// No VM yet.
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl Hypervisor for Dragonball {
    async fn start(&self, spec: VmSpec) -> Result<(), HypervisorError> {
        if self.vmm.lock().unwrap_or_else(|e| e.into_inner()).is_some() {
            return Err(HypervisorError::AlreadyRunning);
        }
        *self.console.lock().unwrap_or_else(|e| e.into_inner()) = Some(spec.console.clone());
        let actions = actions(&spec);
        let netns = spec.netns.clone();
        let (reply, answer) = tokio::sync::oneshot::channel();
        // From the launcher: the VMM's threads install their own filters, not the shim's.
        kata_launcher::spawn_thread("vmm-boot", move || {
            let _ = reply.send(boot(actions, netns));
        })
        .map_err(HypervisorError::Spawn)?;
        let started = answer
            .await
            .map_err(|e| HypervisorError::Task(e.to_string()))??;
        *self.vmm.lock().unwrap_or_else(|e| e.into_inner()) = Some(started);
        Ok(())
    }

    async fn stop(&self) -> VmExit {
        let Some((client, thread)) = self.vmm.lock().unwrap_or_else(|e| e.into_inner()).take()
        else {
            return VmExit::NotRunning;
        };
        let join = tokio::task::spawn_blocking(move || {
            let _ = client.request(VmmAction::ShutdownMicroVm);
            thread.join().unwrap_or(-1)
        });
        match tokio::time::timeout(SHUTDOWN_BOUND, join).await {
            Ok(Ok(code)) => VmExit::Exited(code),
            Ok(Err(_)) => VmExit::Exited(-1),
            // The VMM thread is stuck: leave it; it dies with the shim.
            Err(_) => VmExit::Abandoned,
        }
    }

    fn has_exited(&self) -> bool {
        self.vmm
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .is_some_and(|(_, thread)| thread.is_finished())
    }

    fn console_tail(&self, lines: usize) -> String {
        match &*self.console.lock().unwrap_or_else(|e| e.into_inner()) {
            Some(path) => dragonball::console::file_tail(path, lines),
            None => String::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_carries_the_machine_defaults_then_the_params() {
        let line = cmdline("  agent.log=debug   foo ");
        assert!(line.starts_with("console=ttyS0 quiet panic=-1"), "{line}");
        assert!(line.contains(dragonball::arch::PLATFORM_CMDLINE), "{line}");
        assert!(line.ends_with("agent.log=debug foo"), "{line}");
        assert!(!line.contains("  "), "{line}");
    }

    #[test]
    fn a_spec_becomes_the_vmm_requests_in_order() {
        let spec = VmSpec {
            vcpus: 2,
            memory_mib: 256,
            kernel: "/k".into(),
            initrd: "/i".into(),
            kernel_params: String::new(),
            console: "/c".into(),
            vsock_uds: "/v".into(),
            shared_fs: SharedFs::VhostUser("/s".into()),
            netns: Some("/var/run/netns/cni-1".into()),
            nets: vec![crate::NetInterface {
                tap: "tap0_kata".into(),
                mac: "0a:58:0a:58:00:05".into(),
            }],
            seccomp: true,
            transparent_huge_pages: false,
        };
        let names: Vec<String> = actions(&spec)
            .iter()
            .map(|a| {
                format!("{a:?}")
                    .split(['(', ' '])
                    .next()
                    .unwrap()
                    .to_string()
            })
            .collect();
        assert_eq!(
            names,
            [
                "SetVmConfiguration",
                "ConfigureBootSource",
                "InsertVsockDevice",
                "InsertFsDevice",
                "InsertNetworkDevice",
                "StartMicroVm"
            ]
        );
    }

    #[test]
    fn the_configured_vcpu_limit_is_dragonballs() {
        assert_eq!(kata_config::MAX_VCPUS, dragonball::config::MAX_VCPUS);
    }

    #[tokio::test]
    async fn stopping_without_a_vm_is_a_no_op() {
        let vm = Dragonball::new();
        assert_eq!(vm.stop().await, VmExit::NotRunning);
        assert_eq!(vm.console_tail(5), "");
    }
}
