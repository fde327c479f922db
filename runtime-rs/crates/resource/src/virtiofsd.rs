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

/// Kills any virtiofsd still serving sandbox `paths` (one a dead shim left: `delete`),
/// found by its `--socket-path=` argument; returns how many.
pub fn kill_leftovers(paths: &SandboxPaths) -> usize {
    let wanted = format!("--socket-path={}", paths.virtiofsd_socket().display());
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    let mut killed = 0;
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        if cmdline
            .split(|b| *b == 0)
            .any(|arg| arg == wanted.as_bytes())
            && nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            )
            .is_ok()
        {
            killed += 1;
        }
    }
    killed
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
    let mut command = tokio::process::Command::new(&config.daemon);
    let shim = std::process::id() as libc::pid_t;
    // SAFETY: between fork and exec only async-signal-safe calls (prctl, getppid, _exit).
    // The death signal follows the forking thread: the launcher, which lives as long as
    // the shim.
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The shim died before the death signal was armed.
            if libc::getppid() != shim {
                libc::_exit(1);
            }
            Ok(())
        });
    }
    command
        .arg(format!("--socket-path={}", socket.display()))
        .arg(format!("--shared-dir={}", paths.share.shared.display()))
        .arg(format!("--cache={}", config.cache))
        .args(&config.extra_args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    // Forked from the launcher: virtiofsd installs its own seccomp filter and must not
    // inherit the shim's.
    let runtime = tokio::runtime::Handle::current();
    let mut child = kata_launcher::run(move || {
        let _entered = runtime.enter();
        command.spawn()
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A process left serving a sandbox's share (its shim SIGKILLed) is found by its
    /// socket argument and killed; others are not touched.
    #[test]
    fn leftovers_are_found_by_their_socket_and_killed() {
        let paths = SandboxPaths::new(&format!("leftover-{}", std::process::id()));
        let arg = format!("--socket-path={}", paths.virtiofsd_socket().display());
        // `sleep` with the argument as its argv[0]: one process that neither forks nor
        // reads, whose command line holds exactly that argument.
        let blocked = |arg: &str| {
            std::os::unix::process::CommandExt::arg0(&mut std::process::Command::new("sleep"), arg)
                .arg("60")
                .spawn()
                .unwrap()
        };
        let mut leftover = blocked(&arg);
        let mut other = blocked("--socket-path=/elsewhere");
        // Right after spawn the new image's arguments may not be in place yet.
        let started = std::time::Instant::now();
        for child in [&leftover, &other] {
            while std::fs::read(format!("/proc/{}/cmdline", child.id()))
                .map(|c| c.is_empty())
                .unwrap_or(true)
            {
                assert!(started.elapsed() < Duration::from_secs(5), "no cmdline");
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        let found = kill_leftovers(&paths);
        if found != 1 {
            let cmdline = std::fs::read(format!("/proc/{}/cmdline", leftover.id()));
            panic!("found {found}; leftover's cmdline: {cmdline:?}; wanted {arg}");
        }
        let status = leftover.wait().unwrap();
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(libc::SIGKILL)
        );
        assert!(
            other.try_wait().unwrap().is_none(),
            "another sandbox's is left"
        );
        other.kill().unwrap();
        other.wait().unwrap();
    }
}
