//! What a virtio device implements, and what it gets when the driver activates it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use dbs_interrupt::InterruptLine;
use virtio_queue::Queue;
use vmm_sys_util::eventfd::EventFd;

/// Guest memory as devices see it.
pub type GuestMemory = Arc<vm_memory::GuestMemoryMmap<()>>;

/// VIRTIO_F_VERSION_1: every device here is a modern (1.0+) device.
pub const VIRTIO_F_VERSION_1: u64 = 1 << 32;
/// Interrupt status bit: a used buffer was added.
pub const INT_VRING: u32 = 1;
/// Interrupt status bit: the configuration changed.
pub const INT_CONFIG: u32 = 2;

/// The device's interrupt: the status register plus the wired line.
pub struct VirtioInterrupt {
    status: AtomicU32,
    line: Arc<dyn InterruptLine>,
}

impl VirtioInterrupt {
    /// An interrupt raised through `line`.
    pub fn new(line: Arc<dyn InterruptLine>) -> Self {
        VirtioInterrupt {
            status: AtomicU32::new(0),
            line,
        }
    }

    /// Tells the driver that used buffers are ready.
    pub fn signal_used_queue(&self) {
        self.status.fetch_or(INT_VRING, Ordering::SeqCst);
        if let Err(e) = self.line.trigger() {
            log::warn!("virtio: raising the interrupt failed: {e}");
        }
    }

    /// The InterruptStatus register.
    pub fn status(&self) -> u32 {
        self.status.load(Ordering::SeqCst)
    }

    /// InterruptACK: clears the acknowledged bits.
    pub fn ack(&self, bits: u32) {
        self.status.fetch_and(!bits, Ordering::SeqCst);
    }
}

/// What a device gets on DRIVER_OK.
pub struct ActivateContext {
    /// Guest memory.
    pub mem: GuestMemory,
    /// The queues the driver set up, with their notification eventfds.
    pub queues: Vec<(Queue, EventFd)>,
    /// The device interrupt.
    pub interrupt: Arc<VirtioInterrupt>,
}

/// Errors from activating a device.
#[derive(Debug, thiserror::Error)]
pub enum ActivateError {
    /// The driver's queue setup cannot be used.
    #[error("invalid queue configuration: {0}")]
    BadQueues(String),
    /// The device's backend failed.
    #[error("device backend: {0}")]
    Backend(String),
}

/// A virtio device behind the MMIO transport.
pub trait VirtioDevice: Send {
    /// Virtio device id (19 = vsock).
    fn device_type(&self) -> u32;
    /// Max size of each queue.
    fn queue_max_sizes(&self) -> &[u16];
    /// Offered feature bits.
    fn features(&self) -> u64;
    /// Accepts the driver's features (already masked by the offer).
    fn ack_features(&mut self, features: u64);
    /// Reads the device config space at `offset` into `data` (zeros beyond its end).
    fn read_config(&self, offset: u64, data: &mut [u8]);
    /// Writes the device config space (ignored by devices with a read-only config).
    fn write_config(&mut self, offset: u64, data: &[u8]);
    /// Starts processing queues.
    fn activate(&mut self, ctx: ActivateContext) -> Result<(), ActivateError>;
    /// The driver reset the device: stop and drop queue state.
    fn reset(&mut self);
}

/// Copies the part of `space` at `offset` into `data`; bytes past its end stay as the
/// transport zeroed them.
pub fn read_config_space(space: &[u8], offset: u64, data: &mut [u8]) {
    let start = offset.min(space.len() as u64) as usize;
    let n = data.len().min(space.len() - start);
    data[..n].copy_from_slice(&space[start..start + n]);
}

/// Work handed from the transport (a vCPU thread) to a device's event-loop handler.
pub enum Pending {
    /// The driver set DRIVER_OK.
    Activate(ActivateContext),
    /// The driver reset the device.
    Reset,
}

/// The channel between a device and its event-loop handler: activation happens on a
/// vCPU thread, queue processing on the VMM loop.
pub struct Handoff {
    /// Wakes the handler.
    pub evt: EventFd,
    pending: std::sync::Mutex<Vec<Pending>>,
}

impl Handoff {
    /// A new handoff.
    pub fn new() -> std::io::Result<Self> {
        Ok(Handoff {
            evt: EventFd::new(libc::EFD_NONBLOCK)?,
            pending: std::sync::Mutex::new(Vec::new()),
        })
    }

    /// Queues `p` and wakes the handler.
    pub fn send(&self, p: Pending) {
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(p);
        let _ = self.evt.write(1);
    }

    /// Takes everything queued (and clears the wakeup).
    pub fn take(&self) -> Vec<Pending> {
        let _ = self.evt.read();
        std::mem::take(&mut *self.pending.lock().unwrap_or_else(|e| e.into_inner()))
    }
}
