//! A guest driver made of fuzzer input, for one virtio-mmio device: register accesses,
//! a standard bring-up with queues at fixed guest addresses, descriptor chains placed
//! on a queue, notifications, and turns of the device's event loop — everything a
//! hostile guest can do to a device, in any order.

use std::sync::{Arc, Mutex};

use arbitrary::Arbitrary;
use dbs_device::{DeviceIo, IoAddress};
use dbs_virtio_devices::{MmioTransport, VirtioDevice, VirtioInterrupt};
use event_manager::{EventManager, MutEventSubscriber, SubscriberOps};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmm_sys_util::eventfd::EventFd;

/// Guest RAM of the rig: queue rings below [`DATA_BASE`], buffers above it.
pub const MEM_SIZE: u64 = 0x4_0000;
/// Where descriptor buffers live.
pub const DATA_BASE: u64 = 0x1_0000;
const RING_STRIDE: u64 = 0x3000;
const STATUS: u64 = 0x70;
const QUEUE_NOTIFY: u64 = 0x50;
const VIRTQ_DESC_F_NEXT: u16 = 1;

/// An event-loop subscriber, as the VMM holds them.
pub type Subscriber = Arc<Mutex<dyn MutEventSubscriber + Send>>;

/// One descriptor of a chain the fuzzer places on a queue.
#[derive(Arbitrary, Debug)]
pub struct Desc {
    /// Buffer address: below 2^31 an offset into the data area, otherwise the raw value
    /// (out of guest RAM, overlapping the rings, ...).
    pub addr: u32,
    /// Buffer length.
    pub len: u32,
    /// NEXT, WRITE, INDIRECT.
    pub flags: u8,
    /// Where NEXT points; `None` is the following slot, as a well-behaved driver does.
    pub next: Option<u16>,
}

/// One thing the guest driver (or, for `Backend`, the host side) does.
#[derive(Arbitrary, Debug)]
pub enum Op {
    /// A 4-byte register write at `offset * 4`.
    Write {
        /// Register index.
        offset: u8,
        /// Value.
        value: u32,
    },
    /// A register read at `offset * 4` with `width` 1..=8 bytes.
    Read {
        /// Register index.
        offset: u8,
        /// Access width.
        width: u8,
    },
    /// A config-space write.
    ConfigWrite {
        /// Offset into the config space.
        offset: u8,
        /// Bytes.
        data: Vec<u8>,
    },
    /// The driver's standard bring-up: features, every queue of `2^size_log2` entries at
    /// the rig's ring addresses, DRIVER_OK.
    Bringup {
        /// Queue size (capped at the device's maximum).
        size_log2: u8,
    },
    /// Raw bytes written to guest RAM.
    Poke {
        /// Guest address (modulo RAM size).
        addr: u32,
        /// Bytes.
        data: Vec<u8>,
    },
    /// A descriptor chain written to the next free slots and offered in the avail ring.
    Chain {
        /// Queue index.
        queue: u8,
        /// Descriptors.
        descs: Vec<Desc>,
    },
    /// The avail ring's idx set to any value (a guest that lies about its ring).
    AvailIdx {
        /// Queue index.
        queue: u8,
        /// New idx.
        idx: u16,
    },
    /// QueueNotify.
    Notify {
        /// Queue index.
        queue: u8,
    },
    /// One turn of the event loop, as the VMM thread runs it.
    Poll,
    /// Status 0: device reset.
    Reset,
    /// A device-specific host-side action (see [`Backend`]).
    Backend {
        /// Which action.
        code: u8,
        /// Its bytes.
        data: Vec<u8>,
    },
}

/// The host side of a device the fuzzer may poke besides the guest (e.g. host
/// connections to a vsock device).
pub trait Backend {
    /// Runs host action `code`.
    fn act(&mut self, code: u8, data: &[u8]);
    /// Runs after every event-loop turn (drains host sockets, ...).
    fn after_poll(&mut self) {}
}

/// No host-side actions.
pub struct NoBackend;

impl Backend for NoBackend {
    fn act(&mut self, _code: u8, _data: &[u8]) {}
}

struct QueueDriver {
    size: u16,
    next_slot: u16,
    avail_idx: u16,
}

struct SilentLine;

impl dbs_interrupt::InterruptLine for SilentLine {
    fn trigger(&self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A device on the MMIO transport with guest RAM and its own event loop.
pub struct Rig {
    mem: Arc<GuestMemoryMmap<()>>,
    transport: MmioTransport,
    events: EventManager<Subscriber>,
    max_sizes: Vec<u16>,
    features: u64,
    queues: Vec<QueueDriver>,
}

fn io(offset: u64) -> IoAddress {
    IoAddress(offset)
}

impl Rig {
    /// Puts `device` on a transport and `handler` on an event loop.
    pub fn new(device: Box<dyn VirtioDevice>, handler: Subscriber) -> Rig {
        let mem = Arc::new(
            GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), MEM_SIZE as usize)])
                .expect("guest RAM"),
        );
        let max_sizes = device.queue_max_sizes().to_vec();
        let features = device.features();
        let evts = max_sizes
            .iter()
            .map(|_| EventFd::new(libc::EFD_NONBLOCK).expect("eventfd"))
            .collect();
        let interrupt = Arc::new(VirtioInterrupt::new(Arc::new(SilentLine)));
        let transport =
            MmioTransport::new(device, mem.clone(), interrupt, evts).expect("transport");
        let mut events = EventManager::<Subscriber>::new().expect("event manager");
        events.add_subscriber(handler);
        let queues = max_sizes
            .iter()
            .map(|&size| QueueDriver {
                size,
                next_slot: 0,
                avail_idx: 0,
            })
            .collect();
        Rig {
            mem,
            transport,
            events,
            max_sizes,
            features,
            queues,
        }
    }

    fn write_reg(&self, offset: u64, value: u32) {
        self.transport
            .write(io(0), io(offset), &value.to_le_bytes());
    }

    fn ring_base(queue: usize) -> u64 {
        queue as u64 * RING_STRIDE
    }

    /// The standard driver bring-up (see [`Op::Bringup`]).
    pub fn bringup(&mut self, size_log2: u8) {
        self.write_reg(STATUS, 0);
        self.write_reg(STATUS, 1 | 2);
        for sel in 0..2u32 {
            self.write_reg(0x24, sel);
            self.write_reg(0x20, (self.features >> (32 * sel)) as u32);
        }
        self.write_reg(STATUS, 1 | 2 | 8);
        for (i, &max) in self.max_sizes.iter().enumerate() {
            let size = (1u32 << (size_log2 % 16)).min(u32::from(max)) as u16;
            let base = Self::ring_base(i);
            self.write_reg(0x30, i as u32);
            self.write_reg(0x38, u32::from(size));
            for (reg, addr) in [(0x80, base), (0x90, base + 0x1000), (0xa0, base + 0x2000)] {
                self.write_reg(reg, addr as u32);
                self.write_reg(reg + 4, (addr >> 32) as u32);
            }
            self.write_reg(0x44, 1);
            self.queues[i] = QueueDriver {
                size,
                next_slot: 0,
                avail_idx: 0,
            };
        }
        self.write_reg(STATUS, 1 | 2 | 8 | 4);
    }

    /// Writes `descs` to queue `queue`'s next free descriptor slots and offers the chain
    /// in its avail ring.
    pub fn chain(&mut self, queue: usize, descs: &[Desc]) {
        let Some(q) = self.queues.get_mut(queue) else {
            return;
        };
        if q.size == 0 || descs.is_empty() {
            return;
        }
        let base = Self::ring_base(queue);
        let head = q.next_slot % q.size;
        for (n, d) in descs.iter().enumerate() {
            let slot = (head as usize + n) % q.size as usize;
            let addr = if d.addr < 1 << 31 {
                DATA_BASE + u64::from(d.addr) % (MEM_SIZE - DATA_BASE)
            } else {
                u64::from(d.addr)
            };
            let last = n + 1 == descs.len();
            let mut flags = u16::from(d.flags & 7);
            if last && d.next.is_none() {
                flags &= !VIRTQ_DESC_F_NEXT;
            }
            let next = d.next.unwrap_or(((slot + 1) % q.size as usize) as u16);
            let mut raw = [0u8; 16];
            raw[0..8].copy_from_slice(&addr.to_le_bytes());
            raw[8..12].copy_from_slice(&d.len.to_le_bytes());
            raw[12..14].copy_from_slice(&flags.to_le_bytes());
            raw[14..16].copy_from_slice(&next.to_le_bytes());
            let _ = self
                .mem
                .write_slice(&raw, GuestAddress(base + 16 * slot as u64));
        }
        q.next_slot = ((head as usize + descs.len()) % q.size as usize) as u16;
        let ring_slot = u64::from(q.avail_idx % q.size);
        let avail = base + 0x1000;
        let _ = self
            .mem
            .write_obj(head, GuestAddress(avail + 4 + 2 * ring_slot));
        q.avail_idx = q.avail_idx.wrapping_add(1);
        let _ = self.mem.write_obj(q.avail_idx, GuestAddress(avail + 2));
    }

    /// Writes `data` to guest RAM at `addr` (modulo the RAM size; cut at its end).
    pub fn poke(&self, addr: u64, data: &[u8]) {
        let addr = addr % MEM_SIZE;
        let n = data.len().min((MEM_SIZE - addr) as usize);
        let _ = self.mem.write_slice(&data[..n], GuestAddress(addr));
    }

    /// Notifies queue `queue`, then runs the event loop until it is idle (a few turns).
    pub fn kick(&mut self, queue: u32, backend: &mut dyn Backend) {
        self.write_reg(QUEUE_NOTIFY, queue);
        for _ in 0..4 {
            self.poll(backend);
        }
    }

    fn poll(&mut self, backend: &mut dyn Backend) {
        let _ = self.events.run_with_timeout(0);
        backend.after_poll();
    }

    /// Runs one op against the device, with `backend` for host-side actions.
    pub fn apply(&mut self, op: &Op, backend: &mut dyn Backend) {
        match op {
            Op::Write { offset, value } => self.write_reg(u64::from(*offset) * 4, *value),
            Op::Read { offset, width } => {
                let mut buf = vec![0u8; usize::from(width % 8) + 1];
                self.transport
                    .read(io(0), io(u64::from(*offset) * 4), &mut buf);
            }
            Op::ConfigWrite { offset, data } => {
                self.transport
                    .write(io(0), io(0x100 + u64::from(*offset)), data);
            }
            Op::Bringup { size_log2 } => self.bringup(*size_log2),
            Op::Poke { addr, data } => self.poke(u64::from(*addr), data),
            Op::Chain { queue, descs } => self.chain(usize::from(*queue), descs),
            Op::AvailIdx { queue, idx } => {
                let base = Self::ring_base(usize::from(*queue) % self.queues.len().max(1));
                let _ = self.mem.write_obj(*idx, GuestAddress(base + 0x1000 + 2));
            }
            Op::Notify { queue } => self.write_reg(QUEUE_NOTIFY, u32::from(*queue)),
            Op::Poll => self.poll(backend),
            Op::Reset => self.write_reg(STATUS, 0),
            Op::Backend { code, data } => backend.act(*code, data),
        }
    }

    /// Runs `ops`, then serves whatever the guest left queued, as the VMM would.
    pub fn run(&mut self, ops: &[Op], backend: &mut dyn Backend) {
        for op in ops {
            self.apply(op, backend);
        }
        for _ in 0..4 {
            self.poll(backend);
        }
    }
}

/// A per-process scratch directory, emptied on every call.
pub fn scratch_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("kata-rv-fuzz-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}
