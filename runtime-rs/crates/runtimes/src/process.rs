//! Containers and processes as the runtime tracks them: stdio paths, start, exit.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::SystemTime;

use kata_resource::ContainerResources;
use tokio::sync::watch;

/// A finished process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Exit {
    /// Exit code, or 128 + signal.
    pub status: u32,
    /// When it was seen.
    pub at: SystemTime,
}

/// Where a process's stdio goes on the host.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StdioPaths {
    /// containerd's stdin FIFO ("" = none).
    pub stdin: String,
    /// containerd's stdout FIFO.
    pub stdout: String,
    /// containerd's stderr FIFO.
    pub stderr: String,
    /// A terminal (stderr merged into stdout).
    pub terminal: bool,
}

/// Lifecycle of one process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// Created, not started.
    Created,
    /// Running.
    Running,
    /// Frozen.
    Paused,
    /// Exited.
    Stopped,
}

/// One process (a container's init or an exec).
pub struct Process {
    /// Its stdio.
    pub stdio: StdioPaths,
    /// The guest process spec (execs).
    pub spec: Option<kata_agent_protocols::oci::Process>,
    /// Started (or its start was attempted).
    pub started: bool,
    /// True once stdin has been copied to its end (set when started).
    pub stdin_done: Option<watch::Receiver<bool>>,
    /// The exit, once known.
    pub exit: watch::Receiver<Option<Exit>>,
    exit_tx: watch::Sender<Option<Exit>>,
}

impl Process {
    /// A process not started yet.
    pub fn new(stdio: StdioPaths, spec: Option<kata_agent_protocols::oci::Process>) -> Self {
        let (exit_tx, exit) = watch::channel(None);
        Self {
            stdio,
            spec,
            started: false,
            stdin_done: None,
            exit,
            exit_tx,
        }
    }

    /// The exit, if known.
    pub fn exited(&self) -> Option<Exit> {
        *self.exit.borrow()
    }

    /// The sender the wait task reports through.
    pub fn exit_sender(&self) -> watch::Sender<Option<Exit>> {
        self.exit_tx.clone()
    }
}

/// A container of the sandbox.
pub struct Container {
    /// containerd's bundle directory.
    pub bundle: PathBuf,
    /// The init process.
    pub init: Process,
    /// Exec'd processes.
    pub execs: HashMap<String, Process>,
    /// Frozen.
    pub paused: bool,
    /// What it holds on the host.
    pub host: ContainerResources,
}

impl Container {
    /// The process `exec_id` ("" = init).
    pub fn process(&self, exec_id: &str) -> Option<&Process> {
        if exec_id.is_empty() {
            Some(&self.init)
        } else {
            self.execs.get(exec_id)
        }
    }

    /// Mutable access to process `exec_id`.
    pub fn process_mut(&mut self, exec_id: &str) -> Option<&mut Process> {
        if exec_id.is_empty() {
            Some(&mut self.init)
        } else {
            self.execs.get_mut(exec_id)
        }
    }

    /// The status of process `exec_id`.
    pub fn status(&self, exec_id: &str) -> Status {
        let Some(process) = self.process(exec_id) else {
            return Status::Stopped;
        };
        if process.exited().is_some() {
            Status::Stopped
        } else if self.paused {
            Status::Paused
        } else if process.started {
            Status::Running
        } else {
            Status::Created
        }
    }
}
