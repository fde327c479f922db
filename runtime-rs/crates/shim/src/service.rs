//! The containerd Task service (task API v2): sandbox and containers over the agent.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use agent_client::context;
use async_trait::async_trait;
use containerd_shim::asynchronous::{ExitSignal, publisher::RemotePublisher};
use containerd_shim_protos::api;
use containerd_shim_protos::events::task::{
    TaskCreate, TaskDelete, TaskExecAdded, TaskExecStarted, TaskExit, TaskIO, TaskOOM, TaskPaused,
    TaskResumed, TaskStart,
};
use containerd_shim_protos::protobuf::well_known_types::{any::Any, timestamp::Timestamp};
use containerd_shim_protos::protobuf::{MessageDyn, MessageField};
use containerd_shim_protos::shim_async::Task;
use containerd_shim_protos::topics;
use containerd_shim_protos::types::task::Status as TaskStatus;
use kata_agent_protocols::agent as agent_api;
use kata_config::Config;
use slog::Logger;
use tokio::sync::Mutex;
use ttrpc::r#async::TtrpcContext;

use crate::container::{self, Container, Exit, Process, Status, StdioPaths};
use crate::sandbox::Sandbox;
use crate::spec;

/// How long CloseIO lets the stdin copy reach the FIFO's end before closing stdin.
const STDIN_GRACE: Duration = Duration::from_secs(5);

/// The exit status of a process whose Start failed in the guest.
const FAILED_START_STATUS: u32 = 255;

/// CRI's annotation naming a container's kind (`sandbox` or `container`).
pub const CRI_CONTAINER_TYPE: &str = "io.kubernetes.cri.container-type";
/// CRI's annotation naming the sandbox a container belongs to.
pub const CRI_SANDBOX_ID: &str = "io.kubernetes.cri.sandbox-id";

fn error(code: ttrpc::Code, message: impl Into<String>) -> ttrpc::Error {
    ttrpc::Error::RpcStatus(ttrpc::get_status(code, message.into()))
}

fn timestamp(at: SystemTime) -> Timestamp {
    let since = at.duration_since(UNIX_EPOCH).unwrap_or_default();
    Timestamp {
        seconds: since.as_secs() as i64,
        nanos: since.subsec_nanos() as i32,
        ..Default::default()
    }
}

/// The shim's state.
#[derive(Default)]
pub struct State {
    /// The sandbox, once the first container created it.
    pub sandbox: Option<Arc<Sandbox>>,
    /// Its configuration.
    pub config: Option<Config>,
    /// Containers by id.
    pub containers: HashMap<String, Container>,
}

/// The Task service.
#[derive(Clone)]
pub struct KataTask {
    state: Arc<Mutex<State>>,
    publisher: Arc<RemotePublisher>,
    namespace: String,
    exit: Arc<ExitSignal>,
    log: Arc<std::sync::Mutex<Logger>>,
    shim_id: String,
}

/// The runtime options containerd sends: `runtimeoptions.v1.Options` (type_url = 1,
/// config_path = 2) is understood; anything else is an error naming what was sent.
fn config_path_from_options(options: &MessageField<Any>) -> Result<Option<String>, String> {
    let Some(any) = options.as_ref() else {
        return Ok(None);
    };
    if !any.type_url.ends_with("runtimeoptions.v1.Options") {
        return Err(format!(
            "runtime options of type '{}' are not understood by kata-rv (expected runtimeoptions.v1.Options)",
            any.type_url
        ));
    }
    let malformed = || "runtime options: malformed runtimeoptions.v1.Options".to_string();
    let mut input = containerd_shim_protos::protobuf::CodedInputStream::from_bytes(&any.value);
    let mut config_path = None;
    while let Some(tag) = input.read_raw_tag_or_eof().map_err(|_| malformed())? {
        match (tag >> 3, tag & 7) {
            (1, 2) => {
                input.read_string().map_err(|_| malformed())?;
            }
            (2, 2) => config_path = Some(input.read_string().map_err(|_| malformed())?),
            (field, _) => {
                return Err(format!(
                    "runtime options: field {field} of runtimeoptions.v1.Options is not supported"
                ));
            }
        }
    }
    Ok(config_path.filter(|p| !p.is_empty()))
}

impl KataTask {
    /// A service publishing to `publisher` in `namespace`.
    pub fn new(
        publisher: RemotePublisher,
        namespace: &str,
        exit: Arc<ExitSignal>,
        shim_id: &str,
    ) -> Self {
        Self {
            state: Arc::new(Mutex::new(State::default())),
            publisher: Arc::new(publisher),
            namespace: namespace.to_string(),
            exit,
            log: Arc::new(std::sync::Mutex::new(crate::log::open(shim_id, false))),
            shim_id: shim_id.to_string(),
        }
    }

    fn log(&self) -> Logger {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    async fn publish(&self, topic: &str, event: Box<dyn MessageDyn>) {
        let ctx = ttrpc::context::with_timeout(0);
        if let Err(e) = self
            .publisher
            .publish(ctx, topic, &self.namespace, event)
            .await
        {
            slog::warn!(self.log(), "publishing an event failed"; "topic" => topic, "error" => %e);
        }
    }

    fn pid() -> u32 {
        std::process::id()
    }

    async fn create_sandbox(
        &self,
        req: &api::CreateTaskRequest,
        oci: &oci_spec::runtime::Spec,
    ) -> ttrpc::Result<Arc<Sandbox>> {
        let env = std::env::var(kata_config::CONF_ENV).ok();
        let option_path = config_path_from_options(&req.options)
            .map_err(|e| error(ttrpc::Code::INVALID_ARGUMENT, e))?;
        let file = Config::find(env.as_deref(), option_path.as_deref())
            .map_err(|e| error(ttrpc::Code::FAILED_PRECONDITION, e.to_string()))?;
        let config =
            Config::load(&file).map_err(|e| error(ttrpc::Code::INVALID_ARGUMENT, e.to_string()))?;
        *self.log.lock().unwrap_or_else(|e| e.into_inner()) =
            crate::log::open(&self.shim_id, config.debug());
        let hostname = oci.hostname().clone().unwrap_or_default();
        let sandbox = Sandbox::start(&config, &req.id, &hostname, &self.log())
            .await
            .map_err(|e| error(ttrpc::Code::INTERNAL, e))?;
        let sandbox = Arc::new(sandbox);
        let mut state = self.state.lock().await;
        state.sandbox = Some(sandbox.clone());
        state.config = Some(config);
        Ok(sandbox)
    }

    async fn create_inner(&self, req: &api::CreateTaskRequest) -> ttrpc::Result<u32> {
        if !req.checkpoint.is_empty() {
            return Err(error(
                ttrpc::Code::UNIMPLEMENTED,
                "restoring from a checkpoint is not supported by kata-rv",
            ));
        }
        if self.state.lock().await.containers.contains_key(&req.id) {
            return Err(error(
                ttrpc::Code::ALREADY_EXISTS,
                format!("container {} already exists", req.id),
            ));
        }
        let bundle = PathBuf::from(&req.bundle);
        let config_json = bundle.join("config.json");
        let oci: oci_spec::runtime::Spec =
            oci_spec::runtime::Spec::load(&config_json).map_err(|e| {
                error(
                    ttrpc::Code::INVALID_ARGUMENT,
                    format!("{}: {e}", config_json.display()),
                )
            })?;
        let guest = spec::for_guest(&oci, &req.id)
            .map_err(|e| error(ttrpc::Code::INVALID_ARGUMENT, format!("config.json: {e}")))?;
        let existing = self.state.lock().await.sandbox.clone();
        let sandbox = match existing {
            Some(sandbox) => sandbox,
            None => self.create_sandbox(req, &oci).await?,
        };
        let mounted = container::mount_rootfs(&bundle, &req.rootfs)
            .map_err(|e| error(ttrpc::Code::INTERNAL, e))?;
        let entries = match container::share(&sandbox.paths, &req.id, &bundle, &guest.binds) {
            Ok(entries) => entries,
            Err(e) => {
                if mounted {
                    container::unmount_rootfs(&bundle);
                }
                return Err(error(ttrpc::Code::INTERNAL, e));
            }
        };
        let request = agent_api::CreateContainerRequest {
            container_id: req.id.clone(),
            exec_id: req.id.clone(),
            OCI: Some(guest.spec).into(),
            ..Default::default()
        };
        if let Err(e) = sandbox
            .agent
            .agent
            .create_container(context(sandbox.rpc_timeout), &request)
            .await
        {
            let _ = container::unshare(&entries);
            if mounted {
                container::unmount_rootfs(&bundle);
            }
            return Err(error(
                ttrpc::Code::INTERNAL,
                format!("CreateContainer in the guest: {e}"),
            ));
        }
        let stdio = StdioPaths {
            stdin: req.stdin.clone(),
            stdout: req.stdout.clone(),
            stderr: req.stderr.clone(),
            terminal: req.terminal,
        };
        let container = Container {
            bundle,
            init: Process::new(stdio, None),
            execs: HashMap::new(),
            paused: false,
            share_entries: entries,
            mounted_rootfs: mounted,
        };
        self.state
            .lock()
            .await
            .containers
            .insert(req.id.clone(), container);
        Ok(Self::pid())
    }

    async fn sandbox(&self) -> ttrpc::Result<Arc<Sandbox>> {
        self.state.lock().await.sandbox.clone().ok_or_else(|| {
            error(
                ttrpc::Code::FAILED_PRECONDITION,
                "the sandbox is not running",
            )
        })
    }

    fn spawn_waiter(
        &self,
        sandbox: Arc<Sandbox>,
        id: String,
        exec_id: String,
        io: tokio::task::JoinHandle<()>,
        sender: tokio::sync::watch::Sender<Option<Exit>>,
    ) {
        let this = self.clone();
        tokio::spawn(async move {
            let exit = container::wait_exit(&sandbox.agent, &id, &exec_id, io).await;
            sender.send_replace(Some(exit));
            let event = TaskExit {
                container_id: id.clone(),
                id: if exec_id.is_empty() {
                    id.clone()
                } else {
                    exec_id.clone()
                },
                pid: Self::pid(),
                exit_status: exit.status,
                exited_at: MessageField::some(timestamp(exit.at)),
                ..Default::default()
            };
            this.publish(topics::TASK_EXIT_EVENT_TOPIC, Box::new(event))
                .await;
        });
    }

    fn watch_oom(&self, sandbox: Arc<Sandbox>) {
        let this = self.clone();
        tokio::spawn(async move {
            loop {
                let request = agent_api::GetOOMEventRequest::new();
                match sandbox
                    .agent
                    .agent
                    .get_oom_event(context(Duration::ZERO), &request)
                    .await
                {
                    Ok(event) => {
                        let oom = TaskOOM {
                            container_id: event.container_id,
                            ..Default::default()
                        };
                        this.publish(topics::TASK_OOM_EVENT_TOPIC, Box::new(oom))
                            .await;
                    }
                    Err(_) => return,
                }
            }
        });
    }

    /// Pause or Resume: freeze/thaw in the guest, record it, publish the event.
    async fn set_paused(&self, id: &str, paused: bool) -> ttrpc::Result<api::Empty> {
        let sandbox = self.sandbox().await?;
        let timeout = context(sandbox.rpc_timeout);
        let result = if paused {
            let request = agent_api::PauseContainerRequest {
                container_id: id.into(),
                ..Default::default()
            };
            sandbox.agent.agent.pause_container(timeout, &request).await
        } else {
            let request = agent_api::ResumeContainerRequest {
                container_id: id.into(),
                ..Default::default()
            };
            sandbox
                .agent
                .agent
                .resume_container(timeout, &request)
                .await
        };
        let verb = if paused { "pausing" } else { "resuming" };
        result.map_err(|e| {
            error(
                ttrpc::Code::FAILED_PRECONDITION,
                format!("{verb} {id}: {e}"),
            )
        })?;
        if let Some(c) = self.state.lock().await.containers.get_mut(id) {
            c.paused = paused;
        }
        if paused {
            let event = TaskPaused {
                container_id: id.into(),
                ..Default::default()
            };
            self.publish(topics::TASK_PAUSED_EVENT_TOPIC, Box::new(event))
                .await;
        } else {
            let event = TaskResumed {
                container_id: id.into(),
                ..Default::default()
            };
            self.publish(topics::TASK_RESUMED_EVENT_TOPIC, Box::new(event))
                .await;
        }
        Ok(api::Empty::new())
    }

    /// A Start that failed in the guest ends the process: it is stopped (status 255, as
    /// for a program that could not be run) so that Wait returns and Delete can remove it.
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
        let event = TaskExit {
            container_id: id.to_string(),
            id: if exec_id.is_empty() { id } else { exec_id }.to_string(),
            pid: Self::pid(),
            exit_status: exit.status,
            exited_at: MessageField::some(timestamp(exit.at)),
            ..Default::default()
        };
        self.publish(topics::TASK_EXIT_EVENT_TOPIC, Box::new(event))
            .await;
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

fn status_of(status: Status) -> TaskStatus {
    match status {
        Status::Created => TaskStatus::CREATED,
        Status::Running => TaskStatus::RUNNING,
        Status::Paused => TaskStatus::PAUSED,
        Status::Stopped => TaskStatus::STOPPED,
    }
}

fn not_found(id: &str, exec_id: &str) -> ttrpc::Error {
    if exec_id.is_empty() {
        error(ttrpc::Code::NOT_FOUND, format!("container {id} not found"))
    } else {
        error(
            ttrpc::Code::NOT_FOUND,
            format!("process {exec_id} of container {id} not found"),
        )
    }
}

#[async_trait]
impl Task for KataTask {
    async fn create(
        &self,
        _: &TtrpcContext,
        req: api::CreateTaskRequest,
    ) -> ttrpc::Result<api::CreateTaskResponse> {
        let result = self.create_inner(&req).await;
        match result {
            Ok(pid) => {
                slog::info!(self.log(), "container created"; "container" => &req.id);
                let event = TaskCreate {
                    container_id: req.id.clone(),
                    bundle: req.bundle.clone(),
                    rootfs: req.rootfs.clone(),
                    io: MessageField::some(TaskIO {
                        stdin: req.stdin.clone(),
                        stdout: req.stdout.clone(),
                        stderr: req.stderr.clone(),
                        terminal: req.terminal,
                        ..Default::default()
                    }),
                    pid,
                    ..Default::default()
                };
                self.publish(topics::TASK_CREATE_EVENT_TOPIC, Box::new(event))
                    .await;
                if self.state.lock().await.containers.len() == 1
                    && let Ok(sandbox) = self.sandbox().await
                {
                    self.watch_oom(sandbox);
                }
                Ok(api::CreateTaskResponse {
                    pid,
                    ..Default::default()
                })
            }
            Err(e) => {
                slog::error!(self.log(), "create failed"; "container" => &req.id, "error" => %e);
                self.teardown_if_empty().await;
                Err(e)
            }
        }
    }

    async fn start(
        &self,
        _: &TtrpcContext,
        req: api::StartRequest,
    ) -> ttrpc::Result<api::StartResponse> {
        let sandbox = self.sandbox().await?;
        let (stdio, spec) = {
            let state = self.state.lock().await;
            let container = state
                .containers
                .get(&req.id)
                .ok_or_else(|| not_found(&req.id, ""))?;
            let process = container
                .process(&req.exec_id)
                .ok_or_else(|| not_found(&req.id, &req.exec_id))?;
            if process.started {
                return Err(error(
                    ttrpc::Code::FAILED_PRECONDITION,
                    format!("{} {} already started", req.id, req.exec_id),
                ));
            }
            (process.stdio.clone(), process.spec.clone())
        };
        let timeout = context(sandbox.rpc_timeout);
        let started = if req.exec_id.is_empty() {
            let request = agent_api::StartContainerRequest {
                container_id: req.id.clone(),
                ..Default::default()
            };
            sandbox.agent.agent.start_container(timeout, &request).await
        } else {
            let request = agent_api::ExecProcessRequest {
                container_id: req.id.clone(),
                exec_id: req.exec_id.clone(),
                process: spec.into(),
                ..Default::default()
            };
            sandbox.agent.agent.exec_process(timeout, &request).await
        }
        .map_err(|e| {
            error(
                ttrpc::Code::INTERNAL,
                format!("starting {} {}: {e}", req.id, req.exec_id),
            )
        });
        if let Err(e) = started {
            self.record_failed_start(&req.id, &req.exec_id).await;
            return Err(e);
        }
        let (io, stdin_done) = container::start_io(&sandbox.agent, &req.id, &req.exec_id, &stdio);
        let sender = {
            let mut state = self.state.lock().await;
            let process = state
                .containers
                .get_mut(&req.id)
                .and_then(|c| c.process_mut(&req.exec_id))
                .ok_or_else(|| not_found(&req.id, &req.exec_id))?;
            process.started = true;
            process.stdin_done = Some(stdin_done);
            process.exit_sender()
        };
        self.spawn_waiter(sandbox, req.id.clone(), req.exec_id.clone(), io, sender);
        if req.exec_id.is_empty() {
            let event = TaskStart {
                container_id: req.id.clone(),
                pid: Self::pid(),
                ..Default::default()
            };
            self.publish(topics::TASK_START_EVENT_TOPIC, Box::new(event))
                .await;
        } else {
            let event = TaskExecStarted {
                container_id: req.id.clone(),
                exec_id: req.exec_id.clone(),
                pid: Self::pid(),
                ..Default::default()
            };
            self.publish(topics::TASK_EXEC_STARTED_EVENT_TOPIC, Box::new(event))
                .await;
        }
        Ok(api::StartResponse {
            pid: Self::pid(),
            ..Default::default()
        })
    }

    async fn delete(
        &self,
        _: &TtrpcContext,
        req: api::DeleteRequest,
    ) -> ttrpc::Result<api::DeleteResponse> {
        let sandbox = self.sandbox().await.ok();
        let exit = {
            let mut state = self.state.lock().await;
            let container = state
                .containers
                .get_mut(&req.id)
                .ok_or_else(|| not_found(&req.id, &req.exec_id))?;
            if !req.exec_id.is_empty() {
                let process = container
                    .execs
                    .remove(&req.exec_id)
                    .ok_or_else(|| not_found(&req.id, &req.exec_id))?;
                let exit = process.exited();
                return Ok(api::DeleteResponse {
                    pid: Self::pid(),
                    exit_status: exit.map(|e| e.status).unwrap_or(0),
                    exited_at: exit.map(|e| timestamp(e.at)).into(),
                    ..Default::default()
                });
            }
            container.init.exited()
        };
        if let Some(sandbox) = &sandbox {
            let request = agent_api::RemoveContainerRequest {
                container_id: req.id.clone(),
                timeout: 10,
                ..Default::default()
            };
            if let Err(e) = sandbox
                .agent
                .agent
                .remove_container(context(sandbox.rpc_timeout), &request)
                .await
            {
                slog::warn!(self.log(), "RemoveContainer failed"; "container" => &req.id, "error" => %e);
            }
        }
        let container = self.state.lock().await.containers.remove(&req.id);
        if let Some(container) = container {
            if let Err(e) = container::unshare(&container.share_entries) {
                slog::warn!(self.log(), "a share entry was left in place"; "container" => &req.id, "error" => %e);
            }
            if container.mounted_rootfs {
                container::unmount_rootfs(&container.bundle);
            }
        }
        let exit = exit.unwrap_or(Exit {
            status: 128 + 9,
            at: SystemTime::now(),
        });
        let event = TaskDelete {
            container_id: req.id.clone(),
            pid: Self::pid(),
            exit_status: exit.status,
            exited_at: MessageField::some(timestamp(exit.at)),
            ..Default::default()
        };
        self.publish(topics::TASK_DELETE_EVENT_TOPIC, Box::new(event))
            .await;
        self.teardown_if_empty().await;
        Ok(api::DeleteResponse {
            pid: Self::pid(),
            exit_status: exit.status,
            exited_at: MessageField::some(timestamp(exit.at)),
            ..Default::default()
        })
    }

    async fn state(
        &self,
        _: &TtrpcContext,
        req: api::StateRequest,
    ) -> ttrpc::Result<api::StateResponse> {
        let state = self.state.lock().await;
        let container = state
            .containers
            .get(&req.id)
            .ok_or_else(|| not_found(&req.id, &req.exec_id))?;
        let process = container
            .process(&req.exec_id)
            .ok_or_else(|| not_found(&req.id, &req.exec_id))?;
        let exit = process.exited();
        Ok(api::StateResponse {
            id: req.id.clone(),
            bundle: container.bundle.to_string_lossy().into_owned(),
            pid: Self::pid(),
            status: status_of(container.status(&req.exec_id)).into(),
            stdin: process.stdio.stdin.clone(),
            stdout: process.stdio.stdout.clone(),
            stderr: process.stdio.stderr.clone(),
            terminal: process.stdio.terminal,
            exit_status: exit.map(|e| e.status).unwrap_or(0),
            exited_at: exit.map(|e| timestamp(e.at)).into(),
            exec_id: req.exec_id.clone(),
            ..Default::default()
        })
    }

    async fn kill(&self, _: &TtrpcContext, req: api::KillRequest) -> ttrpc::Result<api::Empty> {
        let sandbox = self.sandbox().await?;
        let never_started = {
            let mut state = self.state.lock().await;
            let container = state
                .containers
                .get_mut(&req.id)
                .ok_or_else(|| not_found(&req.id, &req.exec_id))?;
            let process = container
                .process_mut(&req.exec_id)
                .ok_or_else(|| not_found(&req.id, &req.exec_id))?;
            if process.exited().is_some() {
                // Killing a finished process again is not an error for TERM/KILL.
                return if req.signal == 9 || req.signal == 15 {
                    Ok(api::Empty::new())
                } else {
                    Err(error(
                        ttrpc::Code::NOT_FOUND,
                        format!("process {} {} already finished", req.id, req.exec_id),
                    ))
                };
            }
            // Only an init that was never started exists in the guest without a waiter
            // (an exec that was never started has no guest process at all).
            if !process.started && req.exec_id.is_empty() {
                process.started = true;
                Some(process.exit_sender())
            } else {
                None
            }
        };
        let request = agent_api::SignalProcessRequest {
            container_id: req.id.clone(),
            exec_id: req.exec_id.clone(),
            signal: req.signal,
            ..Default::default()
        };
        sandbox
            .agent
            .agent
            .signal_process(context(sandbox.rpc_timeout), &request)
            .await
            .map_err(|e| error(ttrpc::Code::INTERNAL, format!("signalling {}: {e}", req.id)))?;
        if let Some(sender) = never_started {
            // A created process has no waiter yet: the agent reports its end.
            let io = tokio::spawn(async {});
            self.spawn_waiter(sandbox, req.id.clone(), req.exec_id.clone(), io, sender);
        }
        Ok(api::Empty::new())
    }

    async fn exec(
        &self,
        _: &TtrpcContext,
        req: api::ExecProcessRequest,
    ) -> ttrpc::Result<api::Empty> {
        let any = req
            .spec
            .as_ref()
            .ok_or_else(|| error(ttrpc::Code::INVALID_ARGUMENT, "exec without a process spec"))?;
        let process: oci_spec::runtime::Process =
            serde_json::from_slice(&any.value).map_err(|e| {
                error(
                    ttrpc::Code::INVALID_ARGUMENT,
                    format!("exec process spec: {e}"),
                )
            })?;
        let stdio = StdioPaths {
            stdin: req.stdin.clone(),
            stdout: req.stdout.clone(),
            stderr: req.stderr.clone(),
            terminal: req.terminal,
        };
        {
            let mut state = self.state.lock().await;
            let container = state
                .containers
                .get_mut(&req.id)
                .ok_or_else(|| not_found(&req.id, ""))?;
            if container.execs.contains_key(&req.exec_id) {
                return Err(error(
                    ttrpc::Code::ALREADY_EXISTS,
                    format!("exec {} already exists", req.exec_id),
                ));
            }
            if container.status("") != Status::Running {
                return Err(error(
                    ttrpc::Code::FAILED_PRECONDITION,
                    format!("container {} is not running", req.id),
                ));
            }
            let guest = spec::process(&process);
            container
                .execs
                .insert(req.exec_id.clone(), Process::new(stdio, Some(guest)));
        }
        let event = TaskExecAdded {
            container_id: req.id.clone(),
            exec_id: req.exec_id.clone(),
            ..Default::default()
        };
        self.publish(topics::TASK_EXEC_ADDED_EVENT_TOPIC, Box::new(event))
            .await;
        Ok(api::Empty::new())
    }

    async fn resize_pty(
        &self,
        _: &TtrpcContext,
        req: api::ResizePtyRequest,
    ) -> ttrpc::Result<api::Empty> {
        let sandbox = self.sandbox().await?;
        let request = agent_api::TtyWinResizeRequest {
            container_id: req.id.clone(),
            exec_id: req.exec_id.clone(),
            row: req.height,
            column: req.width,
            ..Default::default()
        };
        sandbox
            .agent
            .agent
            .tty_win_resize(context(sandbox.rpc_timeout), &request)
            .await
            .map_err(|e| {
                error(
                    ttrpc::Code::INTERNAL,
                    format!("resizing the pty of {}: {e}", req.id),
                )
            })?;
        Ok(api::Empty::new())
    }

    async fn close_io(
        &self,
        _: &TtrpcContext,
        req: api::CloseIORequest,
    ) -> ttrpc::Result<api::Empty> {
        if !req.stdin {
            return Ok(api::Empty::new());
        }
        let sandbox = self.sandbox().await?;
        let stdin_done = {
            let state = self.state.lock().await;
            let container = state
                .containers
                .get(&req.id)
                .ok_or_else(|| not_found(&req.id, &req.exec_id))?;
            container
                .process(&req.exec_id)
                .ok_or_else(|| not_found(&req.id, &req.exec_id))?
                .stdin_done
                .clone()
        };
        let request = agent_api::CloseStdinRequest {
            container_id: req.id.clone(),
            exec_id: req.exec_id.clone(),
            ..Default::default()
        };
        // What the client wrote before closing must reach the process first: the copy
        // closes stdin itself at the FIFO's end; close it here only if that never comes.
        tokio::spawn(async move {
            if let Some(mut done) = stdin_done {
                let _ = tokio::time::timeout(STDIN_GRACE, done.wait_for(|d| *d)).await;
            }
            let _ = sandbox
                .agent
                .agent
                .close_stdin(context(sandbox.rpc_timeout), &request)
                .await;
        });
        Ok(api::Empty::new())
    }

    async fn wait(
        &self,
        _: &TtrpcContext,
        req: api::WaitRequest,
    ) -> ttrpc::Result<api::WaitResponse> {
        let mut exit = {
            let state = self.state.lock().await;
            let container = state
                .containers
                .get(&req.id)
                .ok_or_else(|| not_found(&req.id, &req.exec_id))?;
            container
                .process(&req.exec_id)
                .ok_or_else(|| not_found(&req.id, &req.exec_id))?
                .exit
                .clone()
        };
        let exit = exit
            .wait_for(Option::is_some)
            .await
            .map(|e| e.expect("waited for Some"))
            .map_err(|_| error(ttrpc::Code::INTERNAL, "the process record went away"))?;
        Ok(api::WaitResponse {
            exit_status: exit.status,
            exited_at: MessageField::some(timestamp(exit.at)),
            ..Default::default()
        })
    }

    async fn pids(
        &self,
        _: &TtrpcContext,
        req: api::PidsRequest,
    ) -> ttrpc::Result<api::PidsResponse> {
        let state = self.state.lock().await;
        state
            .containers
            .get(&req.id)
            .ok_or_else(|| not_found(&req.id, ""))?;
        let info = containerd_shim_protos::types::task::ProcessInfo {
            pid: Self::pid(),
            ..Default::default()
        };
        Ok(api::PidsResponse {
            processes: vec![info],
            ..Default::default()
        })
    }

    async fn pause(&self, _: &TtrpcContext, req: api::PauseRequest) -> ttrpc::Result<api::Empty> {
        self.set_paused(&req.id, true).await
    }

    async fn resume(&self, _: &TtrpcContext, req: api::ResumeRequest) -> ttrpc::Result<api::Empty> {
        self.set_paused(&req.id, false).await
    }

    async fn checkpoint(
        &self,
        _: &TtrpcContext,
        _: api::CheckpointTaskRequest,
    ) -> ttrpc::Result<api::Empty> {
        Err(error(
            ttrpc::Code::UNIMPLEMENTED,
            "checkpoint is not supported by kata-rv",
        ))
    }

    async fn update(
        &self,
        _: &TtrpcContext,
        req: api::UpdateTaskRequest,
    ) -> ttrpc::Result<api::Empty> {
        let sandbox = self.sandbox().await?;
        let any = req
            .resources
            .as_ref()
            .ok_or_else(|| error(ttrpc::Code::INVALID_ARGUMENT, "update without resources"))?;
        let resources: oci_spec::runtime::LinuxResources = serde_json::from_slice(&any.value)
            .map_err(|e| {
                error(
                    ttrpc::Code::INVALID_ARGUMENT,
                    format!("update resources: {e}"),
                )
            })?;
        let request = agent_api::UpdateContainerRequest {
            container_id: req.id.clone(),
            resources: Some(spec::linux_resources(&resources)).into(),
            ..Default::default()
        };
        sandbox
            .agent
            .agent
            .update_container(context(sandbox.rpc_timeout), &request)
            .await
            .map_err(|e| error(ttrpc::Code::INTERNAL, format!("updating {}: {e}", req.id)))?;
        Ok(api::Empty::new())
    }

    async fn stats(
        &self,
        _: &TtrpcContext,
        req: api::StatsRequest,
    ) -> ttrpc::Result<api::StatsResponse> {
        let sandbox = self.sandbox().await?;
        let request = agent_api::StatsContainerRequest {
            container_id: req.id.clone(),
            ..Default::default()
        };
        let stats = sandbox
            .agent
            .agent
            .stats_container(context(sandbox.rpc_timeout), &request)
            .await
            .map_err(|e| error(ttrpc::Code::INTERNAL, format!("stats of {}: {e}", req.id)))?;
        let any = crate::metrics::to_any(&crate::metrics::from_agent(&stats))
            .map_err(|e| error(ttrpc::Code::INTERNAL, e.to_string()))?;
        Ok(api::StatsResponse {
            stats: MessageField::some(any),
            ..Default::default()
        })
    }

    async fn connect(
        &self,
        _: &TtrpcContext,
        _: api::ConnectRequest,
    ) -> ttrpc::Result<api::ConnectResponse> {
        Ok(api::ConnectResponse {
            shim_pid: Self::pid(),
            task_pid: Self::pid(),
            version: env!("CARGO_PKG_VERSION").into(),
            ..Default::default()
        })
    }

    async fn shutdown(
        &self,
        _: &TtrpcContext,
        _: api::ShutdownRequest,
    ) -> ttrpc::Result<api::Empty> {
        if !self.state.lock().await.containers.is_empty() {
            return Ok(api::Empty::new());
        }
        self.teardown_if_empty().await;
        self.exit.signal();
        Ok(api::Empty::new())
    }
}

/// Removes what a dead shim of sandbox `id` left behind (the `delete` action).
pub fn cleanup_after_dead_shim(id: &str, bundle: &Path) {
    container::unmount_rootfs(bundle);
    crate::sandbox::remove_leftovers(id, None);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_path_is_read_from_runtime_options() {
        // runtimeoptions.v1.Options { type_url = 1: "x", config_path = 2: "/etc/k.toml" }
        let mut value = vec![0x0a, 1, b'x', 0x12, 11];
        value.extend_from_slice(b"/etc/k.toml");
        let any = Any {
            type_url: "type.googleapis.com/runtimeoptions.v1.Options".into(),
            value,
            ..Default::default()
        };
        assert_eq!(
            config_path_from_options(&MessageField::some(any))
                .unwrap()
                .as_deref(),
            Some("/etc/k.toml")
        );
        assert_eq!(
            config_path_from_options(&MessageField::none()).unwrap(),
            None
        );
    }

    #[test]
    fn unknown_runtime_options_are_errors() {
        let runc = Any {
            type_url: "containerd.runc.v1.Options".into(),
            value: vec![8, 1],
            ..Default::default()
        };
        let err = config_path_from_options(&MessageField::some(runc)).unwrap_err();
        assert!(err.contains("containerd.runc.v1.Options"), "{err}");
        // config_body (field 3) is a newer option this runtime does not take.
        let body = Any {
            type_url: "runtimeoptions.v1.Options".into(),
            value: vec![0x1a, 1, b'x'],
            ..Default::default()
        };
        assert!(
            config_path_from_options(&MessageField::some(body))
                .unwrap_err()
                .contains("field 3")
        );
        let truncated = Any {
            type_url: "runtimeoptions.v1.Options".into(),
            value: vec![0x12, 9, b'/'],
            ..Default::default()
        };
        assert!(
            config_path_from_options(&MessageField::some(truncated))
                .unwrap_err()
                .contains("malformed")
        );
    }
}
