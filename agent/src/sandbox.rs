//! The sandbox: every container of the pod, the storages they share, and OOM events.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;

use crate::cgroup::{self, Cgroup};
use crate::container::{Container, PodSandbox, Status};
use crate::error::{AgentError, AgentResult};
use crate::file_changes::FileChanges;
use crate::plan::PodShare;
use crate::reaper::Reaper;
use crate::storage::Storages;

/// How often container cgroups are checked for new OOM kills where `memory.events`
/// cannot be watched (no inotify): the watch needs no timer.
const OOM_POLL: Duration = Duration::from_millis(200);

/// The agent's state.
pub struct Sandbox {
    /// The sandbox id from CreateSandbox.
    pub id: Mutex<Option<String>>,
    /// Containers by id.
    pub containers: Mutex<HashMap<String, Arc<Container>>>,
    /// Mounted storages.
    pub storages: Mutex<Storages>,
    /// Sandbox-level storage mount points.
    pub sandbox_storages: Mutex<Vec<PathBuf>>,
    /// Child reaping.
    pub reaper: Reaper,
    /// Where cgroup v2 is mounted, if it is.
    pub cgroup_root: Option<PathBuf>,
    /// Ids of containers that were OOM-killed, for GetOOMEvent.
    pub oom_events: tokio::sync::Mutex<mpsc::UnboundedReceiver<String>>,
    oom_sender: mpsc::UnboundedSender<String>,
    /// The logger.
    pub log: slog::Logger,
}

impl Sandbox {
    /// A sandbox with no containers yet.
    pub fn new(reaper: Reaper, log: slog::Logger) -> Arc<Self> {
        let root = PathBuf::from(cgroup::CGROUP_ROOT);
        let cgroup_root = cgroup::is_cgroup2(&root).then_some(root);
        let (oom_sender, oom_receiver) = mpsc::unbounded_channel();
        Arc::new(Self {
            id: Mutex::new(None),
            containers: Mutex::new(HashMap::new()),
            storages: Mutex::new(Storages::default()),
            sandbox_storages: Mutex::new(Vec::new()),
            reaper,
            cgroup_root,
            oom_events: tokio::sync::Mutex::new(oom_receiver),
            oom_sender,
            log,
        })
    }

    /// The container `id`.
    pub fn container(&self, id: &str) -> AgentResult<Arc<Container>> {
        self.containers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .cloned()
            .ok_or_else(|| AgentError::not_found(format!("container '{id}' does not exist")))
    }

    /// The sandbox container `share` names, which must exist and not have exited.
    pub fn pod_sandbox(&self, share: &PodShare) -> AgentResult<PodSandbox> {
        let id = share.sandbox_id.as_str();
        let shown = id.escape_debug();
        let annotation = share.annotation;
        let container = self
            .containers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .cloned()
            .ok_or_else(|| {
                AgentError::precondition(format!(
                    "pod sandbox '{shown}' (annotation {annotation}) is not a container in \
                     this agent: create the sandbox container before the pod's containers"
                ))
            })?;
        if container.status() == Status::Stopped {
            return Err(AgentError::precondition(format!(
                "pod sandbox '{shown}' (annotation {annotation}) has exited: its namespaces \
                 are gone"
            )));
        }
        Ok(PodSandbox {
            container,
            namespaces: share.namespaces.clone(),
        })
    }

    /// Watches the container's cgroup for OOM kills until it is gone.
    pub fn watch_oom(self: &Arc<Self>, container: &Arc<Container>) {
        let Some(cgroup) = container.cgroup.clone() else {
            return;
        };
        let id = container.id.clone();
        let init = container.init.clone();
        let sandbox = Arc::downgrade(self);
        let log = self.log.clone();
        tokio::spawn(async move {
            // Watched before the first read, so no kill falls between the two.
            let changes = match FileChanges::watch(&cgroup.dir().join("memory.events")) {
                Ok(changes) => Some(changes),
                Err(e) => {
                    slog::warn!(log, "cannot watch memory.events: polling it for OOM kills"; "container" => &id, "error" => %e);
                    None
                }
            };
            drop(log);
            let mut seen = cgroup.oom_kills();
            let mut last_look = false;
            while !last_look {
                // The init's exit (often the OOM kill itself) triggers one last look.
                tokio::select! {
                    _ = memory_events_changed(changes.as_ref()) => {}
                    _ = init.wait() => last_look = true,
                }
                let Some(sandbox) = sandbox.upgrade() else {
                    return;
                };
                if !cgroup.dir().exists() {
                    return;
                }
                let now = Cgroup::oom_kills(&cgroup);
                if now > seen {
                    seen = now;
                    slog::warn!(sandbox.log, "container was OOM-killed"; "container" => &id);
                    let _ = sandbox.oom_sender.send(id.clone());
                }
            }
        });
    }
}

/// Returns when `memory.events` may have moved: on its next change where it is watched
/// (a failed watch then waits one poll period), every `OOM_POLL` where it is not.
async fn memory_events_changed(changes: Option<&FileChanges>) {
    match changes {
        Some(changes) => {
            if changes.changed().await.is_err() {
                tokio::time::sleep(OOM_POLL).await;
            }
        }
        None => tokio::time::sleep(OOM_POLL).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unknown_pod_sandbox_is_named() {
        let sandbox = Sandbox::new(
            Reaper::default(),
            slog::Logger::root(slog::Discard, slog::o!()),
        );
        let share = PodShare {
            sandbox_id: "pause-1".into(),
            annotation: "io.kubernetes.cri.sandbox-id",
            namespaces: vec![crate::plan::PodNamespace::Ipc],
        };
        let Err(err) = sandbox.pod_sandbox(&share) else {
            panic!("an unknown sandbox was accepted");
        };
        assert_eq!(err.code, ttrpc::Code::FAILED_PRECONDITION);
        assert!(
            err.message.starts_with(
                "pod sandbox 'pause-1' (annotation io.kubernetes.cri.sandbox-id) is not a \
                 container in this agent"
            ),
            "{}",
            err.message
        );
    }
}
