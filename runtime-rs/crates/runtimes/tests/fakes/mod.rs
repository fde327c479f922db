//! Fakes of everything below the lifecycle: a VM, an agent, the host, an event sink.

#![allow(dead_code)]

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agent_client::{Agent, AttemptError, ConnectError, RpcError, RpcResult};
use async_trait::async_trait;
use kata_agent_protocols::{agent as api, oci, types};
use kata_config::Config;
use kata_hypervisor::{Hypervisor, HypervisorError, VmExit, VmSpec};
use kata_resource::{
    CgroupRequest, ContainerResources, HostResources, PodInterface, PodNetwork, PodRoute,
    ResourceError, RootfsMount, SandboxPaths, ShareBind, VirtiofsdConfig,
};
use kata_runtimes::{
    AgentConnector, Backends, Event, EventSink, Runtime, RuntimeResult, StdioPaths,
};
use slog::Logger;
use tokio::sync::watch;

fn failed(rpc: &'static str, why: &str) -> RpcError {
    RpcError {
        rpc,
        source: ttrpc::Error::Others(why.into()),
    }
}

/// A process's exit status, by (container id, exec id).
type Exits = HashMap<(String, String), watch::Sender<Option<i32>>>;

/// The guest agent: processes that end when the test (or a signal) says so.
#[derive(Default)]
pub struct FakeAgent {
    processes: Mutex<Exits>,
    /// Container ids whose StartContainer fails (a program that cannot be run).
    pub fail_start: Mutex<HashSet<String>>,
    /// Every call, in order, by RPC name.
    pub calls: Mutex<Vec<String>>,
    /// The specs of CreateContainer, by container id.
    pub specs: Mutex<HashMap<String, oci::Spec>>,
    /// The interfaces of UpdateInterface and the routes of UpdateRoutes.
    pub network: Mutex<(Vec<types::Interface>, Vec<types::Route>)>,
}

impl FakeAgent {
    fn record(&self, call: &str) {
        self.calls.lock().unwrap().push(call.to_string());
    }

    fn add(&self, id: &str, exec_id: &str) {
        let (tx, _) = watch::channel(None);
        self.processes
            .lock()
            .unwrap()
            .insert((id.into(), exec_id.into()), tx);
    }

    /// Ends a process with `status`.
    pub fn exit(&self, id: &str, exec_id: &str, status: i32) {
        if let Some(tx) = self
            .processes
            .lock()
            .unwrap()
            .get(&(id.into(), exec_id.into()))
        {
            tx.send_replace(Some(status));
        }
    }

    /// How often `rpc` was called.
    pub fn count(&self, rpc: &str) -> usize {
        self.calls
            .lock()
            .unwrap()
            .iter()
            .filter(|c| *c == rpc)
            .count()
    }
}

#[async_trait]
impl Agent for FakeAgent {
    async fn create_sandbox(&self, _: api::CreateSandboxRequest) -> RpcResult<()> {
        self.record("CreateSandbox");
        Ok(())
    }
    async fn destroy_sandbox(&self) -> RpcResult<()> {
        self.record("DestroySandbox");
        Ok(())
    }
    async fn create_container(&self, request: api::CreateContainerRequest) -> RpcResult<()> {
        self.record("CreateContainer");
        self.add(&request.container_id, "");
        self.specs.lock().unwrap().insert(
            request.container_id.clone(),
            request.OCI.clone().unwrap_or_default(),
        );
        Ok(())
    }
    async fn start_container(&self, id: &str) -> RpcResult<()> {
        self.record("StartContainer");
        if self.fail_start.lock().unwrap().contains(id) {
            return Err(failed("StartContainer", "executable could not be run"));
        }
        Ok(())
    }
    async fn exec_process(&self, id: &str, exec_id: &str, _: oci::Process) -> RpcResult<()> {
        self.record("ExecProcess");
        self.add(id, exec_id);
        Ok(())
    }
    async fn remove_container(&self, id: &str, _: u32) -> RpcResult<()> {
        self.record("RemoveContainer");
        let mut processes = self.processes.lock().unwrap();
        for ((cid, _), tx) in processes.iter() {
            if cid == id && tx.borrow().is_none() {
                tx.send_replace(Some(137));
            }
        }
        processes.retain(|(cid, _), _| cid != id);
        Ok(())
    }
    async fn signal_process(&self, id: &str, exec_id: &str, signal: u32) -> RpcResult<()> {
        self.record("SignalProcess");
        match self
            .processes
            .lock()
            .unwrap()
            .get(&(id.into(), exec_id.into()))
        {
            Some(tx) => {
                tx.send_replace(Some(128 + signal as i32));
                Ok(())
            }
            None => Err(failed("SignalProcess", "no such process")),
        }
    }
    async fn wait_process(&self, id: &str, exec_id: &str) -> RpcResult<i32> {
        self.record("WaitProcess");
        let rx = self
            .processes
            .lock()
            .unwrap()
            .get(&(id.into(), exec_id.into()))
            .map(|tx| tx.subscribe());
        let Some(mut rx) = rx else {
            return Err(failed("WaitProcess", "no such process"));
        };
        let status = rx
            .wait_for(Option::is_some)
            .await
            .map_err(|_| failed("WaitProcess", "gone"))?;
        Ok(status.unwrap_or(255))
    }
    async fn read_output(&self, _: &str, _: &str, _: bool, _: u32) -> RpcResult<Vec<u8>> {
        Ok(Vec::new())
    }
    async fn write_stdin(&self, _: &str, _: &str, data: Vec<u8>) -> RpcResult<()> {
        self.record(if data.is_empty() {
            "WriteStdin(end)"
        } else {
            "WriteStdin"
        });
        Ok(())
    }
    async fn close_stdin(&self, _: &str, _: &str) -> RpcResult<()> {
        self.record("CloseStdin");
        Ok(())
    }
    async fn tty_win_resize(&self, _: &str, _: &str, _: u32, _: u32) -> RpcResult<()> {
        Ok(())
    }
    async fn set_paused(&self, _: &str, paused: bool) -> RpcResult<()> {
        self.record(if paused {
            "PauseContainer"
        } else {
            "ResumeContainer"
        });
        Ok(())
    }
    async fn update_container(&self, _: &str, _: oci::LinuxResources) -> RpcResult<()> {
        Ok(())
    }
    async fn stats_container(&self, _: &str) -> RpcResult<api::StatsContainerResponse> {
        Ok(Default::default())
    }
    async fn get_oom_event(&self) -> RpcResult<String> {
        std::future::pending().await
    }
    async fn update_interface(&self, interface: types::Interface) -> RpcResult<types::Interface> {
        self.record("UpdateInterface");
        self.network.lock().unwrap().0.push(interface.clone());
        Ok(interface)
    }
    async fn update_routes(&self, routes: Vec<types::Route>) -> RpcResult<()> {
        self.record("UpdateRoutes");
        self.network.lock().unwrap().1.extend(routes);
        Ok(())
    }
}

/// A VM that starts (after a short delay, to widen races) unless told to fail.
#[derive(Default)]
pub struct FakeVm {
    /// The spec of every start.
    pub specs: Mutex<Vec<VmSpec>>,
    pub starts: AtomicUsize,
    pub stops: AtomicUsize,
    pub fail: bool,
    /// The VM ended by itself (see [`Hypervisor::has_exited`]).
    pub ended: std::sync::atomic::AtomicBool,
}

#[async_trait]
impl Hypervisor for FakeVm {
    async fn start(&self, spec: VmSpec) -> Result<(), HypervisorError> {
        self.specs.lock().unwrap().push(spec);
        tokio::time::sleep(Duration::from_millis(50)).await;
        if self.fail {
            return Err(HypervisorError::Task("no KVM here".into()));
        }
        self.starts.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
    async fn stop(&self) -> VmExit {
        self.stops.fetch_add(1, Ordering::SeqCst);
        VmExit::Exited(0)
    }
    fn has_exited(&self) -> bool {
        self.ended.load(Ordering::SeqCst)
    }
    fn console_tail(&self, _: usize) -> String {
        "[    0.000000] Linux version 6.12".into()
    }
}

impl FakeVm {
    /// VMs running now.
    pub fn running(&self) -> usize {
        self.starts.load(Ordering::SeqCst) - self.stops.load(Ordering::SeqCst)
    }
}

/// Connects to the shared fake agent, or never answers (`mute`).
pub struct FakeConnector {
    pub agent: Arc<FakeAgent>,
    pub mute: bool,
}

#[async_trait]
impl AgentConnector for FakeConnector {
    async fn connect(
        &self,
        _: &SandboxPaths,
        deadline: Duration,
        _: Duration,
    ) -> Result<Arc<dyn Agent>, ConnectError> {
        if self.mute {
            tokio::time::sleep(deadline).await;
            return Err(ConnectError::Timeout {
                endpoint: "fake".into(),
                waited: deadline,
                last: AttemptError::NotTried,
            });
        }
        Ok(self.agent.clone())
    }
    fn forward_logs(&self, _: &SandboxPaths, _: Logger) {}
}

/// The host, in memory.
#[derive(Default)]
pub struct FakeHost {
    pub sandboxes: Mutex<HashSet<String>>,
    pub containers: Mutex<HashSet<PathBuf>>,
    /// Network namespaces with a pod interface CNI made (scan finds it).
    pub namespaces: Mutex<HashSet<PathBuf>>,
    /// Pod networks joined to a VM now.
    pub connected: Mutex<HashSet<PathBuf>>,
    /// The host cgroup of each sandbox now, by sandbox id.
    pub cgroups: Mutex<HashMap<String, CgroupRequest>>,
}

/// The pod network the fake CNI makes in `netns`.
pub fn pod_network(netns: &Path) -> PodNetwork {
    PodNetwork {
        netns: netns.into(),
        interface: PodInterface {
            name: "eth0".into(),
            mac: "0a:58:0a:58:00:05".into(),
            mtu: 1500,
            addresses: vec![("10.88.0.5".parse().unwrap(), 16)],
        },
        routes: vec![PodRoute {
            destination: None,
            gateway: Some("10.88.0.1".parse().unwrap()),
            source: None,
            on_link: false,
        }],
        tap: "tap0_kata".into(),
    }
}

#[async_trait]
impl HostResources for FakeHost {
    async fn create_sandbox(
        &self,
        sid: &str,
        cgroup: Option<&CgroupRequest>,
        _: Option<&VirtiofsdConfig>,
        _: &Logger,
    ) -> Result<SandboxPaths, ResourceError> {
        if let Some(cgroup) = cgroup {
            self.cgroups
                .lock()
                .unwrap()
                .insert(sid.into(), cgroup.clone());
        }
        self.sandboxes.lock().unwrap().insert(sid.into());
        Ok(SandboxPaths::new(sid))
    }
    async fn remove_sandbox(&self, sid: &str, _: &Logger) {
        self.cgroups.lock().unwrap().remove(sid);
        self.sandboxes.lock().unwrap().remove(sid);
    }
    fn add_container(
        &self,
        paths: &SandboxPaths,
        id: &str,
        bundle: &Path,
        _: &[RootfsMount],
        _: &[ShareBind],
    ) -> Result<ContainerResources, ResourceError> {
        let entry = paths.share.mounts.join(id);
        self.containers.lock().unwrap().insert(entry.clone());
        Ok(ContainerResources {
            bundle: bundle.into(),
            mounted_rootfs: false,
            share_entries: vec![entry],
        })
    }
    fn remove_container(&self, container: &ContainerResources) -> Result<(), ResourceError> {
        let mut containers = self.containers.lock().unwrap();
        for entry in &container.share_entries {
            containers.remove(entry);
        }
        Ok(())
    }
    async fn scan_network(&self, netns: &Path) -> Result<Option<PodNetwork>, ResourceError> {
        if !netns.starts_with("/var/run/netns") {
            return Err(ResourceError::Invalid(format!(
                "{}: no such namespace",
                netns.display()
            )));
        }
        Ok(self
            .namespaces
            .lock()
            .unwrap()
            .contains(netns)
            .then(|| pod_network(netns)))
    }
    async fn connect_network(&self, network: &PodNetwork) -> Result<(), ResourceError> {
        self.connected.lock().unwrap().insert(network.netns.clone());
        Ok(())
    }
    async fn disconnect_network(&self, network: &PodNetwork, _: &Logger) {
        self.connected.lock().unwrap().remove(&network.netns);
    }
}

impl FakeHost {
    /// Nothing is held on the host.
    pub fn is_empty(&self) -> bool {
        self.sandboxes.lock().unwrap().is_empty()
            && self.containers.lock().unwrap().is_empty()
            && self.connected.lock().unwrap().is_empty()
    }
}

/// Events, in the order published.
#[derive(Default)]
pub struct Events(pub Mutex<Vec<Event>>);

#[async_trait]
impl EventSink for Events {
    async fn publish(&self, event: Event) {
        self.0.lock().unwrap().push(event);
    }
}

impl Events {
    /// The events' kinds, e.g. `["Created c1", "Started c1"]`.
    pub fn names(&self) -> Vec<String> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .map(|e| match e {
                Event::Created { id, .. } => format!("Created {id}"),
                Event::Started { id, .. } => format!("Started {id}"),
                Event::ExecAdded { id, exec_id } => format!("ExecAdded {id}/{exec_id}"),
                Event::ExecStarted { id, exec_id, .. } => format!("ExecStarted {id}/{exec_id}"),
                Event::Exited {
                    id, exec_id, exit, ..
                } => format!("Exited {id}/{exec_id} {}", exit.status),
                Event::Deleted { id, exit, .. } => format!("Deleted {id} {}", exit.status),
                Event::Oom { id } => format!("Oom {id}"),
                Event::Paused { id } => format!("Paused {id}"),
                Event::Resumed { id } => format!("Resumed {id}"),
            })
            .collect()
    }
}

/// A runtime over fakes, with its scratch directory (configuration, kernel, bundles).
pub struct World {
    pub runtime: Arc<Runtime>,
    pub agent: Arc<FakeAgent>,
    pub vm: Arc<FakeVm>,
    pub host: Arc<FakeHost>,
    pub events: Arc<Events>,
    pub dir: PathBuf,
    config: PathBuf,
}

/// Options of a [`World`].
#[derive(Default)]
pub struct Setup {
    pub vm_fails: bool,
    pub agent_mute: bool,
}

impl World {
    /// A fresh world in its own scratch directory.
    pub fn new(name: &str, setup: Setup) -> Self {
        Self::with_config(name, setup, "")
    }

    /// [`World::new`] whose configuration has these extra `[hypervisor.dragonball]` keys
    /// (TOML lines, e.g. `enable_annotations = [".*"]`).
    pub fn with_config(name: &str, setup: Setup, extra_toml: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("kata-runtimes-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        for file in ["kernel", "initrd"] {
            std::fs::write(dir.join(file), "").unwrap();
        }
        let config = dir.join("configuration.toml");
        std::fs::write(
            &config,
            format!(
                "[hypervisor.dragonball]\nkernel = \"{d}/kernel\"\ninitrd = \"{d}/initrd\"\n{extra_toml}\n\
                 [agent.kata]\nreconnect_timeout_ms = 200\n[runtime]\n",
                d = dir.display()
            ),
        )
        .unwrap();
        let agent = Arc::new(FakeAgent::default());
        let vm = Arc::new(FakeVm {
            fail: setup.vm_fails,
            ..Default::default()
        });
        let host = Arc::new(FakeHost::default());
        let events = Arc::new(Events::default());
        let backends = Backends {
            hypervisor: vm.clone(),
            resources: host.clone(),
            agents: Arc::new(FakeConnector {
                agent: agent.clone(),
                mute: setup.agent_mute,
            }),
        };
        let log = Logger::root(slog::Discard, slog::o!());
        let runtime = Runtime::new(backends, events.clone(), Arc::new(Mutex::new(log)));
        Self {
            runtime,
            agent,
            vm,
            host,
            events,
            dir,
            config,
        }
    }

    /// Creates container `id` from a fresh bundle.
    pub async fn create(&self, id: &str) -> RuntimeResult<u32> {
        self.create_with_stdio(id, StdioPaths::default()).await
    }

    /// [`World::create`] with these stdio paths.
    pub async fn create_with_stdio(&self, id: &str, stdio: StdioPaths) -> RuntimeResult<u32> {
        self.create_from(id, "{}", "[]", stdio).await
    }

    /// Creates container `id` whose spec has these annotations (a JSON object) and
    /// linux.namespaces (a JSON array).
    pub async fn create_with(
        &self,
        id: &str,
        annotations: &str,
        namespaces: &str,
    ) -> RuntimeResult<u32> {
        self.create_from(id, annotations, namespaces, StdioPaths::default())
            .await
    }

    /// [`World::create_with`] whose spec also has these linux.resources (a JSON object).
    pub async fn create_limited(
        &self,
        id: &str,
        annotations: &str,
        namespaces: &str,
        resources: &str,
    ) -> RuntimeResult<u32> {
        let linux = format!(r#"{{"namespaces":{namespaces},"resources":{resources}}}"#);
        self.create_spec(id, annotations, &linux, StdioPaths::default())
            .await
    }

    /// Creates container `id` whose spec has this linux.cgroupsPath.
    pub async fn create_in_cgroup(&self, id: &str, cgroups_path: &str) -> RuntimeResult<u32> {
        let linux = serde_json::json!({ "cgroupsPath": cgroups_path }).to_string();
        self.create_with_linux(id, &linux).await
    }

    /// Creates container `id` whose spec's `linux` is this JSON object.
    pub async fn create_with_linux(&self, id: &str, linux: &str) -> RuntimeResult<u32> {
        self.create_spec(id, "{}", linux, StdioPaths::default())
            .await
    }

    async fn create_from(
        &self,
        id: &str,
        annotations: &str,
        namespaces: &str,
        stdio: StdioPaths,
    ) -> RuntimeResult<u32> {
        let linux = format!(r#"{{"namespaces":{namespaces}}}"#);
        self.create_spec(id, annotations, &linux, stdio).await
    }

    async fn create_spec(
        &self,
        id: &str,
        annotations: &str,
        linux: &str,
        stdio: StdioPaths,
    ) -> RuntimeResult<u32> {
        let bundle = self.dir.join(format!("bundle-{id}"));
        std::fs::create_dir_all(bundle.join("rootfs")).unwrap();
        std::fs::write(
            bundle.join("config.json"),
            format!(
                r#"{{"ociVersion":"1.0.2","process":{{"user":{{"uid":0,"gid":0}},"args":["sh"],"cwd":"/"}},
                    "root":{{"path":"rootfs"}},"hostname":"pod-host","annotations":{annotations},
                    "linux":{linux}}}"#
            ),
        )
        .unwrap();
        let request = kata_runtimes::CreateRequest {
            id: id.into(),
            bundle,
            stdio,
            ..Default::default()
        };
        self.runtime.create(request, &self.loader()).await
    }

    /// Adds `line` to the configuration's `[runtime]` table (its last).
    pub fn append_runtime_config(&self, line: &str) {
        let mut text = std::fs::read_to_string(&self.config).unwrap();
        text.push_str(line);
        text.push('\n');
        std::fs::write(&self.config, text).unwrap();
    }

    /// Loads this world's configuration.
    pub fn loader(&self) -> impl Fn() -> RuntimeResult<Config> + Send + Sync + use<> {
        let config = self.config.clone();
        move || {
            Config::load(&config).map_err(|e| {
                kata_runtimes::RuntimeError::new(
                    kata_runtimes::Code::InvalidArgument,
                    e.to_string(),
                )
            })
        }
    }
}

impl Drop for World {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
