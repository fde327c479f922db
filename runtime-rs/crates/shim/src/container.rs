//! Containers and processes on the host side: the rootfs containerd gives us, its bind
//! into the share, stdio between containerd's FIFOs and the agent, and exit statuses.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use agent_client::{AgentClient, context};
use kata_agent_protocols::agent as api;
use nix::mount::MntFlags;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;

use crate::sandbox::SandboxPaths;
use crate::spec::SharedBind;

/// How long output may keep flowing after a process has exited (a daemonised child can
/// hold its stdout open forever).
const DRAIN_AFTER_EXIT: Duration = Duration::from_secs(10);

/// A finished process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Exit {
    /// Exit code, or 128 + signal.
    pub status: u32,
    /// When it was seen.
    pub at: SystemTime,
}

/// Where a process's stdio goes on the host.
#[derive(Clone, Debug, Default)]
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
    /// Started yet.
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
    pub execs: std::collections::HashMap<String, Process>,
    /// Frozen.
    pub paused: bool,
    /// Share entries (rootfs dir, bind names) to remove with the container.
    pub share_entries: Vec<PathBuf>,
    /// Whether we mounted `<bundle>/rootfs`.
    pub mounted_rootfs: bool,
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

    /// The init's status.
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

/// Mounts containerd's rootfs mounts at `<bundle>/rootfs` (nothing to do when the
/// bundle's rootfs is already populated and no mounts are given).
pub fn mount_rootfs(
    bundle: &Path,
    mounts: &[containerd_shim_protos::api::Mount],
) -> Result<bool, String> {
    let target = bundle.join("rootfs");
    std::fs::create_dir_all(&target).map_err(|e| format!("creating {}: {e}", target.display()))?;
    if mounts.is_empty() {
        return Ok(false);
    }
    if mounts.len() > 1 {
        return Err(format!(
            "{} rootfs mounts given; only one (overlay or bind) is supported",
            mounts.len()
        ));
    }
    let m = &mounts[0];
    containerd_shim::mount::mount_rootfs(
        Some(m.type_.as_str()).filter(|t| !t.is_empty()),
        Some(m.source.as_str()).filter(|s| !s.is_empty()),
        &m.options,
        &target,
    )
    .map_err(|e| {
        format!(
            "mounting the rootfs ({} {}) on {}: {e}",
            m.type_,
            m.source,
            target.display()
        )
    })?;
    Ok(true)
}

/// Unmounts `<bundle>/rootfs` if we mounted it.
pub fn unmount_rootfs(bundle: &Path) {
    let _ = nix::mount::umount2(&bundle.join("rootfs"), MntFlags::MNT_DETACH);
}

/// Binds the container rootfs and its bind mounts into the share; returns the entries
/// to remove later. On failure, what was bound is undone.
pub fn share(
    paths: &SandboxPaths,
    id: &str,
    bundle: &Path,
    binds: &[SharedBind],
) -> Result<Vec<PathBuf>, String> {
    let mut entries = Vec::new();
    let result = (|| {
        entries.push(paths.share.mounts.join(id));
        paths
            .share
            .bind(&bundle.join("rootfs"), &Path::new(id).join("rootfs"), false)?;
        for b in binds {
            entries.push(paths.share.mounts.join(&b.name));
            paths
                .share
                .bind(&b.source, Path::new(&b.name), b.readonly)?;
        }
        Ok(())
    })();
    match result {
        Ok(()) => Ok(entries),
        Err(e) => {
            let _ = unshare(&entries);
            Err(e)
        }
    }
}

/// Undoes `share`: unmounts each entry and removes it, never deleting through a mount
/// that could not be detached (that one is left in place and reported).
pub fn unshare(entries: &[PathBuf]) -> Result<(), safe_fs::RemoveError> {
    let mut first_error = None;
    for entry in entries.iter().rev() {
        if let Err(e) = safe_fs::unmount_and_remove(entry) {
            first_error.get_or_insert(e);
        }
    }
    first_error.map_or(Ok(()), Err)
}

async fn copy_out(agent: AgentClient, id: String, exec: String, path: String, stderr: bool) {
    let mut sink = if path.is_empty() {
        None
    } else {
        tokio::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .await
            .ok()
    };
    loop {
        let request = api::ReadStreamRequest {
            container_id: id.clone(),
            exec_id: exec.clone(),
            len: 32 * 1024,
            ..Default::default()
        };
        let reply = if stderr {
            agent
                .agent
                .read_stderr(context(Duration::ZERO), &request)
                .await
        } else {
            agent
                .agent
                .read_stdout(context(Duration::ZERO), &request)
                .await
        };
        match reply {
            Ok(reply) if !reply.data.is_empty() => {
                if let Some(out) = sink.as_mut()
                    && out.write_all(&reply.data).await.is_err()
                {
                    sink = None;
                }
            }
            _ => break,
        }
    }
    if let Some(mut out) = sink {
        let _ = out.flush().await;
    }
}

async fn copy_in(
    agent: AgentClient,
    id: String,
    exec: String,
    path: String,
    done: watch::Sender<bool>,
) {
    let write = |data: Vec<u8>| {
        let request = api::WriteStreamRequest {
            container_id: id.clone(),
            exec_id: exec.clone(),
            data,
            ..Default::default()
        };
        let agent = agent.clone();
        async move {
            agent
                .agent
                .write_stdin(context(Duration::ZERO), &request)
                .await
        }
    };
    if let Ok(mut source) = tokio::fs::File::open(&path).await {
        let mut buffer = vec![0u8; 32 * 1024];
        loop {
            match source.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if write(buffer[..n].to_vec()).await.is_err() {
                        return;
                    }
                }
            }
        }
    }
    // End of input: empty data closes the process's stdin.
    let _ = write(Vec::new()).await;
    done.send_replace(true);
}

/// Starts copying stdio; the returned task ends when the output has been drained, and
/// the watch turns true once stdin has been forwarded to its end and closed.
pub fn start_io(
    agent: &AgentClient,
    id: &str,
    exec: &str,
    stdio: &StdioPaths,
) -> (tokio::task::JoinHandle<()>, watch::Receiver<bool>) {
    let (done_tx, done) = watch::channel(stdio.stdin.is_empty());
    if !stdio.stdin.is_empty() {
        tokio::spawn(copy_in(
            agent.clone(),
            id.into(),
            exec.into(),
            stdio.stdin.clone(),
            done_tx,
        ));
    }
    let out = tokio::spawn(copy_out(
        agent.clone(),
        id.into(),
        exec.into(),
        stdio.stdout.clone(),
        false,
    ));
    let err = (!stdio.terminal).then(|| {
        tokio::spawn(copy_out(
            agent.clone(),
            id.into(),
            exec.into(),
            stdio.stderr.clone(),
            true,
        ))
    });
    let drained = tokio::spawn(async move {
        let _ = out.await;
        if let Some(err) = err {
            let _ = err.await;
        }
    });
    (drained, done)
}

/// Waits for the process in the guest, then for its output (bounded), and returns its
/// exit.
pub async fn wait_exit(
    agent: &AgentClient,
    id: &str,
    exec: &str,
    io: tokio::task::JoinHandle<()>,
) -> Exit {
    let request = api::WaitProcessRequest {
        container_id: id.into(),
        exec_id: exec.into(),
        ..Default::default()
    };
    let status = match agent
        .agent
        .wait_process(context(Duration::ZERO), &request)
        .await
    {
        Ok(reply) => reply.status as u32,
        // The agent (or the VM) is gone: report the process as killed.
        Err(_) => 128 + 9,
    };
    let at = SystemTime::now();
    let _ = tokio::time::timeout(DRAIN_AFTER_EXIT, io).await;
    Exit { status, at }
}
