//! Devices of a VM: the MMIO bus (dbs-device `IoManager`) and what sits on it, including
//! virtio-mmio devices with their ioeventfds and interrupt lines.

use std::sync::{Arc, Mutex};

use dbs_device::DeviceIo;
use dbs_device::device_manager::IoManager;
use dbs_device::resources::Resource;
use dbs_interrupt::InterruptLine;
use dbs_virtio_devices::mmio::QUEUE_NOTIFY_OFFSET;
use dbs_virtio_devices::{MmioTransport, VirtioDevice, VirtioInterrupt};
use event_manager::MutEventSubscriber;
use kvm_ioctls::{IoEventAddress, VmFd};
use vmm_sys_util::eventfd::EventFd;

use dbs_address_space::GuestMemory;

/// An event-loop subscriber a device needs (e.g. the vsock muxer).
pub type Subscriber = Arc<Mutex<dyn MutEventSubscriber + Send>>;

/// Where a virtio-mmio device sits: window and wired interrupt source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MmioSlot {
    /// Base address.
    pub base: u64,
    /// Window size.
    pub size: u64,
    /// Interrupt source.
    pub irq: u32,
}

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

    /// Puts `device` on the port-I/O bus at `[base, base + size)` (x86_64).
    pub fn register_pio(
        &mut self,
        name: &str,
        device: Arc<dyn DeviceIo>,
        base: u16,
        size: u16,
    ) -> Result<(), DeviceError> {
        self.io
            .register_device_io(device, &[Resource::PioAddressRange { base, size }])
            .map_err(|e| DeviceError::Register {
                name: name.to_string(),
                base: u64::from(base),
                size: u64::from(size),
                reason: format!("{e:?}"),
            })
    }

    /// Puts a virtio device on `slot`: one ioeventfd per queue on QueueNotify (datamatch
    /// = queue index), interrupting through `line`.
    pub fn add_virtio(
        &mut self,
        name: &str,
        vm: &Arc<VmFd>,
        mem: &GuestMemory,
        device: Box<dyn VirtioDevice>,
        slot: MmioSlot,
        line: Arc<dyn InterruptLine>,
    ) -> Result<(), DeviceError> {
        let err = |reason: String| DeviceError::Register {
            name: name.to_string(),
            base: slot.base,
            size: slot.size,
            reason,
        };
        let mut evts = Vec::new();
        for queue in 0..device.queue_max_sizes().len() {
            let evt = EventFd::new(libc::EFD_NONBLOCK).map_err(|e| err(format!("eventfd: {e}")))?;
            vm.register_ioevent(
                &evt,
                &IoEventAddress::Mmio(slot.base + QUEUE_NOTIFY_OFFSET),
                queue as u32,
            )
            .map_err(|e| err(format!("ioeventfd for queue {queue}: {e}")))?;
            evts.push(evt);
        }
        let interrupt = Arc::new(VirtioInterrupt::new(line));
        let transport = MmioTransport::new(device, mem.clone(), interrupt, evts).map_err(err)?;
        self.register_mmio(name, Arc::new(transport), slot.base, slot.size)
    }

    /// The finished bus, for the vCPUs.
    pub fn into_bus(self) -> Arc<IoManager> {
        Arc::new(self.io)
    }
}
