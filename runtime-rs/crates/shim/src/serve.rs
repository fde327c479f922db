//! The shim's server process (what `start` spawns with `-socket`): the Task and Sandbox
//! services on one ttrpc socket, over one runtime, until the runtime lets the shim go.
//! Owned here so that both services can be registered (the shim crate's server takes the
//! Task service only).

use std::os::unix::fs::FileTypeExt;
use std::path::Path;
use std::sync::Arc;

use containerd_shim::Flags;
use containerd_shim::asynchronous::ExitSignal;
use containerd_shim::asynchronous::publisher::RemotePublisher;
use containerd_shim_protos::sandbox_async::create_sandbox;
use containerd_shim_protos::shim_async::create_task;
use kata_hypervisor::Dragonball;
use kata_resource::Host;
use kata_runtimes::{Backends, HybridVsock, Runtime};
use ttrpc::r#async::Server;
use ttrpc::r#async::transport::Listener;

use crate::sandbox_api::KataSandbox;
use crate::task::KataTask;

/// Why the server could not run.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// containerd did not say where to publish events.
    #[error("serve: TTRPC_ADDRESS is not set")]
    NoEventsAddress,
    /// The socket could not be bound.
    #[error("serve: socket {path}: {source}")]
    Socket {
        /// The socket path.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Connecting to containerd's events service failed.
    #[error("serve: containerd's events service: {0}")]
    Publisher(#[source] containerd_shim::Error),
    /// The ttrpc server failed.
    #[error("serve: ttrpc: {0}")]
    Ttrpc(#[source] ttrpc::Error),
}

/// Serves until the runtime lets the shim exit.
pub async fn run(flags: &Flags) -> Result<(), ServeError> {
    let events_address = std::env::var("TTRPC_ADDRESS").map_err(|_| ServeError::NoEventsAddress)?;
    let publisher = RemotePublisher::new(&events_address)
        .await
        .map_err(ServeError::Publisher)?;
    let path = flags.socket.trim_start_matches("unix://").to_string();
    let socket_err = |source| ServeError::Socket {
        path: path.clone(),
        source,
    };
    let Some(listener) = bind(&path).map_err(socket_err)? else {
        // Another server of this grouping already serves there.
        std::fs::write("address", &flags.socket).map_err(socket_err)?;
        signal_serving();
        return Ok(());
    };
    let exit = Arc::new(ExitSignal::default());
    let log = Arc::new(std::sync::Mutex::new(crate::log::open(&flags.id, false)));
    crate::vmm_log::install(log.clone());
    let events = Arc::new(crate::events::Publisher {
        remote: publisher,
        namespace: flags.namespace.clone(),
        log: log.clone(),
    });
    let backends = Backends {
        hypervisor: Arc::new(Dragonball::new()),
        resources: Arc::new(Host::new()),
        agents: Arc::new(HybridVsock),
    };
    let runtime = Runtime::new(backends, events, log.clone());
    let task = KataTask::new(runtime.clone(), exit.clone(), log, &flags.id);
    let sandbox = KataSandbox::new(runtime, exit.clone(), task.clone());
    let listener = Listener::try_from(listener).map_err(socket_err)?;
    let mut server = Server::new()
        .add_listener(listener)
        .register_service(create_task(Arc::new(task)))
        .register_service(create_sandbox(Arc::new(sandbox)));
    server.start().await.map_err(ServeError::Ttrpc)?;
    signal_serving();
    exit.wait().await;
    let _ = server.shutdown().await;
    let _ = std::fs::remove_file(&path);
    Ok(())
}

/// Binds `path`; None when a live server already answers there (a stale socket is
/// replaced).
fn bind(path: &str) -> std::io::Result<Option<std::os::unix::net::UnixListener>> {
    if let Some(parent) = Path::new(path).parent() {
        std::fs::create_dir_all(parent)?;
    }
    if let Ok(meta) = std::fs::symlink_metadata(path)
        && meta.file_type().is_socket()
    {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Ok(None);
        }
        std::fs::remove_file(path)?;
    }
    std::os::unix::net::UnixListener::bind(path).map(Some)
}

/// Tells `start` the server serves: stdout (its pipe) is replaced by stderr.
fn signal_serving() {
    // SAFETY: dup2 on the process's own standard descriptors; no memory is involved.
    unsafe {
        libc::dup2(libc::STDERR_FILENO, libc::STDOUT_FILENO);
    }
}

/// containerd ends a shim through Task.Shutdown, never by a signal: SIGTERM and SIGINT
/// (a terminal's ^C reaching the process group) are caught and dropped. Caught, not
/// ignored: an ignored signal stays ignored in children (virtiofsd), a handler does not.
/// (SIGPIPE is already ignored by the Rust runtime and restored for children.)
pub fn ignore_termination_signals() {
    use tokio::signal::unix::{SignalKind, signal};
    for kind in [SignalKind::terminate(), SignalKind::interrupt()] {
        if let Ok(mut stream) = signal(kind) {
            tokio::spawn(async move { while stream.recv().await.is_some() {} });
        }
    }
}
