//! containerd's Task service (task API v2): protobuf in, [`Runtime`] calls, protobuf out.

use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use containerd_shim::asynchronous::ExitSignal;
use containerd_shim_protos::api;
use containerd_shim_protos::protobuf::MessageField;
use containerd_shim_protos::shim_async::Task;
use kata_config::Config;
use kata_runtimes::{Code, CreateRequest, Runtime, RuntimeError, RuntimeResult};
use slog::Logger;
use ttrpc::r#async::TtrpcContext;

use crate::convert::{invalid, rootfs, status_of, stdio, to_ttrpc};
use crate::events::timestamp;

/// Runs `work` as its own task: a request whose connection goes away (containerd killed
/// or restarted) would otherwise be dropped at an await point, halfway through building
/// or removing a container, and leave what it had built with no record of it.
async fn detached<T: Send + 'static>(work: impl Future<Output = T> + Send + 'static) -> T {
    match tokio::spawn(work).await {
        Ok(done) => done,
        // A panic aborts the shim (panic = "abort"); a runtime shutting down ends it.
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}

/// The Task service of one shim.
#[derive(Clone)]
pub struct KataTask {
    runtime: Arc<Runtime>,
    exit: Arc<ExitSignal>,
    log: Arc<std::sync::Mutex<Logger>>,
    shim_id: String,
}

impl KataTask {
    /// The service over `runtime`; `log` is the logger the runtime shares.
    pub fn new(
        runtime: Arc<Runtime>,
        exit: Arc<ExitSignal>,
        log: Arc<std::sync::Mutex<Logger>>,
        shim_id: &str,
    ) -> Self {
        Self {
            runtime,
            exit,
            log,
            shim_id: shim_id.to_string(),
        }
    }

    /// Finds and loads the configuration (env, then runtime options of Create or else of
    /// `start`, then the search path) and reopens the log at its level.
    pub(crate) fn load_config(
        &self,
        options: &MessageField<containerd_shim_protos::protobuf::well_known_types::any::Any>,
    ) -> RuntimeResult<Config> {
        let env = std::env::var(kata_config::CONF_ENV).ok();
        let option_path = crate::options::config_path_from_options(options)
            .map_err(|e| RuntimeError::new(Code::InvalidArgument, e))?
            .or_else(|| std::env::var(crate::start::START_CONFIG_ENV).ok());
        let file = Config::find(env.as_deref(), option_path.as_deref())
            .map_err(|e| RuntimeError::new(Code::FailedPrecondition, e.to_string()))?;
        let config = Config::load(&file)
            .map_err(|e| RuntimeError::new(Code::InvalidArgument, e.to_string()))?;
        *self.log.lock().unwrap_or_else(|e| e.into_inner()) =
            crate::log::open(&self.shim_id, config.debug());
        Ok(config)
    }
}

#[async_trait]
impl Task for KataTask {
    async fn create(
        &self,
        _: &TtrpcContext,
        req: api::CreateTaskRequest,
    ) -> ttrpc::Result<api::CreateTaskResponse> {
        if !req.checkpoint.is_empty() {
            return Err(to_ttrpc(RuntimeError::new(
                Code::Unimplemented,
                "restoring from a checkpoint is not supported by kata-rv",
            )));
        }
        let request = CreateRequest {
            id: req.id.clone(),
            bundle: PathBuf::from(&req.bundle),
            rootfs: rootfs(&req.rootfs),
            stdio: stdio(&req.stdin, &req.stdout, &req.stderr, req.terminal),
        };
        let this = self.clone();
        let pid = detached(async move {
            let load = || this.load_config(&req.options);
            this.runtime.create(request, &load).await
        })
        .await
        .map_err(to_ttrpc)?;
        Ok(api::CreateTaskResponse {
            pid,
            ..Default::default()
        })
    }

    async fn start(
        &self,
        _: &TtrpcContext,
        req: api::StartRequest,
    ) -> ttrpc::Result<api::StartResponse> {
        let runtime = self.runtime.clone();
        let pid = detached(async move { runtime.start(&req.id, &req.exec_id).await })
            .await
            .map_err(to_ttrpc)?;
        Ok(api::StartResponse {
            pid,
            ..Default::default()
        })
    }

    async fn delete(
        &self,
        _: &TtrpcContext,
        req: api::DeleteRequest,
    ) -> ttrpc::Result<api::DeleteResponse> {
        let runtime = self.runtime.clone();
        let exit = detached(async move { runtime.delete(&req.id, &req.exec_id).await })
            .await
            .map_err(to_ttrpc)?;
        Ok(api::DeleteResponse {
            pid: self.runtime.pid(),
            exit_status: exit.map(|e| e.status).unwrap_or(0),
            exited_at: exit.map(|e| timestamp(e.at)).into(),
            ..Default::default()
        })
    }

    async fn state(
        &self,
        _: &TtrpcContext,
        req: api::StateRequest,
    ) -> ttrpc::Result<api::StateResponse> {
        let state = self
            .runtime
            .state(&req.id, &req.exec_id)
            .await
            .map_err(to_ttrpc)?;
        Ok(api::StateResponse {
            id: req.id.clone(),
            bundle: state.bundle.to_string_lossy().into_owned(),
            pid: self.runtime.pid(),
            status: status_of(state.status).into(),
            stdin: state.stdio.stdin,
            stdout: state.stdio.stdout,
            stderr: state.stdio.stderr,
            terminal: state.stdio.terminal,
            exit_status: state.exit.map(|e| e.status).unwrap_or(0),
            exited_at: state.exit.map(|e| timestamp(e.at)).into(),
            exec_id: req.exec_id.clone(),
            ..Default::default()
        })
    }

    async fn kill(&self, _: &TtrpcContext, req: api::KillRequest) -> ttrpc::Result<api::Empty> {
        self.runtime
            .kill(&req.id, &req.exec_id, req.signal)
            .await
            .map_err(to_ttrpc)?;
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
            .ok_or_else(|| invalid("exec without a process spec"))?;
        let process: oci_spec::runtime::Process = serde_json::from_slice(&any.value)
            .map_err(|e| invalid(format!("exec process spec: {e}")))?;
        let stdio = stdio(&req.stdin, &req.stdout, &req.stderr, req.terminal);
        self.runtime
            .exec(&req.id, &req.exec_id, &process, stdio)
            .await
            .map_err(to_ttrpc)?;
        Ok(api::Empty::new())
    }

    async fn resize_pty(
        &self,
        _: &TtrpcContext,
        req: api::ResizePtyRequest,
    ) -> ttrpc::Result<api::Empty> {
        self.runtime
            .resize_pty(&req.id, &req.exec_id, req.height, req.width)
            .await
            .map_err(to_ttrpc)?;
        Ok(api::Empty::new())
    }

    async fn close_io(
        &self,
        _: &TtrpcContext,
        req: api::CloseIORequest,
    ) -> ttrpc::Result<api::Empty> {
        if req.stdin {
            self.runtime
                .close_stdin(&req.id, &req.exec_id)
                .await
                .map_err(to_ttrpc)?;
        }
        Ok(api::Empty::new())
    }

    async fn wait(
        &self,
        _: &TtrpcContext,
        req: api::WaitRequest,
    ) -> ttrpc::Result<api::WaitResponse> {
        let exit = self
            .runtime
            .wait(&req.id, &req.exec_id)
            .await
            .map_err(to_ttrpc)?;
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
        if !self.runtime.has_container(&req.id).await {
            return Err(to_ttrpc(RuntimeError::not_found(&req.id, "")));
        }
        let info = containerd_shim_protos::types::task::ProcessInfo {
            pid: self.runtime.pid(),
            ..Default::default()
        };
        Ok(api::PidsResponse {
            processes: vec![info],
            ..Default::default()
        })
    }

    async fn pause(&self, _: &TtrpcContext, req: api::PauseRequest) -> ttrpc::Result<api::Empty> {
        self.runtime
            .set_paused(&req.id, true)
            .await
            .map_err(to_ttrpc)?;
        Ok(api::Empty::new())
    }

    async fn resume(&self, _: &TtrpcContext, req: api::ResumeRequest) -> ttrpc::Result<api::Empty> {
        self.runtime
            .set_paused(&req.id, false)
            .await
            .map_err(to_ttrpc)?;
        Ok(api::Empty::new())
    }

    async fn checkpoint(
        &self,
        _: &TtrpcContext,
        _: api::CheckpointTaskRequest,
    ) -> ttrpc::Result<api::Empty> {
        Err(to_ttrpc(RuntimeError::new(
            Code::Unimplemented,
            "checkpoint is not supported by kata-rv",
        )))
    }

    async fn update(
        &self,
        _: &TtrpcContext,
        req: api::UpdateTaskRequest,
    ) -> ttrpc::Result<api::Empty> {
        let any = req
            .resources
            .as_ref()
            .ok_or_else(|| invalid("update without resources"))?;
        let resources: oci_spec::runtime::LinuxResources = serde_json::from_slice(&any.value)
            .map_err(|e| invalid(format!("update resources: {e}")))?;
        self.runtime
            .update(&req.id, &resources)
            .await
            .map_err(to_ttrpc)?;
        Ok(api::Empty::new())
    }

    async fn stats(
        &self,
        _: &TtrpcContext,
        req: api::StatsRequest,
    ) -> ttrpc::Result<api::StatsResponse> {
        let stats = self.runtime.stats(&req.id).await.map_err(to_ttrpc)?;
        let any = crate::metrics::to_any(&crate::metrics::from_agent(&stats))
            .map_err(|e| to_ttrpc(RuntimeError::caused(Code::Internal, "encoding metrics", e)))?;
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
            shim_pid: self.runtime.pid(),
            task_pid: self.runtime.pid(),
            version: env!("CARGO_PKG_VERSION").into(),
            ..Default::default()
        })
    }

    async fn shutdown(
        &self,
        _: &TtrpcContext,
        _: api::ShutdownRequest,
    ) -> ttrpc::Result<api::Empty> {
        if self.runtime.shutdown().await {
            self.exit.signal();
        }
        Ok(api::Empty::new())
    }
}
