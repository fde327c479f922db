//! The ttrpc services: grpc.AgentService and grpc.Health.

use std::sync::Arc;

use async_trait::async_trait;
use kata_agent_protocols::agent::{self as api};
use kata_agent_protocols::empty::Empty;
use kata_agent_protocols::{agent_ttrpc, health, health_ttrpc};
use nix::sys::signal::Signal;
use ttrpc::r#async::TtrpcContext;

use crate::container::{self, Container, CreateRequest};
use crate::error::{AgentError, AgentResult};
use crate::guest;
use crate::plan;
use crate::sandbox::Sandbox;

/// The agent's version, reported by Health.Version and GetGuestDetails.
pub const AGENT_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Largest read served by ReadStdout/ReadStderr.
const MAX_READ: u32 = 1 << 20;

/// grpc.AgentService over the sandbox.
pub struct AgentService {
    sandbox: Arc<Sandbox>,
    /// Called after DestroySandbox has answered.
    shutdown: tokio::sync::mpsc::UnboundedSender<()>,
}

impl AgentService {
    /// A service for `sandbox`; `shutdown` is signalled after DestroySandbox.
    pub fn new(sandbox: Arc<Sandbox>, shutdown: tokio::sync::mpsc::UnboundedSender<()>) -> Self {
        Self { sandbox, shutdown }
    }

    fn log_result<T>(&self, rpc: &str, id: &str, result: AgentResult<T>) -> ttrpc::Result<T> {
        match result {
            Ok(value) => {
                slog::debug!(self.sandbox.log, "rpc done"; "rpc" => rpc, "container" => id);
                Ok(value)
            }
            Err(error) => {
                slog::warn!(self.sandbox.log, "rpc failed"; "rpc" => rpc, "container" => id, "error" => %error);
                Err(error.into())
            }
        }
    }

    async fn create_container_inner(&self, req: api::CreateContainerRequest) -> AgentResult<()> {
        let id = req.container_id.as_str();
        container::check_id("container id", id)?;
        let spec = req
            .OCI
            .as_ref()
            .ok_or_else(|| AgentError::invalid("CreateContainer without an OCI spec"))?;
        if self
            .sandbox
            .containers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(id)
        {
            return Err(AgentError::exists(format!(
                "container '{id}' already exists"
            )));
        }
        let pod = plan::namespace_plan(spec)
            .map_err(AgentError::invalid)?
            .pod
            .map(|share| self.sandbox.pod_sandbox(&share))
            .transpose()?;
        let mut points = Vec::new();
        {
            let mut storages = self
                .sandbox
                .storages
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            for storage in &req.storages {
                match storages.add(storage) {
                    Ok(point) => points.push(point),
                    Err(error) => {
                        points.iter().for_each(|p| storages.release(p));
                        return Err(error);
                    }
                }
            }
        }
        let request = CreateRequest {
            id,
            spec,
            cgroup_root: self.sandbox.cgroup_root.as_deref(),
            storages: points.clone(),
            pod,
        };
        let created = Container::create(&self.sandbox.reaper, request).await;
        let container = match created {
            Ok(container) => Arc::new(container),
            Err(error) => {
                let mut storages = self
                    .sandbox
                    .storages
                    .lock()
                    .unwrap_or_else(|e| e.into_inner());
                points.iter().for_each(|p| storages.release(p));
                return Err(error);
            }
        };
        self.sandbox.watch_oom(&container);
        let mut containers = self
            .sandbox
            .containers
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        containers.insert(id.to_string(), container);
        slog::info!(self.sandbox.log, "container created"; "container" => id);
        Ok(())
    }

    async fn remove(&self, id: &str, timeout: u32) -> AgentResult<()> {
        let container = self.sandbox.container(id)?;
        container.destroy(timeout).await?;
        self.sandbox
            .containers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
        let mut storages = self
            .sandbox
            .storages
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        container.storages.iter().for_each(|p| storages.release(p));
        slog::info!(self.sandbox.log, "container removed"; "container" => id);
        Ok(())
    }

    /// Removes every container and releases every storage (DestroySandbox, and the
    /// agent's own shutdown).
    pub async fn remove_everything(&self) {
        let ids: Vec<String> = self
            .sandbox
            .containers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .cloned()
            .collect();
        for id in ids {
            if let Err(error) = self.remove(&id, 10).await {
                slog::warn!(self.sandbox.log, "removing container at shutdown"; "container" => &id, "error" => %error);
            }
        }
        self.sandbox
            .storages
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .release_all();
    }

    async fn read_stream(
        &self,
        req: &api::ReadStreamRequest,
        stderr: bool,
    ) -> AgentResult<Vec<u8>> {
        let container = self.sandbox.container(&req.container_id)?;
        let process = container.process(&req.exec_id)?;
        let slot = if stderr {
            &process.io.stderr
        } else {
            &process.io.stdout
        };
        let mut stream = slot.lock().await;
        let Some(reader) = stream.as_ref() else {
            return Ok(Vec::new());
        };
        let data = reader
            .read(req.len.clamp(1, MAX_READ) as usize)
            .await
            .map_err(|e| {
                AgentError::internal(format!("reading from process '{}': {e}", process.exec_id))
            })?;
        if data.is_empty() {
            *stream = None;
            drop(stream);
            container.forget_if_done(&process).await;
        }
        Ok(data)
    }
}

fn signal_from(number: u32) -> AgentResult<Signal> {
    i32::try_from(number)
        .ok()
        .and_then(|n| Signal::try_from(n).ok())
        .ok_or_else(|| AgentError::invalid(format!("signal {number} is not a valid signal")))
}

#[async_trait]
impl agent_ttrpc::AgentService for AgentService {
    async fn create_container(
        &self,
        _: &TtrpcContext,
        req: api::CreateContainerRequest,
    ) -> ttrpc::Result<Empty> {
        let id = req.container_id.clone();
        let result = self.create_container_inner(req).await;
        self.log_result("CreateContainer", &id, result)
            .map(|()| Empty::new())
    }

    async fn start_container(
        &self,
        _: &TtrpcContext,
        req: api::StartContainerRequest,
    ) -> ttrpc::Result<Empty> {
        let result = async {
            let container = self.sandbox.container(&req.container_id)?;
            container.start().await
        }
        .await;
        self.log_result("StartContainer", &req.container_id, result)
            .map(|()| Empty::new())
    }

    async fn remove_container(
        &self,
        _: &TtrpcContext,
        req: api::RemoveContainerRequest,
    ) -> ttrpc::Result<Empty> {
        let result = self.remove(&req.container_id, req.timeout).await;
        self.log_result("RemoveContainer", &req.container_id, result)
            .map(|()| Empty::new())
    }

    async fn exec_process(
        &self,
        _: &TtrpcContext,
        req: api::ExecProcessRequest,
    ) -> ttrpc::Result<Empty> {
        let result = async {
            let container = self.sandbox.container(&req.container_id)?;
            let process = req
                .process
                .as_ref()
                .ok_or_else(|| AgentError::invalid("ExecProcess without a process"))?;
            container
                .exec(&self.sandbox.reaper, &req.exec_id, process)
                .await
        }
        .await;
        self.log_result("ExecProcess", &req.container_id, result)
            .map(|()| Empty::new())
    }

    async fn signal_process(
        &self,
        _: &TtrpcContext,
        req: api::SignalProcessRequest,
    ) -> ttrpc::Result<Empty> {
        let result = (|| {
            let signal = signal_from(req.signal)?;
            self.sandbox
                .container(&req.container_id)?
                .signal(&req.exec_id, signal)
        })();
        self.log_result("SignalProcess", &req.container_id, result)
            .map(|()| Empty::new())
    }

    async fn wait_process(
        &self,
        _: &TtrpcContext,
        req: api::WaitProcessRequest,
    ) -> ttrpc::Result<api::WaitProcessResponse> {
        let result = async {
            let container = self.sandbox.container(&req.container_id)?;
            let process = container.process(&req.exec_id)?;
            let status = process.wait().await;
            // Once waited for, an exec's stdin is closed; its entry goes once its output
            // has been read too.
            process.io.stdin.lock().await.take();
            container.mark_waited(&process);
            container.forget_if_done(&process).await;
            Ok(api::WaitProcessResponse {
                status,
                ..Default::default()
            })
        }
        .await;
        self.log_result("WaitProcess", &req.container_id, result)
    }

    async fn update_container(
        &self,
        _: &TtrpcContext,
        req: api::UpdateContainerRequest,
    ) -> ttrpc::Result<Empty> {
        let result = (|| {
            let container = self.sandbox.container(&req.container_id)?;
            let cgroup = container
                .cgroup
                .as_ref()
                .ok_or_else(|| AgentError::precondition("updating resources needs cgroup v2"))?;
            let resources = req
                .resources
                .as_ref()
                .ok_or_else(|| AgentError::invalid("UpdateContainer without resources"))?;
            cgroup.apply(resources).map_err(AgentError::invalid)
        })();
        self.log_result("UpdateContainer", &req.container_id, result)
            .map(|()| Empty::new())
    }

    async fn stats_container(
        &self,
        _: &TtrpcContext,
        req: api::StatsContainerRequest,
    ) -> ttrpc::Result<api::StatsContainerResponse> {
        let result = (|| {
            let container = self.sandbox.container(&req.container_id)?;
            let cgroup = container
                .cgroup
                .as_ref()
                .ok_or_else(|| AgentError::precondition("container stats need cgroup v2"))?;
            Ok(api::StatsContainerResponse {
                cgroup_stats: Some(cgroup.stats()).into(),
                ..Default::default()
            })
        })();
        self.log_result("StatsContainer", &req.container_id, result)
    }

    async fn pause_container(
        &self,
        _: &TtrpcContext,
        req: api::PauseContainerRequest,
    ) -> ttrpc::Result<Empty> {
        let result = self
            .sandbox
            .container(&req.container_id)
            .and_then(|c| c.set_paused(true));
        self.log_result("PauseContainer", &req.container_id, result)
            .map(|()| Empty::new())
    }

    async fn resume_container(
        &self,
        _: &TtrpcContext,
        req: api::ResumeContainerRequest,
    ) -> ttrpc::Result<Empty> {
        let result = self
            .sandbox
            .container(&req.container_id)
            .and_then(|c| c.set_paused(false));
        self.log_result("ResumeContainer", &req.container_id, result)
            .map(|()| Empty::new())
    }

    async fn write_stdin(
        &self,
        _: &TtrpcContext,
        req: api::WriteStreamRequest,
    ) -> ttrpc::Result<api::WriteStreamResponse> {
        let result = async {
            let container = self.sandbox.container(&req.container_id)?;
            let process = container.process(&req.exec_id)?;
            let mut stdin = process.io.stdin.lock().await;
            if req.data.is_empty() {
                stdin.take();
                return Ok(api::WriteStreamResponse::new());
            }
            let writer = stdin.as_ref().ok_or_else(|| {
                AgentError::precondition(format!("stdin of '{}' is closed", process.exec_id))
            })?;
            writer.write_all(&req.data).await.map_err(|e| {
                AgentError::internal(format!("writing to stdin of '{}': {e}", process.exec_id))
            })?;
            Ok(api::WriteStreamResponse {
                len: req.data.len() as u32,
                ..Default::default()
            })
        }
        .await;
        self.log_result("WriteStdin", &req.container_id, result)
    }

    async fn read_stdout(
        &self,
        _: &TtrpcContext,
        req: api::ReadStreamRequest,
    ) -> ttrpc::Result<api::ReadStreamResponse> {
        let result = self.read_stream(&req, false).await;
        self.log_result("ReadStdout", &req.container_id, result)
            .map(|data| api::ReadStreamResponse {
                data,
                ..Default::default()
            })
    }

    async fn read_stderr(
        &self,
        _: &TtrpcContext,
        req: api::ReadStreamRequest,
    ) -> ttrpc::Result<api::ReadStreamResponse> {
        let result = self.read_stream(&req, true).await;
        self.log_result("ReadStderr", &req.container_id, result)
            .map(|data| api::ReadStreamResponse {
                data,
                ..Default::default()
            })
    }

    async fn close_stdin(
        &self,
        _: &TtrpcContext,
        req: api::CloseStdinRequest,
    ) -> ttrpc::Result<Empty> {
        let result = async {
            let process = self
                .sandbox
                .container(&req.container_id)?
                .process(&req.exec_id)?;
            process.io.stdin.lock().await.take();
            Ok(())
        }
        .await;
        self.log_result("CloseStdin", &req.container_id, result)
            .map(|()| Empty::new())
    }

    async fn tty_win_resize(
        &self,
        _: &TtrpcContext,
        req: api::TtyWinResizeRequest,
    ) -> ttrpc::Result<Empty> {
        let result = (|| {
            let process = self
                .sandbox
                .container(&req.container_id)?
                .process(&req.exec_id)?;
            let clamp = |v: u32| v.min(u16::MAX as u32) as u16;
            process
                .io
                .resize(clamp(req.row), clamp(req.column))
                .map_err(AgentError::precondition)
        })();
        self.log_result("TtyWinResize", &req.container_id, result)
            .map(|()| Empty::new())
    }

    async fn update_interface(
        &self,
        _: &TtrpcContext,
        req: api::UpdateInterfaceRequest,
    ) -> ttrpc::Result<kata_agent_protocols::types::Interface> {
        let result = req
            .interface
            .as_ref()
            .ok_or_else(|| AgentError::invalid("UpdateInterface without an interface"))
            .and_then(crate::net::update_interface);
        self.log_result("UpdateInterface", "", result)
    }

    async fn update_routes(
        &self,
        _: &TtrpcContext,
        req: api::UpdateRoutesRequest,
    ) -> ttrpc::Result<api::Routes> {
        let routes = req
            .routes
            .as_ref()
            .map(|r| r.Routes.clone())
            .unwrap_or_default();
        let result = crate::net::update_routes(&routes);
        self.log_result("UpdateRoutes", "", result)
    }

    async fn list_interfaces(
        &self,
        _: &TtrpcContext,
        _: api::ListInterfacesRequest,
    ) -> ttrpc::Result<api::Interfaces> {
        let result = crate::net::list_interfaces().map(|list| api::Interfaces {
            Interfaces: list,
            ..Default::default()
        });
        self.log_result("ListInterfaces", "", result)
    }

    async fn list_routes(
        &self,
        _: &TtrpcContext,
        _: api::ListRoutesRequest,
    ) -> ttrpc::Result<api::Routes> {
        let result = crate::net::list_routes().map(|list| api::Routes {
            Routes: list,
            ..Default::default()
        });
        self.log_result("ListRoutes", "", result)
    }

    async fn add_arp_neighbors(
        &self,
        _: &TtrpcContext,
        req: api::AddARPNeighborsRequest,
    ) -> ttrpc::Result<Empty> {
        let neighbors = req
            .neighbors
            .as_ref()
            .map(|n| n.ARPNeighbors.clone())
            .unwrap_or_default();
        let result = crate::net::add_arp_neighbors(&neighbors);
        self.log_result("AddARPNeighbors", "", result)
            .map(|()| Empty::new())
    }

    async fn create_sandbox(
        &self,
        _: &TtrpcContext,
        req: api::CreateSandboxRequest,
    ) -> ttrpc::Result<Empty> {
        let result = (|| {
            if !req.kernel_modules.is_empty() {
                return Err(AgentError::invalid(format!(
                    "kernel_modules: this guest kernel has no module support ('{}' requested)",
                    req.kernel_modules[0].name
                )));
            }
            guest::set_hostname(&req.hostname)?;
            guest::write_resolv_conf(&req.dns)?;
            crate::net::loopback_up()?;
            let mut storages = self
                .sandbox
                .storages
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            let mut points = Vec::new();
            for storage in &req.storages {
                match storages.add(storage) {
                    Ok(point) => points.push(point),
                    Err(error) => {
                        points.iter().for_each(|p| storages.release(p));
                        return Err(error);
                    }
                }
            }
            self.sandbox
                .sandbox_storages
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .extend(points);
            *self.sandbox.id.lock().unwrap_or_else(|e| e.into_inner()) =
                Some(req.sandbox_id.clone());
            Ok(())
        })();
        if result.is_ok() {
            slog::info!(self.sandbox.log, "sandbox created"; "sandbox" => &req.sandbox_id, "storages" => req.storages.len());
        }
        self.log_result("CreateSandbox", "", result)
            .map(|()| Empty::new())
    }

    async fn destroy_sandbox(
        &self,
        _: &TtrpcContext,
        _: api::DestroySandboxRequest,
    ) -> ttrpc::Result<Empty> {
        self.remove_everything().await;
        slog::info!(self.sandbox.log, "sandbox destroyed");
        let _ = self.shutdown.send(());
        Ok(Empty::new())
    }

    async fn get_guest_details(
        &self,
        _: &TtrpcContext,
        req: api::GuestDetailsRequest,
    ) -> ttrpc::Result<api::GuestDetailsResponse> {
        let result = Ok(guest::details(req.mem_block_size));
        self.log_result("GetGuestDetails", "", result)
    }

    async fn set_guest_date_time(
        &self,
        _: &TtrpcContext,
        req: api::SetGuestDateTimeRequest,
    ) -> ttrpc::Result<Empty> {
        let result = guest::set_time(req.Sec, req.Usec);
        self.log_result("SetGuestDateTime", "", result)
            .map(|()| Empty::new())
    }

    async fn copy_file(&self, _: &TtrpcContext, req: api::CopyFileRequest) -> ttrpc::Result<Empty> {
        let result = guest::copy_file(&req);
        self.log_result("CopyFile", "", result)
            .map(|()| Empty::new())
    }

    async fn get_oom_event(
        &self,
        _: &TtrpcContext,
        _: api::GetOOMEventRequest,
    ) -> ttrpc::Result<api::OOMEvent> {
        let mut events = self.sandbox.oom_events.lock().await;
        let result = events
            .recv()
            .await
            .map(|container_id| api::OOMEvent {
                container_id,
                ..Default::default()
            })
            .ok_or_else(|| AgentError::internal("the OOM event source has closed"));
        self.log_result("GetOOMEvent", "", result)
    }
}

/// grpc.Health: the agent serves as soon as it listens.
pub struct HealthService;

#[async_trait]
impl health_ttrpc::Health for HealthService {
    async fn check(
        &self,
        _: &TtrpcContext,
        _: health::CheckRequest,
    ) -> ttrpc::Result<health::HealthCheckResponse> {
        Ok(health::HealthCheckResponse {
            status: health::health_check_response::ServingStatus::SERVING.into(),
            ..Default::default()
        })
    }

    async fn version(
        &self,
        _: &TtrpcContext,
        _: health::CheckRequest,
    ) -> ttrpc::Result<health::VersionCheckResponse> {
        Ok(health::VersionCheckResponse {
            grpc_version: "ttrpc".into(),
            agent_version: AGENT_VERSION.into(),
            ..Default::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_are_validated() {
        assert_eq!(signal_from(9).unwrap(), Signal::SIGKILL);
        assert_eq!(signal_from(15).unwrap(), Signal::SIGTERM);
        assert!(signal_from(0).is_err());
        assert!(
            signal_from(4000)
                .unwrap_err()
                .message
                .contains("signal 4000")
        );
    }
}
