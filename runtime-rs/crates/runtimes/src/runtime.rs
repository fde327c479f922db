//! The lifecycle rules of one shim: the sandbox, its containers and their processes, with
//! events in containerd's order. No containerd and no KVM: everything below goes through
//! [`Backends`], so fakes can stand in for the VM, the agent and the host.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use kata_config::Config;
use kata_resource::RootfsMount;
use slog::Logger;
use tokio::sync::Mutex;

use crate::error::{Code, RuntimeError, RuntimeResult};
use crate::events::{Event, EventSink, killed_now};
use crate::process::{Container, Exit, Process, Status, StdioPaths};
use crate::sandbox::{Backends, Sandbox};
use crate::{spec, stdio};

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
        let guest = spec::for_guest(&oci, id)
            .map_err(|e| RuntimeError::new(Code::InvalidArgument, format!("config.json: {e}")))?;
        let existing = self.state.lock().await.sandbox.clone();
        let sandbox = match existing {
            Some(sandbox) => sandbox,
            None => {
                let config = load_config()?;
                let hostname = oci.hostname().clone().unwrap_or_default();
                let sandbox = Sandbox::start(&self.backends, &config, id, &hostname, &self.log())
                    .await
                    .map(Arc::new)?;
                self.state.lock().await.sandbox = Some(sandbox.clone());
                self.watch_oom(sandbox.clone());
                sandbox
            }
        };
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

    /// Starts a container's init (`exec_id` empty) or an added exec.
    pub async fn start(self: &Arc<Self>, id: &str, exec_id: &str) -> RuntimeResult<u32> {
        let sandbox = self.sandbox().await?;
        let (stdio, spec) = {
            let state = self.state.lock().await;
            let container = state
                .containers
                .get(id)
                .ok_or_else(|| RuntimeError::not_found(id, ""))?;
            let process = container
                .process(exec_id)
                .ok_or_else(|| RuntimeError::not_found(id, exec_id))?;
            if process.started {
                return Err(RuntimeError::new(
                    Code::FailedPrecondition,
                    format!("{id} {exec_id} already started"),
                ));
            }
            (process.stdio.clone(), process.spec.clone())
        };
        let agent = &sandbox.agent;
        let started = match (exec_id.is_empty(), spec) {
            (true, _) => agent.start_container(id).await,
            (false, Some(spec)) => agent.exec_process(id, exec_id, spec).await,
            (false, None) => return Err(RuntimeError::not_found(id, exec_id)),
        };
        if let Err(e) = started {
            self.record_failed_start(id, exec_id).await;
            return Err(RuntimeError::caused(
                Code::Internal,
                format_args!("starting {id} {exec_id}"),
                e,
            ));
        }
        let (io, stdin_done) = stdio::start_io(agent, id, exec_id, &stdio);
        let sender = {
            let mut state = self.state.lock().await;
            let process = state
                .containers
                .get_mut(id)
                .and_then(|c| c.process_mut(exec_id))
                .ok_or_else(|| RuntimeError::not_found(id, exec_id))?;
            process.started = true;
            process.stdin_done = Some(stdin_done);
            process.exit_sender()
        };
        self.spawn_waiter(sandbox, id, exec_id, io, sender);
        let event = if exec_id.is_empty() {
            Event::Started {
                id: id.into(),
                pid: self.pid,
            }
        } else {
            Event::ExecStarted {
                id: id.into(),
                exec_id: exec_id.into(),
                pid: self.pid,
            }
        };
        self.events.publish(event).await;
        Ok(self.pid)
    }

    /// A Start that failed in the guest ends the process: it is stopped (status
    /// [`FAILED_START_STATUS`]) so that Wait returns and Delete can remove it.
    async fn record_failed_start(&self, id: &str, exec_id: &str) {
        let sender = {
            let mut state = self.state.lock().await;
            let Some(process) = state
                .containers
                .get_mut(id)
                .and_then(|c| c.process_mut(exec_id))
            else {
                return;
            };
            process.started = true;
            process.exit_sender()
        };
        let exit = Exit {
            status: FAILED_START_STATUS,
            at: SystemTime::now(),
        };
        sender.send_replace(Some(exit));
        self.events
            .publish(Event::Exited {
                id: id.into(),
                exec_id: exec_id.into(),
                pid: self.pid,
                exit,
            })
            .await;
    }

    fn spawn_waiter(
        self: &Arc<Self>,
        sandbox: Arc<Sandbox>,
        id: &str,
        exec_id: &str,
        io: tokio::task::JoinHandle<()>,
        sender: tokio::sync::watch::Sender<Option<Exit>>,
    ) {
        let this = self.clone();
        let (id, exec_id) = (id.to_string(), exec_id.to_string());
        tokio::spawn(async move {
            let exit = stdio::wait_exit(&sandbox.agent, &id, &exec_id, io).await;
            sender.send_replace(Some(exit));
            this.events
                .publish(Event::Exited {
                    id,
                    exec_id,
                    pid: this.pid,
                    exit,
                })
                .await;
        });
    }

    fn watch_oom(self: &Arc<Self>, sandbox: Arc<Sandbox>) {
        let this = self.clone();
        tokio::spawn(async move {
            while let Ok(id) = sandbox.agent.get_oom_event().await {
                this.events.publish(Event::Oom { id }).await;
            }
        });
    }

    /// Signals a process; TERM/KILL of a finished one is not an error.
    pub async fn kill(self: &Arc<Self>, id: &str, exec_id: &str, signal: u32) -> RuntimeResult<()> {
        let sandbox = self.sandbox().await?;
        let never_started = {
            let mut state = self.state.lock().await;
            let process = state
                .containers
                .get_mut(id)
                .and_then(|c| c.process_mut(exec_id))
                .ok_or_else(|| RuntimeError::not_found(id, exec_id))?;
            if process.exited().is_some() {
                return if signal == 9 || signal == 15 {
                    Ok(())
                } else {
                    Err(RuntimeError::new(
                        Code::NotFound,
                        format!("process {id} {exec_id} already finished"),
                    ))
                };
            }
            // Only an init that was never started exists in the guest without a waiter
            // (an exec that was never started has no guest process at all).
            if !process.started && exec_id.is_empty() {
                process.started = true;
                Some(process.exit_sender())
            } else {
                None
            }
        };
        sandbox
            .agent
            .signal_process(id, exec_id, signal)
            .await
            .map_err(|e| {
                RuntimeError::caused(Code::Internal, format_args!("signalling {id}"), e)
            })?;
        if let Some(sender) = never_started {
            // A created process has no waiter yet: the agent reports its end.
            let io = tokio::spawn(async {});
            self.spawn_waiter(sandbox, id, exec_id, io, sender);
        }
        Ok(())
    }

    /// Adds an exec to a running container (started by [`Runtime::start`]).
    pub async fn exec(
        &self,
        id: &str,
        exec_id: &str,
        process: &oci_spec::runtime::Process,
        stdio: StdioPaths,
    ) -> RuntimeResult<()> {
        {
            let mut state = self.state.lock().await;
            let container = state
                .containers
                .get_mut(id)
                .ok_or_else(|| RuntimeError::not_found(id, ""))?;
            if container.execs.contains_key(exec_id) {
                return Err(RuntimeError::new(
                    Code::AlreadyExists,
                    format!("exec {exec_id} already exists"),
                ));
            }
            if container.status("") != Status::Running {
                return Err(RuntimeError::new(
                    Code::FailedPrecondition,
                    format!("container {id} is not running"),
                ));
            }
            let guest = spec::process(process);
            container
                .execs
                .insert(exec_id.into(), Process::new(stdio, Some(guest)));
        }
        self.events
            .publish(Event::ExecAdded {
                id: id.into(),
                exec_id: exec_id.into(),
            })
            .await;
        Ok(())
    }

    /// Deletes an exec (its exit) or a container (its init's exit; the last one stops
    /// the sandbox).
    pub async fn delete(&self, id: &str, exec_id: &str) -> RuntimeResult<Option<Exit>> {
        let sandbox = self.sandbox().await.ok();
        let exit = {
            let mut state = self.state.lock().await;
            let container = state
                .containers
                .get_mut(id)
                .ok_or_else(|| RuntimeError::not_found(id, exec_id))?;
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
        let state = self.state.lock().await;
        let container = state
            .containers
            .get(id)
            .ok_or_else(|| RuntimeError::not_found(id, exec_id))?;
        let process = container
            .process(exec_id)
            .ok_or_else(|| RuntimeError::not_found(id, exec_id))?;
        Ok(ProcessState {
            bundle: container.bundle.clone(),
            status: container.status(exec_id),
            stdio: process.stdio.clone(),
            exit: process.exited(),
        })
    }

    /// Waits for a process's exit without holding any lock.
    pub async fn wait(&self, id: &str, exec_id: &str) -> RuntimeResult<Exit> {
        let mut exit = {
            let state = self.state.lock().await;
            state
                .containers
                .get(id)
                .and_then(|c| c.process(exec_id))
                .ok_or_else(|| RuntimeError::not_found(id, exec_id))?
                .exit
                .clone()
        };
        let seen = exit
            .wait_for(Option::is_some)
            .await
            .map(|e| *e)
            .map_err(|_| RuntimeError::new(Code::Internal, "the process record went away"))?;
        seen.ok_or_else(|| RuntimeError::new(Code::Internal, "the process record went away"))
    }

    /// Closes a process's stdin once what was written before has reached it (bounded by
    /// [`STDIN_GRACE`]).
    pub async fn close_stdin(&self, id: &str, exec_id: &str) -> RuntimeResult<()> {
        let sandbox = self.sandbox().await?;
        let stdin_done = {
            let state = self.state.lock().await;
            state
                .containers
                .get(id)
                .and_then(|c| c.process(exec_id))
                .ok_or_else(|| RuntimeError::not_found(id, exec_id))?
                .stdin_done
                .clone()
        };
        let (id, exec_id) = (id.to_string(), exec_id.to_string());
        // The copy closes stdin itself at the FIFO's end; close it here only if that
        // never comes.
        tokio::spawn(async move {
            if let Some(mut done) = stdin_done {
                let _ = tokio::time::timeout(STDIN_GRACE, done.wait_for(|d| *d)).await;
            }
            let _ = sandbox.agent.close_stdin(&id, &exec_id).await;
        });
        Ok(())
    }

    /// Resizes a process's terminal.
    pub async fn resize_pty(
        &self,
        id: &str,
        exec_id: &str,
        rows: u32,
        cols: u32,
    ) -> RuntimeResult<()> {
        let sandbox = self.sandbox().await?;
        sandbox
            .agent
            .tty_win_resize(id, exec_id, rows, cols)
            .await
            .map_err(|e| {
                RuntimeError::caused(Code::Internal, format_args!("resizing the pty of {id}"), e)
            })
    }

    /// Freezes or thaws a container.
    pub async fn set_paused(&self, id: &str, paused: bool) -> RuntimeResult<()> {
        let sandbox = self.sandbox().await?;
        if !self.state.lock().await.containers.contains_key(id) {
            return Err(RuntimeError::not_found(id, ""));
        }
        let verb = if paused { "pausing" } else { "resuming" };
        sandbox.agent.set_paused(id, paused).await.map_err(|e| {
            RuntimeError::caused(Code::FailedPrecondition, format_args!("{verb} {id}"), e)
        })?;
        if let Some(c) = self.state.lock().await.containers.get_mut(id) {
            c.paused = paused;
        }
        let event = if paused {
            Event::Paused { id: id.into() }
        } else {
            Event::Resumed { id: id.into() }
        };
        self.events.publish(event).await;
        Ok(())
    }

    /// Applies new resource limits to a container.
    pub async fn update(
        &self,
        id: &str,
        resources: &oci_spec::runtime::LinuxResources,
    ) -> RuntimeResult<()> {
        let sandbox = self.sandbox().await?;
        sandbox
            .agent
            .update_container(id, spec::linux_resources(resources))
            .await
            .map_err(|e| RuntimeError::caused(Code::Internal, format_args!("updating {id}"), e))
    }

    /// A container's statistics, as the agent reports them.
    pub async fn stats(
        &self,
        id: &str,
    ) -> RuntimeResult<kata_agent_protocols::agent::StatsContainerResponse> {
        let sandbox = self.sandbox().await?;
        sandbox
            .agent
            .stats_container(id)
            .await
            .map_err(|e| RuntimeError::caused(Code::Internal, format_args!("stats of {id}"), e))
    }

    /// Whether container `id` exists.
    pub async fn has_container(&self, id: &str) -> bool {
        self.state.lock().await.containers.contains_key(id)
    }

    /// Shutdown: with no container left, stops the sandbox and returns true (the shim
    /// may exit); otherwise does nothing and returns false.
    pub async fn shutdown(&self) -> bool {
        if !self.state.lock().await.containers.is_empty() {
            return false;
        }
        self.teardown_if_empty().await;
        true
    }

    async fn teardown_if_empty(&self) {
        let sandbox = {
            let mut state = self.state.lock().await;
            if !state.containers.is_empty() {
                return;
            }
            state.sandbox.take()
        };
        if let Some(sandbox) = sandbox {
            sandbox.stop(&self.log()).await;
        }
    }
}
