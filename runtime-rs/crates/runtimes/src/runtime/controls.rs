//! Whole-container controls: freeze, resources, statistics.

use crate::error::{Code, RuntimeError, RuntimeResult};
use crate::events::Event;
use crate::spec;

use super::Runtime;

impl Runtime {
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
}
