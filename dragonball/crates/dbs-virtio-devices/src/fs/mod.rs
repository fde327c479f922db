//! Inline virtio-fs: the FUSE server runs inside the VMM (fuse-backend-rs passthrough),
//! as upstream Dragonball's default `inline-virtio-fs`; no external daemon.
//!
//! fuse-backend-rs 0.14 speaks vm-memory/virtio-queue 0.17, so on activation the device
//! builds a 0.17 view of the same guest memory (non-owning mappings of the same host
//! addresses) and of its queues (same ring addresses).

mod handler;
mod vhost_user;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

pub use handler::FsHandler;
pub use vhost_user::{BackendGone, VhostUserFsDevice, VhostUserFsError, VhostUserFsHandler};

use crate::device::{
    ActivateContext, ActivateError, Handoff, Pending, VIRTIO_F_VERSION_1, VirtioDevice,
};

/// virtio device id of file-system devices.
pub const VIRTIO_ID_FS: u32 = 26;
/// Queue size of the high-priority and request queues.
pub const QUEUE_SIZE: u16 = 1024;
/// Longest mount tag.
pub const TAG_LEN: usize = 36;

/// Configuration of an inline virtio-fs device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FsConfig {
    /// Mount tag the guest uses (`mount -t virtiofs TAG DIR`).
    pub tag: String,
    /// Host directory shared with the guest.
    pub shared_dir: PathBuf,
}

/// Errors creating a virtio-fs device.
#[derive(Debug, thiserror::Error)]
pub enum FsError {
    /// The tag is empty or too long.
    #[error("virtio-fs tag '{0}' must be 1 to 36 bytes")]
    Tag(String),
    /// The shared directory cannot be served.
    #[error("virtio-fs shared dir '{}': {reason}", path.display())]
    SharedDir {
        /// Path.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

/// The virtio-fs device.
pub struct FsDevice {
    config_space: Vec<u8>,
    control: Arc<Handoff>,
}

impl FsDevice {
    /// Sets up the passthrough file system and creates the device and its handler.
    pub fn new(config: &FsConfig) -> Result<(FsDevice, Arc<Mutex<FsHandler>>), FsError> {
        if config.tag.is_empty() || config.tag.len() > TAG_LEN {
            return Err(FsError::Tag(config.tag.clone()));
        }
        let err = |reason: String| FsError::SharedDir {
            path: config.shared_dir.clone(),
            reason,
        };
        if !config.shared_dir.is_dir() {
            return Err(err("not a directory".into()));
        }
        let control = Arc::new(Handoff::new().map_err(|e| err(format!("eventfd: {e}")))?);
        let handler =
            FsHandler::new(&config.shared_dir, control.clone()).map_err(|e| err(e.to_string()))?;
        let mut config_space = vec![0u8; TAG_LEN + 4];
        config_space[..config.tag.len()].copy_from_slice(config.tag.as_bytes());
        config_space[TAG_LEN..].copy_from_slice(&1u32.to_le_bytes()); // one request queue
        Ok((
            FsDevice {
                config_space,
                control,
            },
            Arc::new(Mutex::new(handler)),
        ))
    }
}

impl VirtioDevice for FsDevice {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_FS
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE; 2]
    }

    fn features(&self) -> u64 {
        VIRTIO_F_VERSION_1
    }

    fn ack_features(&mut self, _features: u64) {}

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        crate::device::read_config_space(&self.config_space, offset, data);
    }

    fn write_config(&mut self, _offset: u64, _data: &[u8]) {}

    fn activate(&mut self, ctx: ActivateContext) -> Result<(), ActivateError> {
        if ctx.queues.len() != 2 {
            return Err(ActivateError::BadQueues(format!(
                "expected 2 queues, got {}",
                ctx.queues.len()
            )));
        }
        self.control.send(Pending::Activate(ctx));
        Ok(())
    }

    fn reset(&mut self) {
        self.control.send(Pending::Reset);
    }
}
