//! The virtio-vsock device as the transport sees it: config space (the guest CID),
//! features, and activation handed over to the [`VsockMuxer`] on the VMM loop.

use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::muxer::VsockMuxer;
use super::{QUEUE_SIZE, VIRTIO_ID_VSOCK};
use crate::device::{
    ActivateContext, ActivateError, Handoff, Pending, VIRTIO_F_VERSION_1, VirtioDevice,
};

/// Configuration of a vsock device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VsockConfig {
    /// The guest's context id (>= 3).
    pub guest_cid: u64,
    /// The hybrid-vsock unix socket.
    pub uds_path: PathBuf,
}

/// Errors creating a vsock device.
#[derive(Debug, thiserror::Error)]
pub enum VsockError {
    /// CIDs 0..=2 are reserved.
    #[error("vsock guest_cid {0} is reserved: use 3 or higher")]
    BadCid(u64),
    /// The socket path is in use or cannot be bound.
    #[error("vsock socket '{}': {reason}", path.display())]
    Socket {
        /// Path.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

/// The virtio-vsock device.
pub struct VsockDevice {
    cid: u64,
    control: Arc<Handoff>,
    acked_features: u64,
}

fn bind(path: &Path) -> Result<UnixListener, VsockError> {
    let err = |reason: String| VsockError::Socket {
        path: path.to_path_buf(),
        reason,
    };
    if path.exists() {
        // A socket nobody listens on is a leftover of a dead VMM: replace it. A live
        // one belongs to another VM.
        if UnixStream::connect(path).is_ok() {
            return Err(err("another process is listening on it".into()));
        }
        std::fs::remove_file(path).map_err(|e| err(format!("removing the stale socket: {e}")))?;
    }
    let listener = UnixListener::bind(path).map_err(|e| err(e.to_string()))?;
    listener
        .set_nonblocking(true)
        .map_err(|e| err(e.to_string()))?;
    Ok(listener)
}

impl VsockDevice {
    /// Creates the device and the muxer that must be added to the VMM event loop.
    pub fn new(config: &VsockConfig) -> Result<(VsockDevice, Arc<Mutex<VsockMuxer>>), VsockError> {
        if config.guest_cid < 3 || config.guest_cid > u64::from(u32::MAX) {
            return Err(VsockError::BadCid(config.guest_cid));
        }
        let listener = bind(&config.uds_path)?;
        let control = Arc::new(Handoff::new().map_err(|e| VsockError::Socket {
            path: config.uds_path.clone(),
            reason: format!("eventfd: {e}"),
        })?);
        let muxer = VsockMuxer::new(
            config.guest_cid,
            config.uds_path.clone(),
            listener,
            control.clone(),
        );
        Ok((
            VsockDevice {
                cid: config.guest_cid,
                control,
                acked_features: 0,
            },
            Arc::new(Mutex::new(muxer)),
        ))
    }
}

impl VirtioDevice for VsockDevice {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_VSOCK
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE; 3]
    }

    fn features(&self) -> u64 {
        VIRTIO_F_VERSION_1
    }

    fn ack_features(&mut self, features: u64) {
        self.acked_features = features;
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        crate::device::read_config_space(&self.cid.to_le_bytes(), offset, data);
    }

    fn write_config(&mut self, _offset: u64, _data: &[u8]) {}

    fn activate(&mut self, ctx: ActivateContext) -> Result<(), ActivateError> {
        if ctx.queues.len() != 3 {
            return Err(ActivateError::BadQueues(format!(
                "expected 3 queues, got {}",
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
