//! Devices of a VM: the MMIO bus (dbs-device `IoManager`) and what sits on it.

use std::sync::Arc;

use dbs_device::DeviceIo;
use dbs_device::device_manager::IoManager;
use dbs_device::resources::Resource;

/// Errors registering devices.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    /// Two devices claim the same addresses.
    #[error("registering {name} at {base:#x}+{size:#x}: {reason}")]
    Register {
        /// Device name.
        name: String,
        /// Base address.
        base: u64,
        /// Window size.
        size: u64,
        /// Why.
        reason: String,
    },
}

/// The MMIO bus shared by the vCPU threads.
#[derive(Default)]
pub struct DeviceManager {
    io: IoManager,
}

impl DeviceManager {
    /// An empty bus.
    pub fn new() -> Self {
        Self::default()
    }

    /// Puts `device` on the bus at `[base, base + size)`.
    pub fn register_mmio(
        &mut self,
        name: &str,
        device: Arc<dyn DeviceIo>,
        base: u64,
        size: u64,
    ) -> Result<(), DeviceError> {
        self.io
            .register_device_io(device, &[Resource::MmioAddressRange { base, size }])
            .map_err(|e| DeviceError::Register {
                name: name.to_string(),
                base,
                size,
                reason: format!("{e:?}"),
            })
    }

    /// The finished bus, for the vCPUs.
    pub fn into_bus(self) -> Arc<IoManager> {
        Arc::new(self.io)
    }
}
