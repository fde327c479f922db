//! The sandbox as containerd's Sandbox API drives it (containerd 2.x `sandboxer = "shim"`):
//! created, then started (the VM boots with no container), joined by the pod's
//! containers, stopped, waited for and shut down. A sandbox started this way outlives its
//! containers: only StopSandbox or ShutdownSandbox stops its VM.

use std::sync::Arc;
use std::time::SystemTime;

use tokio::sync::watch;

use super::{ConfigLoader, Runtime};
use crate::error::{Code, RuntimeError, RuntimeResult};
use crate::process::Exit;
use crate::sandbox::{PodSetup, Sandbox};

/// Where a Sandbox API sandbox is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PodPhase {
    /// Created, not started.
    Created,
    /// Its VM runs.
    Ready,
    /// Stopped (its VM is gone).
    Stopped,
}

/// What SandboxStatus answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodStatus {
    /// The sandbox id.
    pub id: String,
    /// Its phase.
    pub phase: PodPhase,
    /// When it was created.
    pub created_at: SystemTime,
    /// When it stopped.
    pub exited_at: Option<SystemTime>,
}

/// The record of the Sandbox API sandbox of this shim.
pub(super) struct Pod {
    id: String,
    config: kata_config::Config,
    setup: PodSetup,
    created_at: SystemTime,
    pub(super) phase: PodPhase,
    exit_tx: watch::Sender<Option<Exit>>,
}

impl Runtime {
    /// CreateSandbox: loads and keeps the configuration; nothing runs yet.
    pub async fn create_pod(
        &self,
        id: &str,
        setup: PodSetup,
        load_config: ConfigLoader<'_>,
    ) -> RuntimeResult<()> {
        let _creating = self.creating.lock().await;
        let mut state = self.state.lock().await;
        if let Some(pod) = &state.pod {
            return Err(RuntimeError::new(
                Code::AlreadyExists,
                format!(
                    "sandbox {} already exists in this shim (asked for {id})",
                    pod.id
                ),
            ));
        }
        if state.sandbox.is_some() {
            return Err(RuntimeError::new(
                Code::FailedPrecondition,
                format!("sandbox {id}: this shim already runs a sandbox started by a container"),
            ));
        }
        let config = load_config()?;
        // Refuse a bad size now; StartSandbox sizes the VM again from the same inputs.
        setup.vm_size(&config)?;
        let (exit_tx, _) = watch::channel(None);
        state.pod = Some(Pod {
            id: id.to_string(),
            config,
            setup,
            created_at: SystemTime::now(),
            phase: PodPhase::Created,
            exit_tx,
        });
        Ok(())
    }

    /// StartSandbox: boots the VM; returns when the agent has created the sandbox.
    pub async fn start_pod(self: &Arc<Self>, id: &str) -> RuntimeResult<SystemTime> {
        let _creating = self.creating.lock().await;
        let (config, setup, created_at) = {
            let mut state = self.state.lock().await;
            let pod = pod_mut(&mut state.pod, id)?;
            if pod.phase != PodPhase::Created {
                return Err(RuntimeError::new(
                    Code::FailedPrecondition,
                    format!("sandbox {id} is {:?}, not created", pod.phase),
                ));
            }
            (pod.config.clone(), pod.setup.clone(), pod.created_at)
        };
        let sandbox = Sandbox::start(&self.backends, &config, id, &setup, &self.log())
            .await
            .map(Arc::new)?;
        let mut state = self.state.lock().await;
        state.sandbox = Some(sandbox.clone());
        pod_mut(&mut state.pod, id)?.phase = PodPhase::Ready;
        drop(state);
        self.watch_oom(sandbox);
        Ok(created_at)
    }

    /// StopSandbox: stops the VM (its containers' processes end with it).
    pub async fn stop_pod(&self, id: &str) -> RuntimeResult<()> {
        let sandbox = {
            let mut state = self.state.lock().await;
            let pod = pod_mut(&mut state.pod, id)?;
            if pod.phase == PodPhase::Stopped {
                return Ok(());
            }
            pod.phase = PodPhase::Stopped;
            pod.exit_tx.send_replace(Some(Exit {
                status: 0,
                at: SystemTime::now(),
            }));
            state.sandbox.take()
        };
        if let Some(sandbox) = sandbox {
            sandbox.stop(&self.log()).await;
        }
        Ok(())
    }

    /// WaitSandbox: blocks (holding no lock) until the sandbox has stopped.
    pub async fn wait_pod(&self, id: &str) -> RuntimeResult<Exit> {
        let mut exit = {
            let mut state = self.state.lock().await;
            pod_mut(&mut state.pod, id)?.exit_tx.subscribe()
        };
        let seen = exit
            .wait_for(Option::is_some)
            .await
            .map(|e| *e)
            .map_err(|_| RuntimeError::new(Code::Internal, "the sandbox record went away"))?;
        seen.ok_or_else(|| RuntimeError::new(Code::Internal, "the sandbox record went away"))
    }

    /// SandboxStatus.
    pub async fn pod_status(&self, id: &str) -> RuntimeResult<PodStatus> {
        let mut state = self.state.lock().await;
        let pod = pod_mut(&mut state.pod, id)?;
        Ok(PodStatus {
            id: pod.id.clone(),
            phase: pod.phase,
            created_at: pod.created_at,
            exited_at: pod.exit_tx.borrow().map(|e| e.at),
        })
    }

    /// ShutdownSandbox: stops the sandbox if it still runs and forgets it; returns whether
    /// the shim may exit (no container left).
    pub async fn shutdown_pod(&self, id: &str) -> RuntimeResult<bool> {
        self.stop_pod(id).await?;
        let mut state = self.state.lock().await;
        state.pod = None;
        Ok(state.containers.is_empty())
    }

    /// Whether a Sandbox API sandbox keeps the VM (so the last container's delete must not
    /// stop it).
    pub(super) fn pod_holds_vm(state: &super::State) -> bool {
        state
            .pod
            .as_ref()
            .is_some_and(|pod| pod.phase == PodPhase::Ready)
    }
}

/// The pod named `id`, or NOT_FOUND.
fn pod_mut<'a>(pod: &'a mut Option<Pod>, id: &str) -> RuntimeResult<&'a mut Pod> {
    match pod {
        Some(pod) if pod.id == id => Ok(pod),
        _ => Err(RuntimeError::new(
            Code::NotFound,
            format!("sandbox {id} not found"),
        )),
    }
}
