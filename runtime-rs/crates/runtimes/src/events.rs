//! Lifecycle events, published in the order containerd expects them.

use std::time::SystemTime;

use async_trait::async_trait;
use kata_resource::RootfsMount;

use crate::process::{Exit, StdioPaths};

/// Something containerd must hear about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A container was created.
    Created {
        /// Container id.
        id: String,
        /// containerd's bundle.
        bundle: String,
        /// Its rootfs mounts.
        rootfs: Vec<RootfsMount>,
        /// Its stdio.
        stdio: StdioPaths,
        /// The pid reported for it.
        pid: u32,
    },
    /// A container's init started.
    Started {
        /// Container id.
        id: String,
        /// The pid reported for it.
        pid: u32,
    },
    /// An exec was added.
    ExecAdded {
        /// Container id.
        id: String,
        /// Exec id.
        exec_id: String,
    },
    /// An exec started.
    ExecStarted {
        /// Container id.
        id: String,
        /// Exec id.
        exec_id: String,
        /// The pid reported for it.
        pid: u32,
    },
    /// A process ended (`exec_id` empty: the init).
    Exited {
        /// Container id.
        id: String,
        /// Exec id.
        exec_id: String,
        /// The pid reported for it.
        pid: u32,
        /// How.
        exit: Exit,
    },
    /// A container was deleted.
    Deleted {
        /// Container id.
        id: String,
        /// The pid reported for it.
        pid: u32,
        /// Its init's exit.
        exit: Exit,
    },
    /// A container hit its memory limit.
    Oom {
        /// Container id.
        id: String,
    },
    /// A container was frozen.
    Paused {
        /// Container id.
        id: String,
    },
    /// A container was thawed.
    Resumed {
        /// Container id.
        id: String,
    },
}

/// Where events go (containerd's event service, or a test's list).
#[async_trait]
pub trait EventSink: Send + Sync {
    /// Publishes one event; failures are the sink's to log.
    async fn publish(&self, event: Event);
}

/// The exit reported for a container deleted without a known exit (killed).
pub fn killed_now() -> Exit {
    Exit {
        status: 128 + 9,
        at: SystemTime::now(),
    }
}
