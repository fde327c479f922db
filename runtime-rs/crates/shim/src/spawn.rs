//! The server process a `start` leaves behind: spawned from this binary with the socket to
//! serve, ready once it closes its stdout (the crate's "server started" signal), and
//! removed again, with its socket, when the start fails after all.

use std::io::Read;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use containerd_shim::Flags;

/// How long the server may take to start serving.
pub const SERVE_BOUND: Duration = Duration::from_secs(30);

/// Why the server could not be started.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    /// Spawning, or a step right after it, failed.
    #[error("start: {what}: {source}")]
    Io {
        /// The step.
        what: &'static str,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The server exited (or closed its stdout) before serving.
    #[error("start: the shim server exited before serving ({0})")]
    Exited(std::process::ExitStatus),
    /// It did not serve within [`SERVE_BOUND`].
    #[error("start: the shim server did not serve within {SERVE_BOUND:?}")]
    Timeout,
}

/// The server's stderr: containerd's `log` FIFO in the bundle (this process's cwd) when
/// containerd is reading it, so that what bypasses the structured log (a panic, the VMM's
/// report of a forbidden syscall) still reaches containerd's log; else nothing.
fn server_stderr() -> Stdio {
    use std::os::unix::fs::OpenOptionsExt;
    // Non-blocking: opening a FIFO nobody reads fails at once (ENXIO) instead of waiting.
    std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open("log")
        .map_or_else(|_| Stdio::null(), Stdio::from)
}

fn io(what: &'static str) -> impl FnOnce(std::io::Error) -> SpawnError {
    move |source| SpawnError::Io { what, source }
}

/// A spawned server; dropped without [`Server::detach`], it is killed and its socket
/// removed.
pub struct Server {
    child: Option<Child>,
    socket: PathBuf,
}

impl Server {
    /// Spawns the server for `flags` on `address` (`unix://…`) with `env` added, and waits
    /// until it serves.
    pub fn spawn(flags: &Flags, address: &str, env: &[(&str, String)]) -> Result<Self, SpawnError> {
        let exe = std::env::current_exe().map_err(io("finding this binary"))?;
        let mut command = Command::new(exe);
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(server_stderr())
            .args(["-namespace", &flags.namespace, "-id", &flags.id])
            .args(["-address", &flags.address, "-socket", address])
            .envs(env.iter().map(|(key, value)| (*key, value)));
        if flags.debug {
            command.arg("-debug");
        }
        let mut child = command.spawn().map_err(io("spawning the shim server"))?;
        let mut server = Self {
            socket: PathBuf::from(address.strip_prefix("unix://").unwrap_or(address)),
            child: None,
        };
        let stdout = child.stdout.take();
        server.child = Some(child);
        server.wait_serving(stdout)?;
        adjust_oom_score(server.pid()).map_err(io("setting the server's oom_score_adj"))?;
        Ok(server)
    }

    /// The server's pid.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or(0)
    }

    /// Leaves the server running (it outlives this process).
    pub fn detach(mut self) {
        self.child = None;
    }

    fn wait_serving(
        &mut self,
        stdout: Option<std::process::ChildStdout>,
    ) -> Result<(), SpawnError> {
        let (done, serving) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut sink = Vec::new();
            if let Some(mut out) = stdout {
                let _ = out.read_to_end(&mut sink);
            }
            let _ = done.send(());
        });
        if serving.recv_timeout(SERVE_BOUND).is_err() {
            return Err(SpawnError::Timeout);
        }
        // Its stdout also closes when it dies: serving means its socket answers.
        if std::os::unix::net::UnixStream::connect(&self.socket).is_ok() {
            return Ok(());
        }
        let child = self.child.as_mut().expect("spawned");
        let status = child.wait().map_err(io("waiting for the shim server"))?;
        Err(SpawnError::Exited(status))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
            let _ = std::fs::remove_file(&self.socket);
        }
    }
}

/// Gives `pid` containerd's OOM score plus one, so the kernel picks the shim before
/// containerd (as containerd's own shims do).
fn adjust_oom_score(pid: u32) -> std::io::Result<()> {
    let parent = std::os::unix::process::parent_id();
    let score: i32 = std::fs::read_to_string(format!("/proc/{parent}/oom_score_adj"))?
        .trim()
        .parse()
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
    std::fs::write(
        format!("/proc/{pid}/oom_score_adj"),
        (score + 1).min(1000).to_string(),
    )
}
