//! The virtio-mmio transport, version 2 (virtio spec 4.2.2): registers, the device
//! status machine, queue setup and activation. Unknown offsets read as zero and ignore
//! writes; a driver that sets up invalid queues gets DEVICE_NEEDS_RESET, never a crash.

use std::sync::{Arc, Mutex};

use dbs_device::{DeviceIo, IoAddress};
use virtio_queue::{Queue, QueueT};
use vmm_sys_util::eventfd::EventFd;

use crate::device::{ActivateContext, GuestMemory, VirtioDevice, VirtioInterrupt};

/// "virt".
pub const MMIO_MAGIC: u32 = 0x7472_6976;
/// Offset of QueueNotify (where ioeventfds are registered).
pub const QUEUE_NOTIFY_OFFSET: u64 = 0x50;
/// Start of the device config space.
const CONFIG_OFFSET: u64 = 0x100;
const VENDOR_ID: u32 = 0x4b52_5644; // "DVRK"

const STATUS_ACKNOWLEDGE: u32 = 1;
const STATUS_DRIVER: u32 = 2;
const STATUS_DRIVER_OK: u32 = 4;
const STATUS_FEATURES_OK: u32 = 8;
const STATUS_NEEDS_RESET: u32 = 0x40;
const STATUS_FAILED: u32 = 0x80;

struct State {
    device: Box<dyn VirtioDevice>,
    queues: Vec<Queue>,
    queue_evts: Vec<EventFd>,
    device_features_sel: u32,
    driver_features_sel: u32,
    driver_features: u64,
    queue_sel: u32,
    status: u32,
    config_generation: u32,
    activated: bool,
}

/// A virtio device on an MMIO window.
pub struct MmioTransport {
    state: Mutex<State>,
    interrupt: Arc<VirtioInterrupt>,
    mem: GuestMemory,
}

impl MmioTransport {
    /// Wraps `device`; `queue_evts` (one per queue) are the eventfds the VMM registered
    /// as ioeventfds on QueueNotify with the queue index as datamatch.
    pub fn new(
        device: Box<dyn VirtioDevice>,
        mem: GuestMemory,
        interrupt: Arc<VirtioInterrupt>,
        queue_evts: Vec<EventFd>,
    ) -> Result<Self, String> {
        let sizes = device.queue_max_sizes().to_vec();
        if sizes.len() != queue_evts.len() {
            return Err(format!(
                "{} queues but {} notification eventfds",
                sizes.len(),
                queue_evts.len()
            ));
        }
        let queues = sizes
            .iter()
            .map(|s| Queue::new(*s).map_err(|e| format!("queue of size {s}: {e:?}")))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(MmioTransport {
            state: Mutex::new(State {
                device,
                queues,
                queue_evts,
                device_features_sel: 0,
                driver_features_sel: 0,
                driver_features: 0,
                queue_sel: 0,
                status: 0,
                config_generation: 0,
                activated: false,
            }),
            interrupt,
            mem,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl State {
    fn queue(&mut self) -> Option<&mut Queue> {
        self.queues.get_mut(self.queue_sel as usize)
    }

    fn reset(&mut self) {
        if self.activated {
            self.device.reset();
        }
        self.activated = false;
        for q in &mut self.queues {
            q.reset();
        }
        self.status = 0;
        self.driver_features = 0;
        self.queue_sel = 0;
    }

    fn set_status(&mut self, value: u32, mem: &GuestMemory, interrupt: &Arc<VirtioInterrupt>) {
        if value == 0 {
            self.reset();
            return;
        }
        // FEATURES_OK only sticks if the driver took no feature we did not offer.
        let mut value = value;
        if value & STATUS_FEATURES_OK != 0 && self.status & STATUS_FEATURES_OK == 0 {
            let offered = self.device.features();
            if self.driver_features & !offered != 0 {
                value &= !STATUS_FEATURES_OK;
            } else {
                self.device.ack_features(self.driver_features);
            }
        }
        self.status = value;
        let ready_to_run =
            STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK | STATUS_DRIVER_OK;
        if !self.activated && value & ready_to_run == ready_to_run && value & STATUS_FAILED == 0 {
            self.activate(mem, interrupt);
        }
    }

    fn activate(&mut self, mem: &GuestMemory, interrupt: &Arc<VirtioInterrupt>) {
        let mut queues = Vec::new();
        for (i, q) in self.queues.iter().enumerate() {
            if !q.ready() || !q.is_valid(mem.as_ref()) {
                log::warn!("virtio-mmio: queue {i} is not ready or invalid; device needs reset");
                self.status |= STATUS_NEEDS_RESET;
                return;
            }
            let evt = match self.queue_evts[i].try_clone() {
                Ok(e) => e,
                Err(e) => {
                    log::error!("virtio-mmio: cloning queue eventfd: {e}");
                    self.status |= STATUS_NEEDS_RESET;
                    return;
                }
            };
            let queue = match Queue::try_from(q.state()) {
                Ok(queue) => queue,
                Err(e) => {
                    log::warn!("virtio-mmio: queue {i}: {e:?}; device needs reset");
                    self.status |= STATUS_NEEDS_RESET;
                    return;
                }
            };
            queues.push((queue, evt));
        }
        let ctx = ActivateContext {
            mem: mem.clone(),
            queues,
            interrupt: interrupt.clone(),
        };
        match self.device.activate(ctx) {
            Ok(()) => self.activated = true,
            Err(e) => {
                log::warn!("virtio-mmio: activation failed: {e}");
                self.status |= STATUS_NEEDS_RESET;
            }
        }
    }
}

fn u32_of(data: &[u8]) -> Option<u32> {
    <[u8; 4]>::try_from(data).ok().map(u32::from_le_bytes)
}

impl DeviceIo for MmioTransport {
    fn read(&self, _base: IoAddress, offset: IoAddress, data: &mut [u8]) {
        let offset = offset.raw_value();
        let mut s = self.lock();
        if offset >= CONFIG_OFFSET {
            data.fill(0);
            s.device.read_config(offset - CONFIG_OFFSET, data);
            return;
        }
        if data.len() != 4 {
            data.fill(0);
            return;
        }
        let value = match offset {
            0x00 => MMIO_MAGIC,
            0x04 => 2,
            0x08 => s.device.device_type(),
            0x0c => VENDOR_ID,
            0x10 => {
                let f = s.device.features();
                match s.device_features_sel {
                    0 => f as u32,
                    1 => (f >> 32) as u32,
                    _ => 0,
                }
            }
            0x34 => s.queue().map(|q| u32::from(q.max_size())).unwrap_or(0),
            0x44 => s.queue().map(|q| u32::from(q.ready())).unwrap_or(0),
            0x60 => self.interrupt.status(),
            0x70 => s.status,
            0xfc => s.config_generation,
            _ => 0,
        };
        data.copy_from_slice(&value.to_le_bytes());
    }

    fn write(&self, _base: IoAddress, offset: IoAddress, data: &[u8]) {
        let offset = offset.raw_value();
        let mut s = self.lock();
        if offset >= CONFIG_OFFSET {
            s.device.write_config(offset - CONFIG_OFFSET, data);
            s.config_generation = s.config_generation.wrapping_add(1);
            return;
        }
        let Some(v) = u32_of(data) else { return };
        // Queue registers may only change before the driver says DRIVER_OK.
        let queue_config_allowed = s.status & STATUS_DRIVER_OK == 0;
        match offset {
            0x14 => s.device_features_sel = v,
            0x20 => match s.driver_features_sel {
                0 => s.driver_features = (s.driver_features & !0xffff_ffff) | u64::from(v),
                1 => s.driver_features = (s.driver_features & 0xffff_ffff) | (u64::from(v) << 32),
                _ => {}
            },
            0x24 => s.driver_features_sel = v,
            0x30 => s.queue_sel = v,
            0x38 if queue_config_allowed => {
                if let Some(q) = s.queue() {
                    q.set_size(v as u16);
                }
            }
            0x44 if queue_config_allowed => {
                if let Some(q) = s.queue() {
                    q.set_ready(v == 1);
                }
            }
            0x50 => {
                // Normally caught by the ioeventfd; a write that reaches us (e.g. a
                // non-matching width) is forwarded to the same eventfd.
                if let Some(evt) = s.queue_evts.get(v as usize) {
                    let _ = evt.write(1);
                }
            }
            0x64 => self.interrupt.ack(v),
            0x70 => s.set_status(v, &self.mem, &self.interrupt),
            0x80 | 0x84 | 0x90 | 0x94 | 0xa0 | 0xa4 if queue_config_allowed => {
                let (low, high) = if offset & 4 == 0 {
                    (Some(v), None)
                } else {
                    (None, Some(v))
                };
                if let Some(q) = s.queue() {
                    match offset & !4 {
                        0x80 => q.set_desc_table_address(low, high),
                        0x90 => q.set_avail_ring_address(low, high),
                        _ => q.set_used_ring_address(low, high),
                    }
                }
            }
            _ => {}
        }
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}
