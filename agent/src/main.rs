//! `kata-agent`: the guest agent. As PID 1 of a sandbox VM it mounts the base
//! filesystems, reads `agent.*` from the kernel command line and serves
//! grpc.AgentService + grpc.Health over ttrpc on vsock port 1024, streaming its JSON logs
//! on port 1025. Outside a VM (host mode, for tests) it serves on a unix socket:
//!
//! ```text
//! kata-agent [--server-addr unix:///path.sock] [--log-level debug] [--log-vport 0]
//! ```

mod capabilities;
mod cgroup;
mod config;
mod container;
mod error;
mod file_changes;
mod guest;
mod init;
mod logging;
mod mount_options;
mod net;
mod plan;
mod reaper;
mod rpc;
mod sandbox;
mod seccomp;
mod spawn;
mod stdio;
mod storage;

use std::sync::Arc;

use config::AgentConfig;
use kata_agent_protocols::{agent_ttrpc, health_ttrpc};

const USAGE: &str = "usage: kata-agent [--server-addr vsock://CID:PORT|unix:///PATH] [--log-level LEVEL] [--log-vport PORT]";

fn parse_flags(config: &mut AgentConfig, args: &[String]) -> Result<(), String> {
    let mut iter = args.iter();
    while let Some(flag) = iter.next() {
        let key = match flag.as_str() {
            "--server-addr" => "agent.server_addr",
            "--log-level" => "agent.log",
            "--log-vport" => "agent.log_vport",
            "--version" => {
                println!("kata-agent {}", rpc::AGENT_VERSION);
                std::process::exit(0);
            }
            other => return Err(format!("unknown flag '{other}'\n{USAGE}")),
        };
        let value = iter
            .next()
            .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))?;
        config
            .apply(key, value, "flag")
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

fn load_config(pid1: bool) -> Result<(AgentConfig, Vec<String>), String> {
    let mut config = AgentConfig::default();
    let mut ignored = Vec::new();
    if pid1 {
        let cmdline = std::fs::read_to_string("/proc/cmdline")
            .map_err(|e| format!("reading /proc/cmdline: {e}"))?;
        ignored = config.apply_cmdline(&cmdline).map_err(|e| e.to_string())?;
    } else {
        // Host mode logs to stderr only unless asked.
        config.log_vport = 0;
    }
    config
        .apply_env(|key| std::env::var(key).ok())
        .map_err(|e| e.to_string())?;
    let args: Vec<String> = std::env::args().skip(1).collect();
    parse_flags(&mut config, &args)?;
    Ok((config, ignored))
}

fn fatal(pid1: bool, message: &str) -> ! {
    eprintln!("kata-agent: {message}");
    if pid1 {
        init::power_off();
    }
    std::process::exit(2)
}

async fn serve(config: AgentConfig, log: slog::Logger) -> Result<(), String> {
    let reaper = reaper::Reaper::default();
    reaper
        .start()
        .map_err(|e| format!("watching SIGCHLD: {e}"))?;
    let sandbox = sandbox::Sandbox::new(reaper, log.clone());
    if sandbox.cgroup_root.is_none() {
        slog::warn!(
            log,
            "no cgroup v2 at /sys/fs/cgroup: containers run without resource limits"
        );
    }
    let (shutdown_tx, mut shutdown_rx) = tokio::sync::mpsc::unbounded_channel();
    let agent = Arc::new(rpc::AgentService::new(sandbox, shutdown_tx));
    let health = Arc::new(rpc::HealthService);
    let mut services = agent_ttrpc::create_agent_service(agent.clone());
    services.extend(health_ttrpc::create_health(health));
    if let Some(path) = config.server_addr.strip_prefix("unix://") {
        let _ = std::fs::remove_file(path);
    }
    let mut server = ttrpc::r#async::Server::new()
        .bind(&config.server_addr)
        .map_err(|e| format!("listening on {}: {e}", config.server_addr))?
        .register_service(services);
    server
        .start()
        .await
        .map_err(|e| format!("starting the ttrpc server: {e}"))?;
    slog::info!(log, "agent listening"; "address" => &config.server_addr, "uptime_s" => uptime());
    if config.ready_vport != 0 && config.server_addr.starts_with("vsock://") {
        let (port, log) = (config.ready_vport, log.clone());
        tokio::task::spawn_blocking(move || match announce_ready(port) {
            Ok(()) => slog::debug!(log, "announced readiness"; "host_port" => port),
            Err(e) => {
                slog::warn!(log, "readiness announce failed: the runtime finds the agent by polling"; "host_port" => port, "error" => %e)
            }
        });
    }
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| format!("watching SIGTERM: {e}"))?;
    tokio::select! {
        _ = shutdown_rx.recv() => {
            // Let the DestroySandbox reply reach the runtime.
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        _ = terminate.recv() => {}
    }
    slog::info!(log, "agent shutting down");
    let _ = server.shutdown().await;
    // Nothing of the sandbox outlives the agent (in host mode the kernel would not do it).
    agent.remove_everything().await;
    Ok(())
}

/// Dials host vsock port `port` and hangs up: the runtime's signal that ttrpc is served.
fn announce_ready(port: u32) -> nix::Result<()> {
    use nix::sys::socket::{self, AddressFamily, SockFlag, SockType, VsockAddr};
    let fd = socket::socket(
        AddressFamily::Vsock,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    socket::connect(
        std::os::fd::AsRawFd::as_raw_fd(&fd),
        &VsockAddr::new(libc::VMADDR_CID_HOST, port),
    )
}

fn uptime() -> f64 {
    std::fs::read_to_string("/proc/uptime")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0)
}

fn main() {
    let pid1 = std::process::id() == 1;
    if pid1 && let Err(e) = init::mount_base() {
        fatal(true, &e);
    }
    let (config, ignored) = load_config(pid1).unwrap_or_else(|e| fatal(pid1, &e));
    let agent_log = logging::AgentLog::new(config.log_level, true);
    let log = agent_log.logger.clone();
    if config.log_vport != 0
        && config.server_addr.starts_with("vsock://")
        && let Err(e) = agent_log.serve_vsock(config.log_vport)
    {
        slog::warn!(log, "log port unavailable: logs go to the console only"; "port" => config.log_vport, "error" => %e);
    }
    for key in ignored {
        slog::warn!(log, "ignoring unsupported kernel cmdline key"; "key" => key);
    }
    if config.debug_console {
        slog::warn!(log, "agent.debug_console is not provided by this agent");
    }
    if !pid1 {
        // Host mode: orphans of our containers come back to us, as they would to PID 1.
        // SAFETY: prctl with integer arguments only.
        unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    }
    slog::info!(log, "kata-agent starting"; "version" => rpc::AGENT_VERSION, "pid1" => pid1, "uptime_s" => uptime());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap_or_else(|e| fatal(pid1, &format!("starting the runtime: {e}")));
    let result = runtime.block_on(serve(config, log.clone()));
    if let Err(e) = &result {
        slog::error!(log, "agent failed"; "error" => e);
    }
    drop(runtime);
    if pid1 {
        init::power_off();
    }
    std::process::exit(i32::from(result.is_err()));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_and_bad_ones_are_named() {
        let mut config = AgentConfig::default();
        parse_flags(
            &mut config,
            &["--server-addr".into(), "unix:///tmp/a.sock".into()],
        )
        .unwrap();
        assert_eq!(config.server_addr, "unix:///tmp/a.sock");
        assert!(
            parse_flags(&mut config, &["--bogus".into()])
                .unwrap_err()
                .contains("'--bogus'")
        );
        assert!(
            parse_flags(&mut config, &["--log-level".into()])
                .unwrap_err()
                .contains("needs a value")
        );
        let err = parse_flags(&mut config, &["--log-level".into(), "loud".into()]).unwrap_err();
        assert!(err.contains("flag key agent.log"), "{err}");
    }
}
