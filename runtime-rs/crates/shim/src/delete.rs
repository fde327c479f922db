//! `containerd-shim-kata-v2 … delete`: containerd cleaning up after a shim that died.
//! Removes what it left on the host (the rootfs mount, share mounts, `/run/kata/<id>`;
//! its VM threads died with it), the dead server's socket, and answers a DeleteResponse
//! for a killed process.

use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::UnixStream;
use std::path::Path;

use containerd_shim::Flags;
use containerd_shim_protos::api::DeleteResponse;
use containerd_shim_protos::protobuf::{Message, MessageField};

/// Cleans up for `flags.id` and returns the encoded DeleteResponse.
pub fn run(flags: &Flags) -> Result<Vec<u8>, String> {
    let bundle = if flags.bundle.is_empty() {
        std::env::current_dir().unwrap_or_default()
    } else {
        std::path::PathBuf::from(&flags.bundle)
    };
    kata_resource::container::unmount_rootfs(&bundle);
    kata_resource::paths::remove_leftovers(&flags.id, None);
    remove_dead_socket(&bundle);
    let response = DeleteResponse {
        pid: 0,
        exit_status: 128 + 9,
        exited_at: MessageField::some(crate::events::timestamp(std::time::SystemTime::now())),
        ..Default::default()
    };
    response
        .write_to_bytes()
        .map_err(|e| format!("delete: encoding DeleteResponse: {e}"))
}

/// Removes the shim socket the bundle's `address` file names once nothing listens on it
/// (its server was killed and could not remove it). A live one — the sandbox shim a pod
/// container's address names — is left alone.
fn remove_dead_socket(bundle: &Path) {
    let Ok(address) = std::fs::read_to_string(bundle.join("address")) else {
        return;
    };
    let path = Path::new(address.trim().trim_start_matches("unix://"));
    let is_socket = std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket());
    let dead = matches!(UnixStream::connect(path),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused);
    if is_socket && dead {
        let _ = std::fs::remove_file(path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dead_servers_socket_goes_and_a_live_one_stays() {
        let dir = std::env::temp_dir().join(format!("delete-socket-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (dead, live) = (dir.join("dead.sock"), dir.join("live.sock"));
        drop(std::os::unix::net::UnixListener::bind(&dead).unwrap());
        let _listening = std::os::unix::net::UnixListener::bind(&live).unwrap();
        for (socket, stays) in [(&dead, false), (&live, true)] {
            std::fs::write(dir.join("address"), format!("unix://{}", socket.display())).unwrap();
            remove_dead_socket(&dir);
            assert_eq!(socket.exists(), stays, "{}", socket.display());
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
