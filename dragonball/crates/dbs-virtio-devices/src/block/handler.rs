//! Request processing of virtio-blk on the VMM event loop.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use event_manager::{EventOps, Events, MutEventSubscriber};
use virtio_queue::{DescriptorChain, Queue, QueueT};
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::eventfd::EventFd;

use super::{ID_BYTES, MAX_REQUEST_BYTES, SECTOR_SIZE};
use crate::budget::Budget;
use crate::device::{GuestMemory, Handoff, Pending, VirtioInterrupt};

const VIRTIO_BLK_T_IN: u32 = 0;
const VIRTIO_BLK_T_OUT: u32 = 1;
const VIRTIO_BLK_T_FLUSH: u32 = 4;
const VIRTIO_BLK_T_GET_ID: u32 = 8;
const VIRTIO_BLK_S_OK: u8 = 0;
const VIRTIO_BLK_S_IOERR: u8 = 1;
const VIRTIO_BLK_S_UNSUPP: u8 = 2;

struct Active {
    mem: GuestMemory,
    queue: Queue,
    evt: EventFd,
    interrupt: Arc<VirtioInterrupt>,
}

/// The backing image.
struct Disk {
    file: File,
    size: u64,
    read_only: bool,
    id: [u8; ID_BYTES],
}

/// Serves virtio-blk requests.
pub struct BlockHandler {
    disk: Disk,
    control: Arc<Handoff>,
    active: Option<Active>,
}

impl BlockHandler {
    pub(super) fn new(
        file: File,
        size: u64,
        read_only: bool,
        id: [u8; ID_BYTES],
        control: Arc<Handoff>,
    ) -> Self {
        BlockHandler {
            disk: Disk {
                file,
                size,
                read_only,
                id,
            },
            control,
            active: None,
        }
    }
}

impl Disk {
    /// Executes one request; returns (status, bytes written to the guest).
    fn execute(
        &self,
        mem: &GuestMemoryMmap<()>,
        chain: DescriptorChain<&GuestMemoryMmap<()>>,
    ) -> Option<(u8, u32)> {
        let mut reader = chain.clone().reader(mem).ok()?;
        let mut writer = chain.writer(mem).ok()?;
        let mut header = [0u8; 16];
        reader.read_exact(&mut header).ok()?;
        let kind = u32::from_le_bytes(header[0..4].try_into().ok()?);
        let sector = u64::from_le_bytes(header[8..16].try_into().ok()?);
        // The status byte is the last writable byte of the chain.
        let writable = writer.available_bytes();
        if writable == 0 {
            return None;
        }
        let mut status_writer = writer.split_at(writable - 1).ok()?;
        let offset = sector.checked_mul(SECTOR_SIZE);
        let in_range = |len: u64| {
            offset
                .and_then(|o| o.checked_add(len))
                .is_some_and(|end| end <= self.size)
        };
        let (status, written) = match kind {
            VIRTIO_BLK_T_IN => {
                let len = writer.available_bytes() as u64;
                if len > u64::from(MAX_REQUEST_BYTES) || !in_range(len) {
                    (VIRTIO_BLK_S_IOERR, 0)
                } else {
                    let mut buf = vec![0u8; len as usize];
                    match self
                        .file
                        .read_exact_at(&mut buf, offset.unwrap_or(0))
                        .and_then(|_| writer.write_all(&buf))
                    {
                        Ok(()) => (VIRTIO_BLK_S_OK, len as u32),
                        Err(_) => (VIRTIO_BLK_S_IOERR, 0),
                    }
                }
            }
            VIRTIO_BLK_T_OUT => {
                let len = reader.available_bytes() as u64;
                if self.read_only || len > u64::from(MAX_REQUEST_BYTES) || !in_range(len) {
                    (VIRTIO_BLK_S_IOERR, 0)
                } else {
                    let mut buf = vec![0u8; len as usize];
                    match reader
                        .read_exact(&mut buf)
                        .and_then(|_| self.file.write_all_at(&buf, offset.unwrap_or(0)))
                    {
                        Ok(()) => (VIRTIO_BLK_S_OK, 0),
                        Err(_) => (VIRTIO_BLK_S_IOERR, 0),
                    }
                }
            }
            VIRTIO_BLK_T_FLUSH => match self.file.sync_data() {
                Ok(()) => (VIRTIO_BLK_S_OK, 0),
                Err(_) => (VIRTIO_BLK_S_IOERR, 0),
            },
            VIRTIO_BLK_T_GET_ID => {
                let n = writer.available_bytes().min(ID_BYTES);
                match writer.write_all(&self.id[..n]) {
                    Ok(()) => (VIRTIO_BLK_S_OK, n as u32),
                    Err(_) => (VIRTIO_BLK_S_IOERR, 0),
                }
            }
            _ => (VIRTIO_BLK_S_UNSUPP, 0),
        };
        status_writer.write_all(&[status]).ok()?;
        Some((status, written + 1))
    }
}

impl BlockHandler {
    fn process_queue(&mut self) {
        let Some(active) = self.active.as_mut() else {
            return;
        };
        let _ = active.evt.read();
        let mem = active.mem.clone();
        let mut used = false;
        let mut budget = Budget::per_event();
        while budget.take() {
            let Some(chain) = active.queue.pop_descriptor_chain(mem.as_ref()) else {
                break;
            };
            let head = chain.head_index();
            let len = match self.disk.execute(mem.as_ref(), chain) {
                Some((_, len)) => len,
                // Malformed (no header, no status byte, outside memory): return it empty.
                None => 0,
            };
            if active.queue.add_used(mem.as_ref(), head, len).is_err() {
                log::warn!("virtio-blk: used ring is not writable");
                break;
            }
            used = true;
        }
        budget.rearm_if_spent(&active.evt);
        if used
            && active
                .queue
                .needs_notification(mem.as_ref())
                .unwrap_or(true)
        {
            active.interrupt.signal_used_queue();
        }
    }
}

impl MutEventSubscriber for BlockHandler {
    fn process(&mut self, events: Events, ops: &mut EventOps) {
        if events.fd() == self.control.evt.as_raw_fd() {
            for p in self.control.take() {
                if let Some(old) = self.active.take() {
                    let _ = ops.remove(Events::empty(&old.evt));
                }
                if let Pending::Activate(ctx) = p {
                    let Some((queue, evt)) = ctx.queues.into_iter().next() else {
                        continue;
                    };
                    if let Err(e) = ops.add(Events::new(&evt, EventSet::IN)) {
                        log::error!("virtio-blk: watching the queue: {e:?}");
                    }
                    self.active = Some(Active {
                        mem: ctx.mem,
                        queue,
                        evt,
                        interrupt: ctx.interrupt,
                    });
                }
            }
        }
        self.process_queue();
    }

    fn init(&mut self, ops: &mut EventOps) {
        if let Err(e) = ops.add(Events::new(&self.control.evt, EventSet::IN)) {
            log::error!("virtio-blk: watching the handoff: {e:?}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use virtio_queue::desc::RawDescriptor;
    use virtio_queue::desc::split::Descriptor as SplitDescriptor;
    use virtio_queue::mock::MockSplitQueue;
    use vm_memory::{Bytes, GuestAddress};

    const WRITE: u16 = 2;
    const HDR: u64 = 0x10_0000;
    const DATA: u64 = 0x10_1000;
    const STATUS: u64 = 0x10_2000;

    fn disk(read_only: bool) -> Disk {
        // One file per call: tests run in parallel threads of one process.
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("blk-unit-{}-{n}-{read_only}", std::process::id()));
        std::fs::write(&path, vec![0x5au8; 8192]).unwrap();
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .unwrap();
        std::fs::remove_file(&path).unwrap();
        Disk {
            file,
            size: 8192,
            read_only,
            id: *b"unit-test-serial\0\0\0\0",
        }
    }

    fn desc(addr: u64, len: u32, flags: u16) -> RawDescriptor {
        RawDescriptor::from(SplitDescriptor::new(addr, len, flags, 0))
    }

    fn run(disk: &Disk, kind: u32, sector: u64, data: RawDescriptor) -> Option<(u8, u32)> {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x20_0000)]).unwrap();
        let mut header = [0u8; 16];
        header[0..4].copy_from_slice(&kind.to_le_bytes());
        header[8..16].copy_from_slice(&sector.to_le_bytes());
        mem.write_slice(&header, GuestAddress(HDR)).unwrap();
        let q = MockSplitQueue::new(&mem, 16);
        let chain = q
            .build_desc_chain(&[desc(HDR, 16, 0), data, desc(STATUS, 1, WRITE)])
            .unwrap();
        disk.execute(&mem, chain)
    }

    struct SilentLine;
    impl dbs_interrupt::InterruptLine for SilentLine {
        fn trigger(&self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// A guest that fills a queue with more chains than one event may serve: the handler
    /// stops at the budget, re-arms the queue's eventfd, and serves the rest on the next
    /// turn, so other devices and the API are not starved.
    #[test]
    fn a_queue_is_served_a_budget_per_event_then_rearmed() {
        use crate::budget::CHAINS_PER_EVENT;
        let mem =
            Arc::new(GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x40_0000)]).unwrap());
        let q = MockSplitQueue::new(mem.as_ref(), 1024);
        let total = CHAINS_PER_EVENT + 44;
        // One-descriptor chains (no status byte: each is returned empty, the cheapest path).
        let chains: Vec<RawDescriptor> = (0..total).map(|_| desc(HDR, 16, 0)).collect();
        q.add_desc_chains(&chains, 0).unwrap();
        let evt = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let mut handler = BlockHandler {
            disk: disk(false),
            control: Arc::new(Handoff::new().unwrap()),
            active: Some(Active {
                mem: mem.clone(),
                queue: q.create_queue().unwrap(),
                evt: evt.try_clone().unwrap(),
                interrupt: Arc::new(crate::VirtioInterrupt::new(Arc::new(SilentLine))),
            }),
        };
        let used = || q.used().idx().load() as usize;
        handler.process_queue();
        assert_eq!(used(), CHAINS_PER_EVENT, "one event serves one budget");
        assert_eq!(evt.read().unwrap(), 1, "and re-arms the queue for the rest");
        handler.process_queue();
        assert_eq!(used(), total);
        assert!(evt.read().is_err(), "nothing left: not re-armed");
    }

    #[test]
    fn reads_and_bounds() {
        let d = disk(false);
        assert_eq!(
            run(&d, VIRTIO_BLK_T_IN, 0, desc(DATA, 512, WRITE)),
            Some((VIRTIO_BLK_S_OK, 513))
        );
        // Past the end of the image.
        assert_eq!(
            run(&d, VIRTIO_BLK_T_IN, 16, desc(DATA, 512, WRITE)),
            Some((VIRTIO_BLK_S_IOERR, 1))
        );
        // A sector number whose byte offset overflows.
        assert_eq!(
            run(&d, VIRTIO_BLK_T_IN, u64::MAX, desc(DATA, 512, WRITE)),
            Some((VIRTIO_BLK_S_IOERR, 1))
        );
        assert_eq!(
            run(&d, 99, 0, desc(DATA, 512, WRITE)),
            Some((VIRTIO_BLK_S_UNSUPP, 1))
        );
    }

    #[test]
    fn read_only_refuses_writes() {
        let d = disk(true);
        assert_eq!(
            run(&d, VIRTIO_BLK_T_OUT, 0, desc(DATA, 512, 0)),
            Some((VIRTIO_BLK_S_IOERR, 1))
        );
    }

    #[test]
    fn buffers_outside_guest_memory_are_an_error_not_a_crash() {
        let d = disk(false);
        assert_eq!(
            run(&d, VIRTIO_BLK_T_IN, 0, desc(0xffff_0000_0000, 512, WRITE)),
            None
        );
        assert_eq!(run(&d, VIRTIO_BLK_T_OUT, 0, desc(0x1f_ff00, 4096, 0)), None);
    }
}
