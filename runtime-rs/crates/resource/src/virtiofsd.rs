//! virtiofsd serving the share's guest side (`shared_fs = "virtio-fs"`).

use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex};
use std::time::Duration;

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
/// found by its `--shared-dir=` argument (each sandbox has its own); returns how many.
pub fn kill_leftovers(paths: &SandboxPaths) -> usize {
    let wanted = shared_dir_arg(paths);
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

/// The argument naming the directory virtiofsd serves: sandbox `paths`' share.
fn shared_dir_arg(paths: &SandboxPaths) -> String {
    format!("--shared-dir={}", paths.share.shared.display())
}

/// The descriptor number virtiofsd finds its listening socket at (`--fd`).
const LISTENER_FD: libc::c_int = 3;

/// A running virtiofsd.
pub struct Virtiofsd {
    child: tokio::process::Child,
    daemon: std::path::PathBuf,
    last_line: Arc<Mutex<String>>,
}

impl Virtiofsd {
    /// Kills it and reaps it.
    pub async fn kill(&mut self) {
        let _ = self.child.kill().await;
    }

    /// Why it no longer serves, if it has exited: its status and last words.
    pub async fn exit_report(&mut self) -> Option<String> {
        let status = self.child.try_wait().ok().flatten()?;
        // Let the reader take the last of its output.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let said = self
            .last_line
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        Some(format!(
            "virtiofsd '{}' exited ({status}) before serving: {said}",
            self.daemon.display()
        ))
    }
}

/// Starts virtiofsd on the share's guest side. The socket is bound and listening before
/// this returns, and virtiofsd is handed it (`--fd`): the VMM may connect at once, its
/// requests waiting in the socket while virtiofsd still sets itself up, so nothing polls
/// for the socket and the VM build overlaps virtiofsd's start. Its stderr goes to the
/// shim log; if it exits before serving, [`Virtiofsd::exit_report`] has its last words.
pub fn start(
    config: &VirtiofsdConfig,
    paths: &SandboxPaths,
    log: &Logger,
) -> Result<Virtiofsd, ResourceError> {
    let socket = paths.virtiofsd_socket();
    // A socket file a crashed shim left would make the bind fail.
    let _ = std::fs::remove_file(&socket);
    let listener = std::os::unix::net::UnixListener::bind(&socket).map_err(|e| {
        ResourceError::Virtiofsd(format!(
            "binding virtiofsd's socket {}: {e}",
            socket.display()
        ))
    })?;
    let listener_fd = listener.as_raw_fd();
    let mut command = tokio::process::Command::new(&config.daemon);
    let shim = std::process::id() as libc::pid_t;
    // SAFETY: between fork and exec only async-signal-safe calls (prctl, getppid, dup2,
    // fcntl, _exit). The death signal follows the forking thread: the launcher, which
    // lives as long as the shim.
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The shim died before the death signal was armed.
            if libc::getppid() != shim {
                libc::_exit(1);
            }
            // The listener, without close-on-exec, where `--fd` says.
            let inherited = if listener_fd == LISTENER_FD {
                libc::fcntl(LISTENER_FD, libc::F_SETFD, 0)
            } else {
                libc::dup2(listener_fd, LISTENER_FD)
            };
            if inherited < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    command
        .arg(format!("--fd={LISTENER_FD}"))
        .arg(shared_dir_arg(paths))
        .arg(format!("--cache={}", config.cache))
        .args(&config.extra_args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    // Forked from the launcher: virtiofsd installs its own seccomp filter and must not
    // inherit the shim's.
    let runtime = tokio::runtime::Handle::current();
    let spawned = kata_launcher::run(move || {
        let _entered = runtime.enter();
        command.spawn()
    });
    // virtiofsd holds the socket now; the shim's copy would keep it alive after a crash.
    drop(listener);
    let mut child = spawned.map_err(|e| {
        let _ = std::fs::remove_file(&socket);
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
    Ok(Virtiofsd {
        child,
        daemon: config.daemon.clone(),
        last_line,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stand-in daemon: a shell script that ignores virtiofsd's arguments.
    fn daemon(dir: &std::path::Path, body: &str) -> VirtiofsdConfig {
        use std::os::unix::fs::PermissionsExt;
        let path = dir.join("fake-virtiofsd");
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        VirtiofsdConfig {
            daemon: path,
            cache: "auto".into(),
            extra_args: vec![],
        }
    }

    fn sandbox(name: &str) -> SandboxPaths {
        let paths = SandboxPaths::new(&format!("{name}-{}", std::process::id()));
        std::fs::create_dir_all(&paths.run_dir).unwrap();
        paths
    }

    fn log() -> Logger {
        Logger::root(slog::Discard, slog::o!())
    }

    /// The socket is bound, listening and handed to the daemon as fd 3 before `start`
    /// returns: a connection made at once is queued for it, with nothing polled.
    #[tokio::test]
    async fn the_socket_listens_before_start_returns_and_the_daemon_holds_it() {
        let paths = sandbox("vfsd-listen");
        // `exec` keeps descriptor 3 (not close-on-exec) open in the sleeper.
        let config = daemon(&paths.run_dir, "exec sleep 30");
        let mut running = start(&config, &paths, &log()).unwrap();
        let connected = std::os::unix::net::UnixStream::connect(paths.virtiofsd_socket());
        assert!(connected.is_ok(), "{connected:?}");
        assert!(running.exit_report().await.is_none(), "the daemon exited");
        let pid = running.child.id().unwrap();
        let fd3 = std::fs::read_link(format!("/proc/{pid}/fd/3")).unwrap();
        assert!(fd3.to_string_lossy().starts_with("socket:"), "{fd3:?}");
        running.kill().await;
        std::fs::remove_dir_all(&paths.run_dir).unwrap();
    }

    /// A daemon that dies before serving is reported with its status and last words.
    #[tokio::test]
    async fn a_daemon_that_exits_first_is_reported_with_its_last_line() {
        let paths = sandbox("vfsd-exit");
        let config = daemon(&paths.run_dir, "echo 'unknown option --bogus' >&2; exit 3");
        let mut running = start(&config, &paths, &log()).unwrap();
        let started = std::time::Instant::now();
        let report = loop {
            if let Some(report) = running.exit_report().await {
                break report;
            }
            assert!(started.elapsed() < Duration::from_secs(10), "never exited");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert!(report.contains("exit status: 3"), "{report}");
        assert!(report.ends_with("unknown option --bogus"), "{report}");
        std::fs::remove_dir_all(&paths.run_dir).unwrap();
    }

    #[test]
    fn a_missing_daemon_is_named_and_leaves_no_socket() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let _entered = runtime.enter();
        let paths = sandbox("vfsd-missing");
        let config = VirtiofsdConfig {
            daemon: "/nonexistent/virtiofsd".into(),
            cache: "auto".into(),
            extra_args: vec![],
        };
        let err = start(&config, &paths, &log()).err().unwrap().to_string();
        assert!(
            err.contains("virtio_fs_daemon '/nonexistent/virtiofsd'"),
            "{err}"
        );
        assert!(!paths.virtiofsd_socket().exists());
        std::fs::remove_dir_all(&paths.run_dir).unwrap();
    }

    /// A process left serving a sandbox's share (its shim SIGKILLed) is found by its
    /// shared-dir argument and killed; others are not touched.
    #[test]
    fn leftovers_are_found_by_their_shared_dir_and_killed() {
        let paths = SandboxPaths::new(&format!("leftover-{}", std::process::id()));
        let arg = shared_dir_arg(&paths);
        // `sleep` with the argument as its argv[0]: one process that neither forks nor
        // reads, whose command line holds exactly that argument.
        let blocked = |arg: &str| {
            std::os::unix::process::CommandExt::arg0(&mut std::process::Command::new("sleep"), arg)
                .arg("60")
                .spawn()
                .unwrap()
        };
        let mut leftover = blocked(&arg);
        let mut other = blocked("--shared-dir=/elsewhere");
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
