//! `trait Agent`: the agent calls the runtime makes, typed, with their timeouts inside,
//! and its implementation over the ttrpc client.

use std::time::Duration;

use async_trait::async_trait;
use kata_agent_protocols::agent as api;
use kata_agent_protocols::oci;
use kata_agent_protocols::types;

use crate::{AgentClient, context};

/// A failed agent call.
#[derive(Debug, thiserror::Error)]
#[error("{rpc}: {source}")]
pub struct RpcError {
    /// The agent RPC.
    pub rpc: &'static str,
    /// What ttrpc said.
    #[source]
    pub source: ttrpc::Error,
}

/// Result of an agent call.
pub type RpcResult<T> = Result<T, RpcError>;

/// The guest agent as the runtime uses it. Calls that wait for the guest (wait, reads,
/// writes, OOM events) have no deadline; every other call has the connection's.
#[async_trait]
pub trait Agent: Send + Sync {
    /// CreateSandbox.
    async fn create_sandbox(&self, request: api::CreateSandboxRequest) -> RpcResult<()>;
    /// DestroySandbox.
    async fn destroy_sandbox(&self) -> RpcResult<()>;
    /// CreateContainer.
    async fn create_container(&self, request: api::CreateContainerRequest) -> RpcResult<()>;
    /// StartContainer.
    async fn start_container(&self, id: &str) -> RpcResult<()>;
    /// ExecProcess: starts `process` as `exec_id` in container `id`.
    async fn exec_process(&self, id: &str, exec_id: &str, process: oci::Process) -> RpcResult<()>;
    /// RemoveContainer (the agent kills what still runs, within `timeout_s`).
    async fn remove_container(&self, id: &str, timeout_s: u32) -> RpcResult<()>;
    /// SignalProcess.
    async fn signal_process(&self, id: &str, exec_id: &str, signal: u32) -> RpcResult<()>;
    /// WaitProcess: the exit status once the process has ended.
    async fn wait_process(&self, id: &str, exec_id: &str) -> RpcResult<i32>;
    /// ReadStdout or ReadStderr: up to `len` bytes, empty at the end.
    async fn read_output(
        &self,
        id: &str,
        exec_id: &str,
        stderr: bool,
        len: u32,
    ) -> RpcResult<Vec<u8>>;
    /// WriteStdin (empty data closes stdin).
    async fn write_stdin(&self, id: &str, exec_id: &str, data: Vec<u8>) -> RpcResult<()>;
    /// CloseStdin.
    async fn close_stdin(&self, id: &str, exec_id: &str) -> RpcResult<()>;
    /// TtyWinResize.
    async fn tty_win_resize(&self, id: &str, exec_id: &str, rows: u32, cols: u32) -> RpcResult<()>;
    /// PauseContainer or ResumeContainer.
    async fn set_paused(&self, id: &str, paused: bool) -> RpcResult<()>;
    /// UpdateContainer.
    async fn update_container(&self, id: &str, resources: oci::LinuxResources) -> RpcResult<()>;
    /// StatsContainer.
    async fn stats_container(&self, id: &str) -> RpcResult<api::StatsContainerResponse>;
    /// GetOOMEvent: the id of the next container that hit its memory limit.
    async fn get_oom_event(&self) -> RpcResult<String>;
    /// UpdateInterface: configures the guest interface with `interface`'s MAC; the
    /// guest's view of it (its name there).
    async fn update_interface(&self, interface: types::Interface) -> RpcResult<types::Interface>;
    /// UpdateRoutes: adds `routes` to the guest's table.
    async fn update_routes(&self, routes: Vec<types::Route>) -> RpcResult<()>;
}

/// [`Agent`] over a connected ttrpc client, with one deadline for ordinary calls.
#[derive(Clone)]
pub struct TtrpcAgent {
    /// The connection.
    pub client: AgentClient,
    /// Deadline of calls that do not wait for the guest's workload.
    pub rpc_timeout: Duration,
}

fn rpc<T>(name: &'static str, result: ttrpc::Result<T>) -> RpcResult<T> {
    result.map_err(|source| RpcError { rpc: name, source })
}

impl TtrpcAgent {
    fn timed(&self) -> ttrpc::context::Context {
        context(self.rpc_timeout)
    }
}

#[async_trait]
impl Agent for TtrpcAgent {
    async fn create_sandbox(&self, request: api::CreateSandboxRequest) -> RpcResult<()> {
        let reply = self
            .client
            .agent
            .create_sandbox(self.timed(), &request)
            .await;
        rpc("CreateSandbox", reply).map(drop)
    }

    async fn destroy_sandbox(&self) -> RpcResult<()> {
        let request = api::DestroySandboxRequest::new();
        let reply = self
            .client
            .agent
            .destroy_sandbox(self.timed(), &request)
            .await;
        rpc("DestroySandbox", reply).map(drop)
    }

    async fn create_container(&self, request: api::CreateContainerRequest) -> RpcResult<()> {
        let reply = self
            .client
            .agent
            .create_container(self.timed(), &request)
            .await;
        rpc("CreateContainer", reply).map(drop)
    }

    async fn start_container(&self, id: &str) -> RpcResult<()> {
        let request = api::StartContainerRequest {
            container_id: id.into(),
            ..Default::default()
        };
        let reply = self
            .client
            .agent
            .start_container(self.timed(), &request)
            .await;
        rpc("StartContainer", reply).map(drop)
    }

    async fn exec_process(&self, id: &str, exec_id: &str, process: oci::Process) -> RpcResult<()> {
        let request = api::ExecProcessRequest {
            container_id: id.into(),
            exec_id: exec_id.into(),
            process: Some(process).into(),
            ..Default::default()
        };
        let reply = self.client.agent.exec_process(self.timed(), &request).await;
        rpc("ExecProcess", reply).map(drop)
    }

    async fn remove_container(&self, id: &str, timeout_s: u32) -> RpcResult<()> {
        let request = api::RemoveContainerRequest {
            container_id: id.into(),
            timeout: timeout_s,
            ..Default::default()
        };
        let reply = self
            .client
            .agent
            .remove_container(self.timed(), &request)
            .await;
        rpc("RemoveContainer", reply).map(drop)
    }

    async fn signal_process(&self, id: &str, exec_id: &str, signal: u32) -> RpcResult<()> {
        let request = api::SignalProcessRequest {
            container_id: id.into(),
            exec_id: exec_id.into(),
            signal,
            ..Default::default()
        };
        let reply = self
            .client
            .agent
            .signal_process(self.timed(), &request)
            .await;
        rpc("SignalProcess", reply).map(drop)
    }

    async fn wait_process(&self, id: &str, exec_id: &str) -> RpcResult<i32> {
        let request = api::WaitProcessRequest {
            container_id: id.into(),
            exec_id: exec_id.into(),
            ..Default::default()
        };
        let reply = self
            .client
            .agent
            .wait_process(context(Duration::ZERO), &request)
            .await;
        rpc("WaitProcess", reply).map(|r| r.status)
    }

    async fn read_output(
        &self,
        id: &str,
        exec_id: &str,
        stderr: bool,
        len: u32,
    ) -> RpcResult<Vec<u8>> {
        let request = api::ReadStreamRequest {
            container_id: id.into(),
            exec_id: exec_id.into(),
            len,
            ..Default::default()
        };
        let untimed = context(Duration::ZERO);
        if stderr {
            let reply = self.client.agent.read_stderr(untimed, &request).await;
            rpc("ReadStderr", reply).map(|r| r.data)
        } else {
            let reply = self.client.agent.read_stdout(untimed, &request).await;
            rpc("ReadStdout", reply).map(|r| r.data)
        }
    }

    async fn write_stdin(&self, id: &str, exec_id: &str, data: Vec<u8>) -> RpcResult<()> {
        let request = api::WriteStreamRequest {
            container_id: id.into(),
            exec_id: exec_id.into(),
            data,
            ..Default::default()
        };
        let reply = self
            .client
            .agent
            .write_stdin(context(Duration::ZERO), &request)
            .await;
        rpc("WriteStdin", reply).map(drop)
    }

    async fn close_stdin(&self, id: &str, exec_id: &str) -> RpcResult<()> {
        let request = api::CloseStdinRequest {
            container_id: id.into(),
            exec_id: exec_id.into(),
            ..Default::default()
        };
        let reply = self.client.agent.close_stdin(self.timed(), &request).await;
        rpc("CloseStdin", reply).map(drop)
    }

    async fn tty_win_resize(&self, id: &str, exec_id: &str, rows: u32, cols: u32) -> RpcResult<()> {
        let request = api::TtyWinResizeRequest {
            container_id: id.into(),
            exec_id: exec_id.into(),
            row: rows,
            column: cols,
            ..Default::default()
        };
        let reply = self
            .client
            .agent
            .tty_win_resize(self.timed(), &request)
            .await;
        rpc("TtyWinResize", reply).map(drop)
    }

    async fn set_paused(&self, id: &str, paused: bool) -> RpcResult<()> {
        if paused {
            let request = api::PauseContainerRequest {
                container_id: id.into(),
                ..Default::default()
            };
            let reply = self
                .client
                .agent
                .pause_container(self.timed(), &request)
                .await;
            rpc("PauseContainer", reply).map(drop)
        } else {
            let request = api::ResumeContainerRequest {
                container_id: id.into(),
                ..Default::default()
            };
            let reply = self
                .client
                .agent
                .resume_container(self.timed(), &request)
                .await;
            rpc("ResumeContainer", reply).map(drop)
        }
    }

    async fn update_container(&self, id: &str, resources: oci::LinuxResources) -> RpcResult<()> {
        let request = api::UpdateContainerRequest {
            container_id: id.into(),
            resources: Some(resources).into(),
            ..Default::default()
        };
        let reply = self
            .client
            .agent
            .update_container(self.timed(), &request)
            .await;
        rpc("UpdateContainer", reply).map(drop)
    }

    async fn stats_container(&self, id: &str) -> RpcResult<api::StatsContainerResponse> {
        let request = api::StatsContainerRequest {
            container_id: id.into(),
            ..Default::default()
        };
        let reply = self
            .client
            .agent
            .stats_container(self.timed(), &request)
            .await;
        rpc("StatsContainer", reply)
    }

    async fn get_oom_event(&self) -> RpcResult<String> {
        let request = api::GetOOMEventRequest::new();
        let reply = self
            .client
            .agent
            .get_oom_event(context(Duration::ZERO), &request)
            .await;
        rpc("GetOOMEvent", reply).map(|e| e.container_id)
    }

    async fn update_interface(&self, interface: types::Interface) -> RpcResult<types::Interface> {
        let request = api::UpdateInterfaceRequest {
            interface: Some(interface).into(),
            ..Default::default()
        };
        let reply = self
            .client
            .agent
            .update_interface(self.timed(), &request)
            .await;
        rpc("UpdateInterface", reply)
    }

    async fn update_routes(&self, routes: Vec<types::Route>) -> RpcResult<()> {
        let request = api::UpdateRoutesRequest {
            routes: Some(api::Routes {
                Routes: routes,
                ..Default::default()
            })
            .into(),
            ..Default::default()
        };
        let reply = self
            .client
            .agent
            .update_routes(self.timed(), &request)
            .await;
        rpc("UpdateRoutes", reply).map(drop)
    }
}
