//! `containerd-shim-kata-v2 … start`, owned here rather than by the shim crate (which
//! reads stdin as runc options and cannot take containerd 2.3+'s BootstrapParams): reads
//! what containerd of any version sent ([`crate::bootstrap`]), checks the runtime
//! options, then answers with the address of the pod's sandbox shim or of a new server
//! process, in the form that containerd expects. A start that fails leaves no process,
//! socket or file behind.

use std::path::Path;

use containerd_shim::Flags;
use containerd_shim_protos::protobuf::MessageField;

use crate::bootstrap::{BootstrapError, StartInput};
use crate::spawn::{Server, SpawnError};

/// The configuration path that came with `start`'s runtime options, handed to the server
/// for Task.Create (where Create's own options name none).
pub const START_CONFIG_ENV: &str = "KATA_RV_START_CONFIG_PATH";

/// Longest unix socket path plus one (`sun_path` of `sockaddr_un`).
const MAX_SOCKET_PATH: usize = 108;

/// containerd's socket directory unless BootstrapParams names another.
const DEFAULT_SOCKET_DIR: &str = "/run/containerd/s";

/// Why `start` failed.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// stdin could not be understood.
    #[error(transparent)]
    Input(#[from] BootstrapError),
    /// The runtime options are not kata-rv's.
    #[error("start: {0}")]
    Options(String),
    /// The configuration the options name does not load.
    #[error("start: configuration {path}: {reason}")]
    Config {
        /// Its path.
        path: String,
        /// Why.
        reason: String,
    },
    /// The bundle (cwd) or its address file.
    #[error("start: {what}: {source}")]
    Bundle {
        /// The step.
        what: &'static str,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The socket directory is too deep for a unix socket path.
    #[error("start: socket path {path} is longer than a unix socket path can be ({} bytes at most)", MAX_SOCKET_PATH - 1)]
    SocketPath {
        /// The path.
        path: String,
    },
    /// The server process.
    #[error(transparent)]
    Spawn(#[from] SpawnError),
}

/// Runs `start` with containerd's input on `stdin`; returns what to print.
pub fn run(flags: &Flags, stdin: impl std::io::Read) -> Result<Vec<u8>, StartError> {
    let input = StartInput::read(stdin, &flags.id, &flags.namespace)?;
    let config_path = match input.runtime_options() {
        Some(any) => crate::options::config_path_from_options(&MessageField::some(any.clone()))
            .map_err(StartError::Options)?,
        None => None,
    };
    if let Some(path) = &config_path {
        kata_config::Config::load(Path::new(path)).map_err(|e| StartError::Config {
            path: path.clone(),
            reason: e.to_string(),
        })?;
    }
    let bundle = std::env::current_dir().map_err(|source| StartError::Bundle {
        what: "the bundle directory",
        source,
    })?;
    let dir = input.socket_dir().unwrap_or(DEFAULT_SOCKET_DIR);
    let address_of =
        |grouping: &str| socket_address(&flags.address, &flags.namespace, grouping, dir);
    // A pod container: its sandbox's shim serves it.
    if let Some(sandbox) = crate::sandbox_of(&bundle) {
        let address = address_of(&sandbox);
        write_address(&bundle, &address)?;
        return Ok(input.reply(&address));
    }
    let address = address_of(&flags.id);
    let path = address.trim_start_matches("unix://");
    if path.len() >= MAX_SOCKET_PATH {
        return Err(StartError::SocketPath {
            path: path.to_string(),
        });
    }
    let mut env = Vec::new();
    if let Some(ttrpc) = input.ttrpc_address() {
        env.push(("TTRPC_ADDRESS", ttrpc.to_string()));
    }
    if let Some(path) = config_path {
        env.push((START_CONFIG_ENV, path));
    }
    let server = Server::spawn(flags, &address, &env)?;
    // On error the server is dropped: killed, its socket removed.
    write_address(&bundle, &address)?;
    server.detach();
    Ok(input.reply(&address))
}

/// containerd's socket address for `grouping` (a sha256 of address, namespace and id, as
/// containerd computes it), in `dir`.
pub fn socket_address(containerd: &str, namespace: &str, grouping: &str, dir: &str) -> String {
    let default = containerd_shim::socket_address(containerd, namespace, grouping);
    let hash = default.rsplit('/').next().unwrap_or_default();
    format!("unix://{}/{hash}", dir.trim_end_matches('/'))
}

fn write_address(bundle: &Path, address: &str) -> Result<(), StartError> {
    std::fs::write(bundle.join("address"), address).map_err(|source| StartError::Bundle {
        what: "writing the address file",
        source,
    })
}
