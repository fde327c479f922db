//! containerd's Sandbox service (`containerd.runtime.sandbox.v1.Sandbox`, containerd 2.x
//! with `sandboxer = "shim"`): protobuf in, the runtime's pod calls out. The pod's
//! containers then come through the Task service and join the sandbox's VM.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use containerd_shim::asynchronous::ExitSignal;
use containerd_shim_protos::protobuf::MessageField;
use containerd_shim_protos::sandbox_api as api;
use containerd_shim_protos::sandbox_async::Sandbox;
use containerd_shim_protos::types::platform::Platform;
use kata_runtimes::{Code, PodPhase, PodSetup, Runtime, RuntimeError};
use ttrpc::r#async::TtrpcContext;

use crate::convert::to_ttrpc;
use crate::events::timestamp;
use crate::task::KataTask;

/// The Sandbox service of one shim, over the same runtime as its Task service.
pub struct KataSandbox {
    runtime: Arc<Runtime>,
    exit: Arc<ExitSignal>,
    /// For the configuration lookup, shared with Task.Create.
    task: KataTask,
}

impl KataSandbox {
    /// The service over `task`'s runtime.
    pub fn new(runtime: Arc<Runtime>, exit: Arc<ExitSignal>, task: KataTask) -> Self {
        Self {
            runtime,
            exit,
            task,
        }
    }
}

/// What the pod asks for: what the spec in its bundle says (hostname, annotations,
/// resources), and the network namespace containerd made for it.
fn pod_setup(req: &api::CreateSandboxRequest) -> PodSetup {
    let from_bundle =
        oci_spec::runtime::Spec::load(Path::new(&req.bundle_path).join("config.json"))
            .map(|spec| PodSetup::from_spec(&spec))
            .unwrap_or_default();
    PodSetup {
        netns: (!req.netns_path.is_empty()).then(|| PathBuf::from(&req.netns_path)),
        ..from_bundle
    }
}

/// containerd's name for this machine's architecture.
fn architecture() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        other => other,
    }
}

#[async_trait]
impl Sandbox for KataSandbox {
    async fn create_sandbox(
        &self,
        _: &TtrpcContext,
        req: api::CreateSandboxRequest,
    ) -> ttrpc::Result<api::CreateSandboxResponse> {
        let load = || self.task.load_config(&req.options);
        self.runtime
            .create_pod(&req.sandbox_id, pod_setup(&req), &load)
            .await
            .map_err(to_ttrpc)?;
        Ok(api::CreateSandboxResponse::new())
    }

    async fn start_sandbox(
        &self,
        _: &TtrpcContext,
        req: api::StartSandboxRequest,
    ) -> ttrpc::Result<api::StartSandboxResponse> {
        let created = self
            .runtime
            .start_pod(&req.sandbox_id)
            .await
            .map_err(to_ttrpc)?;
        Ok(api::StartSandboxResponse {
            pid: self.runtime.pid(),
            created_at: MessageField::some(timestamp(created)),
            ..Default::default()
        })
    }

    async fn platform(
        &self,
        _: &TtrpcContext,
        _: api::PlatformRequest,
    ) -> ttrpc::Result<api::PlatformResponse> {
        Ok(api::PlatformResponse {
            platform: MessageField::some(Platform {
                os: "linux".into(),
                architecture: architecture().into(),
                ..Default::default()
            }),
            ..Default::default()
        })
    }

    async fn stop_sandbox(
        &self,
        _: &TtrpcContext,
        req: api::StopSandboxRequest,
    ) -> ttrpc::Result<api::StopSandboxResponse> {
        self.runtime
            .stop_pod(&req.sandbox_id)
            .await
            .map_err(to_ttrpc)?;
        Ok(api::StopSandboxResponse::new())
    }

    async fn wait_sandbox(
        &self,
        _: &TtrpcContext,
        req: api::WaitSandboxRequest,
    ) -> ttrpc::Result<api::WaitSandboxResponse> {
        let exit = self
            .runtime
            .wait_pod(&req.sandbox_id)
            .await
            .map_err(to_ttrpc)?;
        Ok(api::WaitSandboxResponse {
            exit_status: exit.status,
            exited_at: MessageField::some(timestamp(exit.at)),
            ..Default::default()
        })
    }

    async fn sandbox_status(
        &self,
        _: &TtrpcContext,
        req: api::SandboxStatusRequest,
    ) -> ttrpc::Result<api::SandboxStatusResponse> {
        let status = self
            .runtime
            .pod_status(&req.sandbox_id)
            .await
            .map_err(to_ttrpc)?;
        // containerd's sandbox states (SandboxReady / SandboxNotReady).
        let state = match status.phase {
            PodPhase::Ready => "SANDBOX_READY",
            PodPhase::Created | PodPhase::Stopped => "SANDBOX_NOTREADY",
        };
        Ok(api::SandboxStatusResponse {
            sandbox_id: status.id,
            pid: self.runtime.pid(),
            state: state.into(),
            created_at: MessageField::some(timestamp(status.created_at)),
            exited_at: status.exited_at.map(timestamp).into(),
            ..Default::default()
        })
    }

    async fn ping_sandbox(
        &self,
        _: &TtrpcContext,
        req: api::PingRequest,
    ) -> ttrpc::Result<api::PingResponse> {
        let status = self
            .runtime
            .pod_status(&req.sandbox_id)
            .await
            .map_err(to_ttrpc)?;
        if status.phase != PodPhase::Ready {
            return Err(to_ttrpc(RuntimeError::new(
                Code::FailedPrecondition,
                format!("sandbox {} is {:?}", req.sandbox_id, status.phase),
            )));
        }
        Ok(api::PingResponse::new())
    }

    async fn shutdown_sandbox(
        &self,
        _: &TtrpcContext,
        req: api::ShutdownSandboxRequest,
    ) -> ttrpc::Result<api::ShutdownSandboxResponse> {
        if self
            .runtime
            .shutdown_pod(&req.sandbox_id)
            .await
            .map_err(to_ttrpc)?
        {
            self.exit.signal();
        }
        Ok(api::ShutdownSandboxResponse::new())
    }
}
