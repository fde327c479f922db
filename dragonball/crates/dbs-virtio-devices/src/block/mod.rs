//! virtio-blk backed by a raw image file: read, write (unless read-only), flush and the
//! device id; requests are bounded and every guest address is checked.

mod handler;

use std::fs::{File, OpenOptions};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

pub use handler::BlockHandler;

use crate::device::{
    ActivateContext, ActivateError, Handoff, Pending, VIRTIO_F_VERSION_1, VirtioDevice,
};

/// virtio device id of block devices.
pub const VIRTIO_ID_BLOCK: u32 = 2;
/// Queue size of the single request queue.
pub const QUEUE_SIZE: u16 = 256;
/// Sector size of the virtio-blk protocol.
pub const SECTOR_SIZE: u64 = 512;
/// Largest data transfer of one request.
pub const MAX_REQUEST_BYTES: u32 = 1 << 20;
/// Longest serial (device id) string.
pub const ID_BYTES: usize = 20;

const VIRTIO_BLK_F_SIZE_MAX: u64 = 1 << 1;
const VIRTIO_BLK_F_SEG_MAX: u64 = 1 << 2;
const VIRTIO_BLK_F_RO: u64 = 1 << 5;
const VIRTIO_BLK_F_FLUSH: u64 = 1 << 9;

/// Configuration of a block device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockConfig {
    /// Raw image file.
    pub path: PathBuf,
    /// Refuse guest writes.
    pub read_only: bool,
    /// Device id returned to GET_ID (at most 20 bytes).
    pub serial: String,
}

/// Errors creating a block device.
#[derive(Debug, thiserror::Error)]
pub enum BlockError {
    /// The image cannot be opened.
    #[error("block image '{}': {reason}", path.display())]
    Image {
        /// Path.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The serial is too long.
    #[error("block serial '{0}' is longer than 20 bytes")]
    Serial(String),
}

/// The virtio-blk device.
pub struct BlockDevice {
    config_space: Vec<u8>,
    features: u64,
    control: Arc<Handoff>,
}

impl BlockDevice {
    /// Opens the image and creates the device and its event-loop handler.
    pub fn new(
        config: &BlockConfig,
    ) -> Result<(BlockDevice, Arc<Mutex<BlockHandler>>), BlockError> {
        let err = |reason: String| BlockError::Image {
            path: config.path.clone(),
            reason,
        };
        if config.serial.len() > ID_BYTES {
            return Err(BlockError::Serial(config.serial.clone()));
        }
        let file: File = OpenOptions::new()
            .read(true)
            .write(!config.read_only)
            .open(&config.path)
            .map_err(|e| err(e.to_string()))?;
        let meta = file.metadata().map_err(|e| err(e.to_string()))?;
        if !meta.is_file() {
            return Err(err("not a regular file".into()));
        }
        let size = meta.len();
        let sectors = size / SECTOR_SIZE;
        // capacity (u64), size_max (u32), seg_max (u32)
        let mut config_space = Vec::with_capacity(16);
        config_space.extend_from_slice(&sectors.to_le_bytes());
        config_space.extend_from_slice(&MAX_REQUEST_BYTES.to_le_bytes());
        config_space.extend_from_slice(&u32::from(QUEUE_SIZE - 2).to_le_bytes());
        let mut features =
            VIRTIO_F_VERSION_1 | VIRTIO_BLK_F_FLUSH | VIRTIO_BLK_F_SIZE_MAX | VIRTIO_BLK_F_SEG_MAX;
        if config.read_only {
            features |= VIRTIO_BLK_F_RO;
        }
        let control = Arc::new(Handoff::new().map_err(|e| err(format!("eventfd: {e}")))?);
        let mut id = [0u8; ID_BYTES];
        id[..config.serial.len()].copy_from_slice(config.serial.as_bytes());
        let handler = BlockHandler::new(
            file,
            sectors * SECTOR_SIZE,
            config.read_only,
            id,
            control.clone(),
        );
        Ok((
            BlockDevice {
                config_space,
                features,
                control,
            },
            Arc::new(Mutex::new(handler)),
        ))
    }
}

impl VirtioDevice for BlockDevice {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_BLOCK
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE]
    }

    fn features(&self) -> u64 {
        self.features
    }

    fn ack_features(&mut self, _features: u64) {}

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        crate::device::read_config_space(&self.config_space, offset, data);
    }

    fn write_config(&mut self, _offset: u64, _data: &[u8]) {}

    fn activate(&mut self, ctx: ActivateContext) -> Result<(), ActivateError> {
        if ctx.queues.len() != 1 {
            return Err(ActivateError::BadQueues(format!(
                "expected 1 queue, got {}",
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
