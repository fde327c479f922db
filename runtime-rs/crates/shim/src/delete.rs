//! `containerd-shim-kata-v2 … delete`: containerd cleaning up after a shim that died.
//! Removes what it left on the host (the rootfs mount, share mounts, `/run/kata/<id>`;
//! its VM threads died with it) and answers a DeleteResponse for a killed process.

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
