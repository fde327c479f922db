//! The lifecycle rules of one shim: the sandbox, its containers and their processes, with
//! events in containerd's order. No containerd and no KVM: everything below goes through
//! [`Backends`], so fakes can stand in for the VM, the agent and the host.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use kata_config::Config;
use kata_resource::RootfsMount;
use slog::Logger;
use tokio::sync::Mutex;

mod controls;
mod pod;
mod processes;

pub use pod::{PodPhase, PodStatus};

use crate::error::{Code, RuntimeError, RuntimeResult};
use crate::events::{Event, EventSink, killed_now};
use crate::process::{Container, Exit, Process, Status, StdioPaths};
use crate::sandbox::{Backends, PodSetup, Sandbox};
use crate::trace::Trace;
use crate::{cri, spec};

/// How long CloseIO lets the stdin copy reach the FIFO's end before closing stdin.
pub const STDIN_GRACE: Duration = Duration::from_secs(5);

/// The exit status of a process whose Start failed in the guest.
pub const FAILED_START_STATUS: u32 = 255;

/// What Create is given.
#[derive(Clone, Debug, Default)]
pub struct CreateRequest {
    /// Container id (the sandbox's, for the first one).
    pub id: String,
    /// containerd's bundle directory (with config.json).
    pub bundle: PathBuf,
    /// containerd's rootfs mounts.
    pub rootfs: Vec<RootfsMount>,
    /// stdio.
    pub stdio: StdioPaths,
}

/// What State answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcessState {
    /// containerd's bundle.
    pub bundle: PathBuf,
    /// Status.
    pub status: Status,
    /// stdio.
    pub stdio: StdioPaths,
    /// Exit, once known.
    pub exit: Option<Exit>,
}

/// Loads the configuration for the sandbox (only the first Create calls it).
pub type ConfigLoader<'a> = &'a (dyn Fn() -> RuntimeResult<Config> + Send + Sync);

#[derive(Default)]
struct State {
    sandbox: Option<Arc<Sandbox>>,
    containers: HashMap<String, Container>,
    /// The Sandbox API's sandbox, when containerd drives one.
    pod: Option<pod::Pod>,
}

impl State {
    /// Container `id`, or NOT_FOUND naming it.
    fn container(&mut self, id: &str) -> RuntimeResult<&mut Container> {
        self.containers
            .get_mut(id)
            .ok_or_else(|| RuntimeError::not_found(id, ""))
    }

    /// Process `exec_id` ("" = init) of container `id`, or NOT_FOUND naming it.
    fn process(&mut self, id: &str, exec_id: &str) -> RuntimeResult<&mut Process> {
        self.containers
            .get_mut(id)
            .and_then(|c| c.process_mut(exec_id))
            .ok_or_else(|| RuntimeError::not_found(id, exec_id))
    }
}

/// One shim's sandbox and containers.
pub struct Runtime {
    state: Mutex<State>,
    /// Held by Create from its checks to its insert: two first Creates boot one VM.
    creating: Mutex<()>,
    backends: Backends,
    events: Arc<dyn EventSink>,
    log: Arc<std::sync::Mutex<Logger>>,
    pid: u32,
}

impl Runtime {
    /// A runtime with no sandbox yet; `log` may be replaced by the config loader.
    pub fn new(
        backends: Backends,
        events: Arc<dyn EventSink>,
        log: Arc<std::sync::Mutex<Logger>>,
    ) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(State::default()),
            creating: Mutex::new(()),
            backends,
            events,
            log,
            pid: std::process::id(),
        })
    }

    /// The pid reported for every process (the shim's: the workload runs in the VM).
    pub fn pid(&self) -> u32 {
        self.pid
    }

    fn log(&self) -> Logger {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    async fn sandbox(&self) -> RuntimeResult<Arc<Sandbox>> {
        self.state.lock().await.sandbox.clone().ok_or_else(|| {
            RuntimeError::new(Code::FailedPrecondition, "the sandbox is not running")
        })
    }

    /// Creates a container; the first one boots the sandbox (loading the configuration).
    pub async fn create(
        self: &Arc<Self>,
        request: CreateRequest,
        load_config: ConfigLoader<'_>,
    ) -> RuntimeResult<u32> {
        let result = self.create_inner(&request, load_config).await;
        match result {
            Ok(()) => {
                slog::info!(self.log(), "container created"; "container" => &request.id);
                self.events
                    .publish(Event::Created {
                        id: request.id.clone(),
                        bundle: request.bundle.to_string_lossy().into_owned(),
                        rootfs: request.rootfs.clone(),
                        stdio: request.stdio.clone(),
                        pid: self.pid,
                    })
                    .await;
                Ok(self.pid)
            }
            Err(e) => {
                slog::error!(self.log(), "create failed"; "container" => &request.id, "error" => %e);
                self.teardown_if_empty().await;
                Err(e)
            }
        }
    }

    async fn create_inner(
        self: &Arc<Self>,
        request: &CreateRequest,
        load_config: ConfigLoader<'_>,
    ) -> RuntimeResult<()> {
        let _creating = self.creating.lock().await;
        let id = &request.id;
        let trace = Trace::start(&self.log(), "container create", id);
        if self.state.lock().await.containers.contains_key(id) {
            return Err(RuntimeError::new(
                Code::AlreadyExists,
                format!("container {id} already exists"),
            ));
        }
        let config_json = request.bundle.join("config.json");
        let oci = oci_spec::runtime::Spec::load(&config_json).map_err(|e| {
            RuntimeError::new(
                Code::InvalidArgument,
                format!("{}: {e}", config_json.display()),
            )
        })?;
        let role = cri::role(&oci);
        cri::check_host_namespaces(&oci, &role)
            .map_err(|e| RuntimeError::caused(Code::InvalidArgument, "config.json", e))?;
        let guest = spec::for_guest(&oci, id)
            .map_err(|e| RuntimeError::caused(Code::InvalidArgument, "config.json", e))?;
        trace.phase("spec rewritten");
        let (existing, pod) = {
            let state = self.state.lock().await;
            (state.sandbox.clone(), state.pod.as_ref().map(|p| p.phase))
        };
        let mut guest = guest;
        if pod.is_some() {
            // A Sandbox API pod has no sandbox container in the guest whose namespaces
            // the pod's containers could join: each gets its own (sharing them is not
            // built yet).
            for namespace in &mut guest.spec.Linux.mut_or_insert_default().Namespaces {
                namespace.Path.clear();
            }
        }
        let sandbox = match existing {
            Some(sandbox) => {
                check_guest_seccomp(
                    id,
                    &mut guest.spec,
                    sandbox.drops_guest_seccomp,
                    &self.log(),
                );
                sandbox.check_fits(id, &oci)?;
                sandbox
            }
            None if let Some(phase) = pod => {
                return Err(RuntimeError::new(
                    Code::FailedPrecondition,
                    format!("container {id}: the sandbox is {phase:?}, not ready"),
                ));
            }
            None if let cri::Role::Container { sandbox } = &role => {
                return Err(RuntimeError::new(
                    Code::FailedPrecondition,
                    format!(
                        "container {id}: its pod sandbox {sandbox} is not running in this shim"
                    ),
                ));
            }
            None => {
                let config = load_config()?;
                check_guest_seccomp(
                    id,
                    &mut guest.spec,
                    config.runtime.disable_guest_seccomp,
                    &self.log(),
                );
                let pod = PodSetup::from_spec(&oci);
                // Refuse a bad size, or a container bigger than its own VM, before the
                // VM exists.
                let size = pod.vm_size(&config)?.size;
                crate::sizing::check_container(
                    id,
                    oci.linux().as_ref().and_then(|l| l.resources().as_ref()),
                    size,
                )?;
                let sandbox = Sandbox::start(&self.backends, &config, id, &pod, &self.log())
                    .await
                    .map(Arc::new)?;
                self.state.lock().await.sandbox = Some(sandbox.clone());
                self.watch_oom(sandbox.clone());
                sandbox
            }
        };
        trace.phase("sandbox ready");
        let resources = &self.backends.resources;
        let host = resources
            .add_container(
                &sandbox.paths,
                id,
                &request.bundle,
                &request.rootfs,
                &guest.binds,
            )
            .map_err(|e| RuntimeError::caused(Code::Internal, "container rootfs and binds", e))?;
        trace.phase("rootfs and binds");
        let create = kata_agent_protocols::agent::CreateContainerRequest {
            container_id: id.clone(),
            exec_id: id.clone(),
            OCI: Some(guest.spec).into(),
            ..Default::default()
        };
        if let Err(e) = sandbox.agent.create_container(create).await {
            let _ = resources.remove_container(&host);
            return Err(RuntimeError::caused(Code::Internal, "in the guest", e));
        }
        trace.phase("container created in the guest");
        let container = Container {
            bundle: request.bundle.clone(),
            init: Process::new(request.stdio.clone(), None),
            execs: HashMap::new(),
            paused: false,
            host,
        };
        self.state
            .lock()
            .await
            .containers
            .insert(id.clone(), container);
        Ok(())
    }

    /// Deletes an exec (its exit) or a container (its init's exit; the last one stops
    /// the sandbox).
    pub async fn delete(&self, id: &str, exec_id: &str) -> RuntimeResult<Option<Exit>> {
        self.after_create_of(id).await;
        let sandbox = self.sandbox().await.ok();
        let exit = {
            let mut state = self.state.lock().await;
            let container = state.container(id)?;
            if !exec_id.is_empty() {
                let process = container
                    .execs
                    .remove(exec_id)
                    .ok_or_else(|| RuntimeError::not_found(id, exec_id))?;
                return Ok(process.exited());
            }
            container.init.exited()
        };
        if let Some(sandbox) = &sandbox
            && let Err(e) = sandbox.agent.remove_container(id, 10).await
        {
            slog::warn!(self.log(), "RemoveContainer failed"; "container" => id, "error" => %e);
        }
        let container = self.state.lock().await.containers.remove(id);
        if let Some(container) = container
            && let Err(e) = self.backends.resources.remove_container(&container.host)
        {
            slog::warn!(self.log(), "a share entry was left in place"; "container" => id, "error" => %e);
        }
        let exit = exit.unwrap_or_else(killed_now);
        self.events
            .publish(Event::Deleted {
                id: id.into(),
                pid: self.pid,
                exit,
            })
            .await;
        self.teardown_if_empty().await;
        Ok(Some(exit))
    }

    /// The state of a process.
    pub async fn state(&self, id: &str, exec_id: &str) -> RuntimeResult<ProcessState> {
        self.after_create_of(id).await;
        let mut state = self.state.lock().await;
        let status = state.container(id)?.status(exec_id);
        let bundle = state.container(id)?.bundle.clone();
        let process = state.process(id, exec_id)?;
        Ok(ProcessState {
            bundle,
            status,
            stdio: process.stdio.clone(),
            exit: process.exited(),
        })
    }

    /// Waits for a Create in flight. containerd restarted in the middle of one sends
    /// State, Kill, Delete and Shutdown while the shim still builds the container:
    /// answering NotFound then, and finishing the Create afterwards, would keep a
    /// sandbox nobody stops.
    async fn after_creates(&self) {
        drop(self.creating.lock().await);
    }

    /// [`Runtime::after_creates`] when container `id` does not exist (yet): calls about
    /// the pod's other containers do not wait for a Create.
    async fn after_create_of(&self, id: &str) {
        if !self.state.lock().await.containers.contains_key(id) {
            self.after_creates().await;
        }
    }

    /// Whether container `id` exists.
    pub async fn has_container(&self, id: &str) -> bool {
        self.state.lock().await.containers.contains_key(id)
    }

    /// Shutdown: with no container left, stops the sandbox and returns true (the shim
    /// may exit); otherwise does nothing and returns false.
    pub async fn shutdown(&self) -> bool {
        self.after_creates().await;
        {
            let state = self.state.lock().await;
            if !state.containers.is_empty() || state.pod.is_some() {
                return false;
            }
        }
        self.teardown_if_empty().await;
        true
    }

    async fn teardown_if_empty(&self) {
        let sandbox = {
            let mut state = self.state.lock().await;
            if !state.containers.is_empty() || Self::pod_holds_vm(&state) {
                return;
            }
            state.sandbox.take()
        };
        if let Some(sandbox) = sandbox {
            sandbox.stop(&self.log()).await;
        }
    }
}

/// A container whose spec carries a seccomp profile: the guest agent compiles and
/// installs it, unless `disable_guest_seccomp` says to run such containers without one
/// (Kata's switch): then it is taken out of the guest spec, and that is logged.
fn check_guest_seccomp(
    id: &str,
    guest: &mut kata_agent_protocols::oci::Spec,
    dropped: bool,
    log: &slog::Logger,
) {
    let linux = guest.Linux.mut_or_insert_default();
    if dropped && linux.Seccomp.is_some() {
        slog::warn!(log, "linux.seccomp dropped: disable_guest_seccomp = true"; "container" => id);
        linux.Seccomp.clear();
    }
}
