//! One sandbox: its host resources, its VM and the agent in it. Started once, by the first
//! container; stopped when the last one goes.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use agent_client::{Agent, AgentClient, ConnectError, Endpoint, TtrpcAgent};
use async_trait::async_trait;
use kata_agent_protocols::agent as api;
use kata_agent_protocols::types;
use kata_config::{Config, InternetworkingModel, SharedFs};
use kata_hypervisor::{Hypervisor, NetInterface, VmExit, VmSpec};
use kata_resource::{
    CgroupPath, CgroupRequest, HostResources, PodNetwork, ResourceError, SandboxPaths,
    VirtiofsdConfig,
};
use slog::Logger;

use crate::error::{Code, RuntimeError, RuntimeResult};
use crate::sizing::{self, VmSize};
use crate::trace::Trace;

/// Connects to the agent of a booted VM.
#[async_trait]
pub trait AgentConnector: Send + Sync {
    /// Connects through the VMM's hybrid vsock socket once the agent announces itself
    /// (or a fallback attempt reaches it), until `deadline`.
    async fn connect(
        &self,
        paths: &SandboxPaths,
        deadline: Duration,
        rpc_timeout: Duration,
    ) -> Result<Arc<dyn Agent>, ConnectError>;
    /// Forwards the agent's log records (vsock port 1025) into `log` until it closes.
    fn forward_logs(&self, paths: &SandboxPaths, log: Logger);
}

/// The real connector: ttrpc over hybrid vsock.
pub struct HybridVsock;

#[async_trait]
impl AgentConnector for HybridVsock {
    async fn connect(
        &self,
        paths: &SandboxPaths,
        deadline: Duration,
        rpc_timeout: Duration,
    ) -> Result<Arc<dyn Agent>, ConnectError> {
        let endpoint = Endpoint::HybridVsock {
            uds: paths.hvsock(),
            port: agent_client::AGENT_VSOCK_PORT,
        };
        let ready = agent_client::ReadyListener::bind(
            &paths.hvsock(),
            agent_client::AGENT_READY_HOST_PORT,
        )?;
        let client = AgentClient::connect_when_ready(&endpoint, Some(&ready), deadline).await?;
        Ok(Arc::new(TtrpcAgent {
            client,
            rpc_timeout,
        }))
    }

    fn forward_logs(&self, paths: &SandboxPaths, log: Logger) {
        let uds = paths.hvsock();
        tokio::spawn(async move {
            let Ok(stream) =
                agent_client::connect_hybrid_vsock(&uds, agent_client::AGENT_LOG_VSOCK_PORT).await
            else {
                return;
            };
            let mut reader = tokio::io::BufReader::new(stream);
            while let Some(line) = crate::agent_log::read_bounded_line(&mut reader).await {
                crate::agent_log::forward(&log, &line);
            }
        });
    }
}

/// What a sandbox is built from.
#[derive(Clone)]
pub struct Backends {
    /// The VM.
    pub hypervisor: Arc<dyn Hypervisor>,
    /// The host side effects.
    pub resources: Arc<dyn HostResources>,
    /// The agent connection.
    pub agents: Arc<dyn AgentConnector>,
}

/// Where the guest mounts the share.
pub const GUEST_SHARE: &str = crate::spec::GUEST_SHARE;

/// What the pod asks of its sandbox.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodSetup {
    /// The guest's hostname.
    pub hostname: String,
    /// The pod's network namespace (made by CNI), if any.
    pub netns: Option<std::path::PathBuf>,
    /// The sandbox spec's annotations: Kata's `io.katacontainers.config.hypervisor.*`
    /// overrides, containerd's `io.kubernetes.cri.sandbox-*` sizing and the CRI role.
    pub annotations: HashMap<String, String>,
    /// The spec's `linux.resources`: they size the VM of a single (non-pod) container.
    pub resources: Option<oci_spec::runtime::LinuxResources>,
    /// The spec's `linux.cgroupsPath`: the sandbox's host cgroup.
    pub cgroups_path: Option<String>,
}

impl PodSetup {
    /// Everything the sandbox's (first container's) spec asks for.
    pub fn from_spec(spec: &oci_spec::runtime::Spec) -> Self {
        Self {
            hostname: spec.hostname().clone().unwrap_or_default(),
            netns: crate::cri::network_namespace(spec),
            annotations: spec.annotations().clone().unwrap_or_default(),
            resources: spec.linux().as_ref().and_then(|l| l.resources().clone()),
            cgroups_path: spec
                .linux()
                .as_ref()
                .and_then(|l| l.cgroups_path().as_ref())
                .map(|p| p.to_string_lossy().into_owned())
                .filter(|p| !p.is_empty()),
        }
    }

    /// The host cgroup of a VM of `size` under `config`: none when `sandbox_cgroup_only`
    /// is off or the spec names no `linux.cgroupsPath`; a path that cannot be used is
    /// refused with INVALID_ARGUMENT.
    pub fn host_cgroup(
        &self,
        config: &Config,
        size: VmSize,
    ) -> RuntimeResult<Option<CgroupRequest>> {
        let Some(path) = self
            .cgroups_path
            .as_deref()
            .filter(|_| config.runtime.sandbox_cgroup_only)
        else {
            return Ok(None);
        };
        let path = CgroupPath::parse(path).map_err(|e| {
            RuntimeError::caused(Code::InvalidArgument, "the sandbox's host cgroup", e)
        })?;
        Ok(Some(CgroupRequest::for_vm(
            path,
            size.vcpus,
            size.memory_mib,
        )))
    }

    /// The VM's size under `config` on this host (see [`sizing`]); refused with
    /// INVALID_ARGUMENT when an annotation is not enabled or a value is bad or out of
    /// range.
    pub fn vm_size(&self, config: &Config) -> RuntimeResult<sizing::PodSize> {
        sizing::vm_size(config, self, sizing::host_memory_mib())
    }
}

/// A running sandbox.
pub struct Sandbox {
    /// Its id (the first container's).
    pub id: String,
    /// Its host paths.
    pub paths: SandboxPaths,
    /// The agent.
    pub agent: Arc<dyn Agent>,
    /// The pod network joined to the VM, if any.
    pub network: Option<PodNetwork>,
    /// The VM's vCPUs (fixed at boot).
    pub vcpus: u8,
    /// The VM's memory in MiB (fixed at boot).
    pub memory_mib: u32,
    /// Containers' seccomp profiles are dropped (`disable_guest_seccomp`), not refused.
    pub drops_guest_seccomp: bool,
    backends: Backends,
}

/// The guest interface that gives the VM the pod interface's MAC, MTU and addresses.
fn guest_interface(network: &PodNetwork) -> types::Interface {
    let pod = &network.interface;
    types::Interface {
        device: pod.name.clone(),
        name: pod.name.clone(),
        hwAddr: pod.mac.clone(),
        mtu: u64::from(pod.mtu),
        IPAddresses: pod
            .addresses
            .iter()
            .map(|(ip, prefix)| types::IPAddress {
                family: types::IPFamily::v4.into(),
                address: ip.to_string(),
                mask: prefix.to_string(),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    }
}

/// The pod's routes for the guest, whose interface is called `device` there.
fn guest_routes(network: &PodNetwork, device: &str) -> Vec<types::Route> {
    network
        .routes
        .iter()
        .map(|route| types::Route {
            dest: route
                .destination
                .map(|(ip, prefix)| format!("{ip}/{prefix}"))
                .unwrap_or_default(),
            gateway: route.gateway.map(|g| g.to_string()).unwrap_or_default(),
            device: if route.on_link {
                device.to_string()
            } else {
                String::new()
            },
            source: route.source.map(|s| s.to_string()).unwrap_or_default(),
            family: types::IPFamily::v4.into(),
            ..Default::default()
        })
        .collect()
}

fn vm_spec(
    config: &Config,
    size: VmSize,
    paths: &SandboxPaths,
    network: Option<&PodNetwork>,
) -> VmSpec {
    let db = &config.hypervisor.dragonball;
    VmSpec {
        vcpus: size.vcpus,
        memory_mib: size.memory_mib,
        kernel: db.kernel.clone(),
        initrd: db.initrd.clone().unwrap_or_default(),
        kernel_params: format!("{} {}", db.kernel_params, config.agent_kernel_params()),
        console: paths.console(),
        vsock_uds: paths.hvsock(),
        shared_fs: match db.shared_fs {
            SharedFs::VirtioFs => kata_hypervisor::SharedFs::VhostUser(paths.virtiofsd_socket()),
            SharedFs::Inline => kata_hypervisor::SharedFs::Inline(paths.share.shared.clone()),
        },
        netns: network.map(|n| n.netns.clone()),
        nets: network
            .map(|n| NetInterface {
                tap: n.tap.clone(),
                mac: n.interface.mac.clone(),
            })
            .into_iter()
            .collect(),
        seccomp: !db.disable_seccomp,
        transparent_huge_pages: db.enable_hugepages,
    }
}

fn virtiofsd_config(config: &Config) -> Option<VirtiofsdConfig> {
    let db = &config.hypervisor.dragonball;
    (db.shared_fs == SharedFs::VirtioFs).then(|| VirtiofsdConfig {
        daemon: db.virtio_fs_daemon.clone(),
        cache: db.virtio_fs_cache.clone(),
        extra_args: db.virtio_fs_extra_args.clone(),
    })
}

/// Disconnects the pod network and removes sandbox `sid`'s host resources.
async fn release_host(backends: &Backends, sid: &str, network: Option<&PodNetwork>, log: &Logger) {
    if let Some(network) = network {
        backends.resources.disconnect_network(network, log).await;
    }
    backends.resources.remove_sandbox(sid, log).await;
}

impl Sandbox {
    /// Sizes the VM (refusing a bad size before anything exists), creates the host
    /// resources, boots the VM, connects to the agent and creates the sandbox in it. On
    /// failure everything created is removed again.
    pub async fn start(
        backends: &Backends,
        config: &Config,
        sid: &str,
        pod: &PodSetup,
        log: &Logger,
    ) -> RuntimeResult<Self> {
        let trace = Trace::start(log, "sandbox start", sid);
        let sizing::PodSize { size, ignored } = pod.vm_size(config)?;
        for key in &ignored {
            slog::warn!(log, "annotation enabled but not implemented by kata-rv: ignored"; "annotation" => key);
        }
        let db = &config.hypervisor.dragonball;
        let initrd = db.initrd.clone().unwrap_or_default();
        for (key, path) in [("kernel", &db.kernel), ("initrd", &initrd)] {
            if !path.is_file() {
                return Err(RuntimeError::new(
                    Code::Internal,
                    format!(
                        "configuration file {}: key hypervisor.dragonball.{key}: '{}' does not exist",
                        config.file.display(),
                        path.display()
                    ),
                ));
            }
        }
        let cgroup = pod.host_cgroup(config, size)?;
        let resources = &backends.resources;
        let paths = resources
            .create_sandbox(sid, cgroup.as_ref(), virtiofsd_config(config).as_ref(), log)
            .await
            .map_err(|e| RuntimeError::caused(Code::Internal, "preparing the sandbox", e))?;
        trace.phase("host resources ready");
        let netns = pod
            .netns
            .as_deref()
            .filter(|_| config.runtime.internetworking_model == InternetworkingModel::TcFilter);
        let network = match netns {
            Some(netns) => match resources.scan_network(netns).await {
                Ok(network) => network,
                Err(e) => {
                    resources.remove_sandbox(sid, log).await;
                    return Err(RuntimeError::caused(
                        Code::InvalidArgument,
                        "the pod network",
                        e,
                    ));
                }
            },
            None => None,
        };
        let hypervisor = &backends.hypervisor;
        let spec = vm_spec(config, size, &paths, network.as_ref());
        if let Err(e) = hypervisor.start(spec).await {
            // A virtiofsd that died first is the cause the VMM's error cannot name.
            let error = match resources.virtiofsd_exit().await {
                Some(exit) => RuntimeError::caused(
                    Code::Internal,
                    "starting the VM",
                    ResourceError::Virtiofsd(format!("{exit} (the VMM said: {e})")),
                ),
                None => RuntimeError::caused(Code::Internal, "starting the VM", e),
            };
            release_host(backends, sid, network.as_ref(), log).await;
            return Err(error);
        }
        trace.phase("vm started");
        slog::info!(log, "sandbox VM started"; "sandbox" => sid, "vcpus" => size.vcpus, "memory_mib" => size.memory_mib);
        let abort = async |error: RuntimeError| {
            hypervisor.stop().await;
            release_host(backends, sid, network.as_ref(), log).await;
            Err(error)
        };
        if let Some(network) = &network
            && let Err(e) = resources.connect_network(network).await
        {
            return abort(RuntimeError::caused(
                Code::Internal,
                "joining the VM to the pod network",
                e,
            ))
            .await;
        }
        let deadline = Duration::from_millis(config.agent.kata.reconnect_timeout_ms);
        let rpc_timeout = Duration::from_secs(config.agent.kata.create_container_timeout);
        let agent = match backends.agents.connect(&paths, deadline, rpc_timeout).await {
            Ok(agent) => agent,
            Err(e) => {
                let tail = hypervisor.console_tail(20);
                return abort(RuntimeError {
                    code: Code::Internal,
                    message: format!("{e}; guest console tail:\n{tail}"),
                    source: Some(Box::new(e)),
                })
                .await;
            }
        };
        let sandbox = Self {
            id: sid.to_string(),
            paths,
            agent,
            network,
            vcpus: size.vcpus,
            memory_mib: size.memory_mib,
            drops_guest_seccomp: config.runtime.disable_guest_seccomp,
            backends: backends.clone(),
        };
        trace.phase("agent connected");
        backends.agents.forward_logs(&sandbox.paths, log.clone());
        if let Err(e) = sandbox.configure_guest_network().await {
            sandbox.stop(log).await;
            return Err(e);
        }
        let request = api::CreateSandboxRequest {
            hostname: pod.hostname.clone(),
            sandbox_id: sid.to_string(),
            storages: vec![api::Storage {
                driver: "virtio-fs".into(),
                source: "kataShared".into(),
                fstype: "virtiofs".into(),
                options: vec!["nodev".into()],
                mount_point: GUEST_SHARE.to_string() + "/",
                ..Default::default()
            }],
            ..Default::default()
        };
        if let Err(e) = sandbox.agent.create_sandbox(request).await {
            sandbox.stop(log).await;
            return Err(RuntimeError::caused(Code::Internal, "in the guest", e));
        }
        trace.phase("sandbox created in the guest");
        Ok(sandbox)
    }

    /// The VM's size.
    pub fn size(&self) -> VmSize {
        VmSize {
            vcpus: self.vcpus,
            memory_mib: self.memory_mib,
        }
    }

    /// Refuses container `id` when its limits exceed this VM (see
    /// [`sizing::check_container`]).
    pub fn check_fits(&self, id: &str, spec: &oci_spec::runtime::Spec) -> RuntimeResult<()> {
        let resources = spec.linux().as_ref().and_then(|l| l.resources().as_ref());
        sizing::check_container(id, resources, self.size())
    }

    /// Gives the guest the pod interface's address and routes.
    async fn configure_guest_network(&self) -> RuntimeResult<()> {
        let Some(network) = &self.network else {
            return Ok(());
        };
        let failed = |e| RuntimeError::caused(Code::Internal, "configuring the guest network", e);
        let configured = self
            .agent
            .update_interface(guest_interface(network))
            .await
            .map_err(failed)?;
        let routes = guest_routes(network, &configured.name);
        if !routes.is_empty() {
            self.agent.update_routes(routes).await.map_err(failed)?;
        }
        Ok(())
    }

    /// Tells the agent to destroy the sandbox (bounded), stops the VM (bounded), and
    /// removes the sandbox's host resources.
    pub async fn stop(&self, log: &Logger) {
        let trace = Trace::start(log, "sandbox stop", &self.id);
        if self.backends.hypervisor.has_exited() {
            // Nothing in the guest can answer: asking would only spend the bound.
            slog::info!(log, "the sandbox VM had already ended"; "sandbox" => &self.id);
        } else {
            let _ =
                tokio::time::timeout(Duration::from_secs(10), self.agent.destroy_sandbox()).await;
            trace.phase("sandbox destroyed in the guest");
        }
        match self.backends.hypervisor.stop().await {
            VmExit::Exited(code) => {
                slog::info!(log, "sandbox VM stopped"; "sandbox" => &self.id, "vmm_exit" => code)
            }
            VmExit::Abandoned => {
                slog::error!(log, "the sandbox VM did not stop in time: abandoned"; "sandbox" => &self.id)
            }
            VmExit::NotRunning => {}
        }
        trace.phase("vm stopped");
        release_host(&self.backends, &self.id, self.network.as_ref(), log).await;
        trace.phase("host resources removed");
    }
}
