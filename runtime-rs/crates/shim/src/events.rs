//! Runtime events as containerd's task events, published on its event service.

use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use containerd_shim::asynchronous::publisher::RemotePublisher;
use containerd_shim_protos::api::Mount;
use containerd_shim_protos::events::task::{
    TaskCreate, TaskDelete, TaskExecAdded, TaskExecStarted, TaskExit, TaskIO, TaskOOM, TaskPaused,
    TaskResumed, TaskStart,
};
use containerd_shim_protos::protobuf::well_known_types::timestamp::Timestamp;
use containerd_shim_protos::protobuf::{MessageDyn, MessageField};
use containerd_shim_protos::topics;
use kata_runtimes::{Event, EventSink};
use slog::Logger;

/// The one conversion of a time into containerd's timestamps.
pub fn timestamp(at: SystemTime) -> Timestamp {
    let since = at.duration_since(UNIX_EPOCH).unwrap_or_default();
    Timestamp {
        seconds: since.as_secs() as i64,
        nanos: since.subsec_nanos() as i32,
        ..Default::default()
    }
}

/// Publishes to containerd in one namespace; failures are logged.
pub struct Publisher {
    /// containerd's event service.
    pub remote: RemotePublisher,
    /// The namespace of this shim.
    pub namespace: String,
    /// Where failures are logged.
    pub log: std::sync::Arc<std::sync::Mutex<Logger>>,
}

/// The topic and protobuf message of an event.
pub fn to_protobuf(event: Event) -> (&'static str, Box<dyn MessageDyn>) {
    match event {
        Event::Created {
            id,
            bundle,
            rootfs,
            stdio,
            pid,
        } => {
            let rootfs = rootfs
                .into_iter()
                .map(|m| Mount {
                    type_: m.fstype,
                    source: m.source,
                    options: m.options,
                    ..Default::default()
                })
                .collect();
            let event = TaskCreate {
                container_id: id,
                bundle,
                rootfs,
                io: MessageField::some(TaskIO {
                    stdin: stdio.stdin,
                    stdout: stdio.stdout,
                    stderr: stdio.stderr,
                    terminal: stdio.terminal,
                    ..Default::default()
                }),
                pid,
                ..Default::default()
            };
            (topics::TASK_CREATE_EVENT_TOPIC, Box::new(event))
        }
        Event::Started { id, pid } => {
            let event = TaskStart {
                container_id: id,
                pid,
                ..Default::default()
            };
            (topics::TASK_START_EVENT_TOPIC, Box::new(event))
        }
        Event::ExecAdded { id, exec_id } => {
            let event = TaskExecAdded {
                container_id: id,
                exec_id,
                ..Default::default()
            };
            (topics::TASK_EXEC_ADDED_EVENT_TOPIC, Box::new(event))
        }
        Event::ExecStarted { id, exec_id, pid } => {
            let event = TaskExecStarted {
                container_id: id,
                exec_id,
                pid,
                ..Default::default()
            };
            (topics::TASK_EXEC_STARTED_EVENT_TOPIC, Box::new(event))
        }
        Event::Exited {
            id,
            exec_id,
            pid,
            exit,
        } => {
            let event = TaskExit {
                id: if exec_id.is_empty() {
                    id.clone()
                } else {
                    exec_id
                },
                container_id: id,
                pid,
                exit_status: exit.status,
                exited_at: MessageField::some(timestamp(exit.at)),
                ..Default::default()
            };
            (topics::TASK_EXIT_EVENT_TOPIC, Box::new(event))
        }
        Event::Deleted { id, pid, exit } => {
            let event = TaskDelete {
                container_id: id,
                pid,
                exit_status: exit.status,
                exited_at: MessageField::some(timestamp(exit.at)),
                ..Default::default()
            };
            (topics::TASK_DELETE_EVENT_TOPIC, Box::new(event))
        }
        Event::Oom { id } => {
            let event = TaskOOM {
                container_id: id,
                ..Default::default()
            };
            (topics::TASK_OOM_EVENT_TOPIC, Box::new(event))
        }
        Event::Paused { id } => {
            let event = TaskPaused {
                container_id: id,
                ..Default::default()
            };
            (topics::TASK_PAUSED_EVENT_TOPIC, Box::new(event))
        }
        Event::Resumed { id } => {
            let event = TaskResumed {
                container_id: id,
                ..Default::default()
            };
            (topics::TASK_RESUMED_EVENT_TOPIC, Box::new(event))
        }
    }
}

#[async_trait]
impl EventSink for Publisher {
    async fn publish(&self, event: Event) {
        let (topic, message) = to_protobuf(event);
        let ctx = ttrpc::context::with_timeout(0);
        if let Err(e) = self
            .remote
            .publish(ctx, topic, &self.namespace, message)
            .await
        {
            let log = self.log.lock().unwrap_or_else(|e| e.into_inner()).clone();
            slog::warn!(log, "publishing an event failed"; "topic" => topic, "error" => %e);
        }
    }
}
