//! virtiofsd serving the share's guest side (`shared_fs = "virtio-fs"`).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use slog::Logger;
use tokio::io::AsyncBufReadExt;

use crate::{ResourceError, SandboxPaths};

/// How virtiofsd is run (from the configuration).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VirtiofsdConfig {
    /// The binary (`virtio_fs_daemon`).
    pub daemon: std::path::PathBuf,
    /// `--cache=` (`virtio_fs_cache`).
    pub cache: String,
    /// Extra arguments (`virtio_fs_extra_args`).
    pub extra_args: Vec<String>,
}

/// How long virtiofsd may take to create its socket.
const SOCKET_WAIT: Duration = Duration::from_secs(5);

/// Starts virtiofsd on the share's guest side and waits for its socket. Its stderr goes
/// to the shim log; if it exits first, the error carries its last words.
pub async fn start(
    config: &VirtiofsdConfig,
    paths: &SandboxPaths,
    log: &Logger,
) -> Result<tokio::process::Child, ResourceError> {
    let socket = paths.virtiofsd_socket();
    let mut child = tokio::process::Command::new(&config.daemon)
        .arg(format!("--socket-path={}", socket.display()))
        .arg(format!("--shared-dir={}", paths.share.shared.display()))
        .arg(format!("--cache={}", config.cache))
        .args(&config.extra_args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| {
            ResourceError::Virtiofsd(format!(
                "hypervisor.dragonball.virtio_fs_daemon '{}': {e}",
                config.daemon.display()
            ))
        })?;
    let last_line = Arc::new(Mutex::new(String::new()));
    if let Some(stderr) = child.stderr.take() {
        let (log, last_line) = (log.clone(), last_line.clone());
        tokio::spawn(async move {
            let mut lines = tokio::io::BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                slog::info!(log, "{}", line; "source" => "virtiofsd");
                *last_line.lock().unwrap_or_else(|e| e.into_inner()) = line;
            }
        });
    }
    let started = Instant::now();
    while started.elapsed() < SOCKET_WAIT {
        if socket.exists() {
            return Ok(child);
        }
        if let Ok(Some(status)) = child.try_wait() {
            // Let the reader take the last of its output.
            tokio::time::sleep(Duration::from_millis(50)).await;
            let said = last_line.lock().unwrap_or_else(|e| e.into_inner()).clone();
            return Err(ResourceError::Virtiofsd(format!(
                "virtiofsd '{}' exited ({status}) before serving: {said}",
                config.daemon.display()
            )));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Err(ResourceError::Virtiofsd(format!(
        "virtiofsd did not create {} within {SOCKET_WAIT:?}",
        socket.display()
    )))
}
