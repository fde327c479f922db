//! One sandbox: its directories, the share, the Dragonball VM on its own thread, the
//! virtiofsd (when `shared_fs = "virtio-fs"`), and the agent connection.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agent_client::{AgentClient, Endpoint, context};
use dragonball::{
    BootSourceConfig, ConsoleConfig, FsBackend, FsDeviceConfigInfo, VmConfigInfo, VmmAction,
    VmmClient, VsockDeviceConfigInfo,
};
use kata_agent_protocols::agent as api;
use kata_config::{Config, SharedFs};
use slog::Logger;

use crate::share::ShareDirs;
use tokio::io::AsyncBufReadExt;

/// Per-sandbox runtime state directory.
pub const RUN_ROOT: &str = "/run/kata";
/// Parent of every sandbox's shared directory.
pub const SHARE_ROOT: &str = "/run/kata-containers/shared/sandboxes";

/// Where a sandbox keeps its files on the host.
#[derive(Clone, Debug)]
pub struct SandboxPaths {
    /// `/run/kata/<sid>`.
    pub run_dir: PathBuf,
    /// `/run/kata-containers/shared/sandboxes/<sid>`: `mounts/` (host-only) and its
    /// read-only view `shared/`, the virtio-fs export.
    pub share: ShareDirs,
}

impl SandboxPaths {
    /// The paths of sandbox `sid`.
    pub fn new(sid: &str) -> Self {
        Self {
            run_dir: Path::new(RUN_ROOT).join(sid),
            share: ShareDirs::new(Path::new(SHARE_ROOT).join(sid)),
        }
    }

    /// The VMM's hybrid vsock socket.
    pub fn hvsock(&self) -> PathBuf {
        self.run_dir.join("kata.hvsock")
    }

    /// The guest console log.
    pub fn console(&self) -> PathBuf {
        self.run_dir.join("console.log")
    }

    /// virtiofsd's vhost-user socket.
    pub fn virtiofsd_socket(&self) -> PathBuf {
        self.run_dir.join("virtiofsd.sock")
    }
}

/// Removes whatever sandbox `sid` left on the host: mounts, sockets, directories. Nothing
/// is ever deleted through a mount that could not be detached.
pub fn remove_leftovers(sid: &str, log: Option<&Logger>) {
    let paths = SandboxPaths::new(sid);
    for dir in [&paths.share.root, &paths.run_dir] {
        if let Err(e) = safe_fs::unmount_and_remove(dir)
            && let Some(log) = log
        {
            slog::warn!(log, "sandbox cleanup left a path in place"; "sandbox" => sid, "error" => %e);
        }
    }
}

/// A running sandbox VM.
pub struct Sandbox {
    /// Its id (the first container's).
    pub id: String,
    /// Its host paths.
    pub paths: SandboxPaths,
    /// The agent.
    pub agent: AgentClient,
    /// Timeout for ordinary agent calls.
    pub rpc_timeout: Duration,
    vmm: Mutex<Option<(VmmClient, std::thread::JoinHandle<i32>)>>,
    virtiofsd: Mutex<Option<tokio::process::Child>>,
}

fn cmdline(config: &Config) -> String {
    let reboot = if cfg!(target_arch = "x86_64") {
        " reboot=k pci=off"
    } else {
        ""
    };
    let extra = &config.hypervisor.dragonball.kernel_params;
    format!(
        "console=ttyS0 quiet panic=-1{reboot} {extra} {}",
        config.agent_kernel_params()
    )
    .split_whitespace()
    .collect::<Vec<_>>()
    .join(" ")
}

/// Starts virtiofsd on the share and waits for its socket. Its stderr goes to the shim
/// log; if it exits first, the error carries its last words.
async fn start_virtiofsd(
    config: &Config,
    paths: &SandboxPaths,
    log: &Logger,
) -> Result<tokio::process::Child, String> {
    let db = &config.hypervisor.dragonball;
    let socket = paths.virtiofsd_socket();
    let mut child = tokio::process::Command::new(&db.virtio_fs_daemon)
        .arg(format!("--socket-path={}", socket.display()))
        .arg(format!("--shared-dir={}", paths.share.shared.display()))
        .arg(format!("--cache={}", db.virtio_fs_cache))
        .args(&db.virtio_fs_extra_args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| {
            format!(
                "hypervisor.dragonball.virtio_fs_daemon '{}': {e}",
                db.virtio_fs_daemon.display()
            )
        })?;
    let last_line = Arc::new(Mutex::new(String::new()));
    if let Some(stderr) = child.stderr.take() {
        let (log, last_line) = (log.clone(), last_line.clone());
        tokio::spawn(async move {
            let mut lines = tokio::io::BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                slog::info!(log, "{}", line; "source" => "virtiofsd");
                *last_line.lock().unwrap_or_else(|e| e.into_inner()) = line;
            }
        });
    }
    for _ in 0..500 {
        if socket.exists() {
            return Ok(child);
        }
        if let Ok(Some(status)) = child.try_wait() {
            // Let the reader take the last of its output.
            tokio::time::sleep(Duration::from_millis(50)).await;
            let said = last_line.lock().unwrap_or_else(|e| e.into_inner()).clone();
            return Err(format!(
                "virtiofsd '{}' exited ({status}) before serving: {said}",
                db.virtio_fs_daemon.display()
            ));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Err(format!(
        "virtiofsd did not create {} within 5 s",
        socket.display()
    ))
}

impl Sandbox {
    /// Creates the directories, boots the VM, connects to the agent and creates the
    /// sandbox in it. On failure everything created is removed again.
    pub async fn start(
        config: &Config,
        sid: &str,
        hostname: &str,
        log: &Logger,
    ) -> Result<Self, String> {
        let paths = SandboxPaths::new(sid);
        let result = Self::start_inner(config, sid, hostname, &paths, log).await;
        if result.is_err() {
            remove_leftovers(sid, Some(log));
        }
        result
    }

    async fn start_inner(
        config: &Config,
        sid: &str,
        hostname: &str,
        paths: &SandboxPaths,
        log: &Logger,
    ) -> Result<Self, String> {
        let db = &config.hypervisor.dragonball;
        let initrd = db.initrd.clone().unwrap_or_default();
        for (key, path) in [("kernel", &db.kernel), ("initrd", &initrd)] {
            if !path.is_file() {
                return Err(format!(
                    "configuration file {}: key hypervisor.dragonball.{key}: '{}' does not exist",
                    config.file.display(),
                    path.display()
                ));
            }
        }
        std::fs::create_dir_all(&paths.run_dir)
            .map_err(|e| format!("creating {}: {e}", paths.run_dir.display()))?;
        paths.share.create()?;
        let virtiofsd = match db.shared_fs {
            SharedFs::VirtioFs => Some(start_virtiofsd(config, paths, log).await?),
            SharedFs::Inline => None,
        };
        let backend = match db.shared_fs {
            SharedFs::VirtioFs => FsBackend::VhostUser {
                socket: paths.virtiofsd_socket(),
            },
            SharedFs::Inline => FsBackend::Inline {
                shared_dir: paths.share.shared.clone(),
            },
        };
        let actions = vec![
            VmmAction::SetVmConfiguration(VmConfigInfo {
                vcpu_count: config.vcpus(),
                mem_size_mib: db.default_memory as usize,
                console: ConsoleConfig::File(paths.console()),
            }),
            VmmAction::ConfigureBootSource(BootSourceConfig {
                kernel_path: db.kernel.clone(),
                initrd_path: Some(initrd),
                boot_args: Some(cmdline(config)),
            }),
            VmmAction::InsertVsockDevice(VsockDeviceConfigInfo {
                guest_cid: 3,
                uds_path: paths.hvsock(),
            }),
            VmmAction::InsertFsDevice(FsDeviceConfigInfo {
                tag: "kataShared".into(),
                backend,
            }),
            VmmAction::StartMicroVm,
        ];
        let (vmm, thread) = tokio::task::spawn_blocking(move || {
            let (client, thread) =
                dragonball::start_vmm_thread().map_err(|e| format!("starting Dragonball: {e}"))?;
            for action in actions {
                if let Err(e) = client.request(action) {
                    let _ = client.request(VmmAction::ShutdownMicroVm);
                    let _ = thread.join();
                    return Err(format!("Dragonball: {e}"));
                }
            }
            Ok((client, thread))
        })
        .await
        .map_err(|e| e.to_string())??;
        slog::info!(log, "sandbox VM started"; "sandbox" => sid);
        let sandbox = Self {
            id: sid.to_string(),
            paths: paths.clone(),
            agent: match AgentClient::connect(
                &Endpoint::HybridVsock {
                    uds: paths.hvsock(),
                    port: agent_client::AGENT_VSOCK_PORT,
                },
                Duration::from_millis(config.agent.kata.reconnect_timeout_ms),
            )
            .await
            {
                Ok(agent) => agent,
                Err(e) => {
                    let tail = dragonball::console::file_tail(&paths.console(), 20);
                    let _ = tokio::task::spawn_blocking(move || {
                        let _ = vmm.request(VmmAction::ShutdownMicroVm);
                        thread.join()
                    })
                    .await;
                    return Err(format!("{e}; guest console tail:\n{tail}"));
                }
            },
            rpc_timeout: Duration::from_secs(config.agent.kata.create_container_timeout),
            vmm: Mutex::new(Some((vmm, thread))),
            virtiofsd: Mutex::new(virtiofsd),
        };
        sandbox.forward_agent_logs(log.clone());
        let request = api::CreateSandboxRequest {
            hostname: hostname.to_string(),
            sandbox_id: sid.to_string(),
            storages: vec![api::Storage {
                driver: "virtio-fs".into(),
                source: "kataShared".into(),
                fstype: "virtiofs".into(),
                options: vec!["nodev".into()],
                mount_point: crate::spec::GUEST_SHARE.to_string() + "/",
                ..Default::default()
            }],
            ..Default::default()
        };
        if let Err(e) = sandbox
            .agent
            .agent
            .create_sandbox(context(sandbox.rpc_timeout), &request)
            .await
        {
            sandbox.stop(log).await;
            return Err(format!("CreateSandbox: {e}"));
        }
        Ok(sandbox)
    }

    fn forward_agent_logs(&self, log: Logger) {
        let uds = self.paths.hvsock();
        tokio::spawn(async move {
            let Ok(stream) =
                agent_client::connect_hybrid_vsock(&uds, agent_client::AGENT_LOG_VSOCK_PORT).await
            else {
                return;
            };
            let mut reader = tokio::io::BufReader::new(stream);
            while let Some(line) = crate::log::read_bounded_line(&mut reader).await {
                crate::log::forward_agent_line(&log, &line);
            }
        });
    }

    /// Tells the agent to destroy the sandbox, stops the VM and virtiofsd, removes the
    /// sandbox's mounts and directories.
    pub async fn stop(&self, log: &Logger) {
        let _ = tokio::time::timeout(
            Duration::from_secs(10),
            self.agent.agent.destroy_sandbox(
                context(self.rpc_timeout),
                &api::DestroySandboxRequest::new(),
            ),
        )
        .await;
        let vmm = self.vmm.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some((client, thread)) = vmm {
            let code = tokio::task::spawn_blocking(move || {
                let _ = client.request(VmmAction::ShutdownMicroVm);
                thread.join().unwrap_or(-1)
            })
            .await
            .unwrap_or(-1);
            slog::info!(log, "sandbox VM stopped"; "sandbox" => &self.id, "vmm_exit" => code);
        }
        let virtiofsd = self
            .virtiofsd
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(mut child) = virtiofsd {
            let _ = child.kill().await;
        }
        remove_leftovers(&self.id, Some(log));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_configured_vcpu_limit_is_dragonballs() {
        assert_eq!(kata_config::MAX_VCPUS, dragonball::config::MAX_VCPUS);
    }

    #[test]
    fn paths_follow_kata() {
        let paths = SandboxPaths::new("abc");
        assert_eq!(paths.run_dir, PathBuf::from("/run/kata/abc"));
        assert_eq!(
            paths.share.shared,
            PathBuf::from("/run/kata-containers/shared/sandboxes/abc/shared")
        );
        assert_eq!(paths.hvsock(), PathBuf::from("/run/kata/abc/kata.hvsock"));
    }
}
