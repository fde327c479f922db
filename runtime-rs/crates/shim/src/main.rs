//! `containerd-shim-kata-v2`: the containerd shim (task API v2) of kata-rv. Each sandbox
//! is a Dragonball microVM running inside this process; the guest agent runs the
//! containers. containerd invokes it as `-info`, `… start` (both handled here, for every
//! containerd from 1.6 on), `… delete`, or as the ttrpc server (those two through the
//! shim crate).

mod bootstrap;
mod convert;
mod events;
mod info;
mod log;
mod metrics;
mod options;
mod spawn;
mod start;
mod task;
mod vmm_log;

use std::sync::Arc;

use async_trait::async_trait;
use containerd_shim::asynchronous::{ExitSignal, Shim, publisher::RemotePublisher};
use containerd_shim::{Config, Flags, StartOpts, protos::api::DeleteResponse};
use kata_hypervisor::Dragonball;
use kata_resource::Host;
use kata_runtimes::{Backends, HybridVsock, Runtime};
use task::KataTask;

/// CRI's annotation naming a container's kind (`sandbox` or `container`).
const CRI_CONTAINER_TYPE: &str = "io.kubernetes.cri.container-type";
/// CRI's annotation naming the sandbox a container belongs to.
const CRI_SANDBOX_ID: &str = "io.kubernetes.cri.sandbox-id";

/// The runtime name containerd knows this shim by.
const RUNTIME_ID: &str = "io.containerd.kata.v2";

struct KataShim {
    id: String,
    namespace: String,
    exit: Arc<ExitSignal>,
}

/// The sandbox a CRI pod container belongs to (None: it is a sandbox itself).
fn sandbox_of(bundle: &std::path::Path) -> Option<String> {
    let spec = oci_spec::runtime::Spec::load(bundle.join("config.json")).ok()?;
    let annotations = spec.annotations().as_ref()?;
    (annotations.get(CRI_CONTAINER_TYPE).map(String::as_str) == Some("container"))
        .then(|| annotations.get(CRI_SANDBOX_ID).cloned())
        .flatten()
}

#[async_trait]
impl Shim for KataShim {
    type T = KataTask;

    async fn new(_runtime_id: &str, args: &Flags, _config: &mut Config) -> Self {
        Self {
            id: args.id.clone(),
            namespace: args.namespace.clone(),
            exit: Arc::new(ExitSignal::default()),
        }
    }

    async fn start_shim(&mut self, _: StartOpts) -> containerd_shim::Result<String> {
        // `main` handles `start` before the crate sees it.
        Err(containerd_shim::Error::Other(
            "start is handled by kata-rv's own bootstrap".into(),
        ))
    }

    async fn delete_shim(&mut self) -> containerd_shim::Result<DeleteResponse> {
        // Whatever a dead shim of this sandbox left: the rootfs mount, share mounts,
        // /run/kata/<id>. (VM threads died with it.)
        let bundle = std::env::current_dir().unwrap_or_default();
        kata_resource::container::unmount_rootfs(&bundle);
        kata_resource::paths::remove_leftovers(&self.id, None);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Ok(DeleteResponse {
            pid: 0,
            exit_status: 128 + 9,
            exited_at: protobuf::MessageField::some(
                protobuf::well_known_types::timestamp::Timestamp {
                    seconds: now.as_secs() as i64,
                    nanos: now.subsec_nanos() as i32,
                    ..Default::default()
                },
            ),
            ..Default::default()
        })
    }

    async fn wait(&mut self) {
        self.exit.wait().await;
    }

    async fn create_task_service(&self, publisher: RemotePublisher) -> Self::T {
        let log = Arc::new(std::sync::Mutex::new(crate::log::open(&self.id, false)));
        vmm_log::install(log.clone());
        let events = Arc::new(events::Publisher {
            remote: publisher,
            namespace: self.namespace.clone(),
            log: log.clone(),
        });
        let backends = Backends {
            hypervisor: Arc::new(Dragonball::new()),
            resources: Arc::new(Host::new()),
            agents: Arc::new(HybridVsock),
        };
        let runtime = Runtime::new(backends, events, log.clone());
        KataTask::new(runtime, self.exit.clone(), log, &self.id)
    }
}

/// Handles `-info` and `start`, which exit here; anything else goes on to the crate.
fn handle_own_actions() {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let Ok(flags) = containerd_shim::parse(&args[1..]) else {
        return;
    };
    let reply = if flags.info {
        info::run(std::io::stdin().lock())
    } else if flags.action == "start" {
        start::run(&flags, std::io::stdin().lock()).map_err(|e| e.to_string())
    } else {
        return;
    };
    match reply {
        Ok(bytes) => {
            use std::io::Write;
            let mut stdout = std::io::stdout().lock();
            let written = stdout.write_all(&bytes).and_then(|()| stdout.flush());
            std::process::exit(if written.is_ok() { 0 } else { 1 });
        }
        Err(e) => {
            eprintln!("{RUNTIME_ID}: {e}");
            std::process::exit(1);
        }
    }
}

fn main() {
    handle_own_actions();
    serve();
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn serve() {
    let config = Config {
        // The shim logs with slog into containerd's log FIFO itself.
        no_setup_logger: true,
        // virtiofsd is a tokio child; nothing else forks, so no blanket reaper (it
        // would race tokio's waitpid).
        no_reaper: true,
        no_sub_reaper: true,
        ..Default::default()
    };
    containerd_shim::asynchronous::run::<KataShim>(RUNTIME_ID, Some(config)).await;
    // Leave now: dropping the runtime would wait for blocking-pool threads, and one may be
    // parked opening a FIFO whose other end containerd never opened.
    std::process::exit(0);
}
