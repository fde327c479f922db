//! FUSE request processing of inline virtio-fs on the VMM event loop.

use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::Arc;

use event_manager::{EventOps, Events, MutEventSubscriber};
use fuse_backend_rs::api::filesystem::{FileSystem as _, FsOptions};
use fuse_backend_rs::api::server::Server;
use fuse_backend_rs::api::{Vfs, VfsOptions};
use fuse_backend_rs::passthrough::{CachePolicy, Config, PassthroughFs};
use fuse_backend_rs::transport::{Reader, VirtioFsWriter, Writer};
use virtio_queue::QueueT as _;
use virtio_queue_017::{Queue as Queue017, QueueT as QueueT017};
use vm_memory::{GuestMemoryBackend as _, GuestMemoryRegion as _};
use vm_memory_017::{
    GuestAddress as Ga017, GuestMemoryMmap as Mem017, GuestRegionMmap as Region017,
    MmapRegion as Mmap017,
};
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::eventfd::EventFd;

use crate::budget::Budget;
use crate::device::{GuestMemory, Handoff, Pending, VirtioInterrupt};

struct Active {
    /// Keeps the real guest memory alive under the 0.17 view.
    _mem: GuestMemory,
    view: Mem017<()>,
    queues: Vec<(Queue017, EventFd)>,
    interrupt: Arc<VirtioInterrupt>,
}

impl Active {
    /// Builds the 0.17 views of the driver's memory and queues.
    fn new(ctx: crate::device::ActivateContext) -> Result<Active, String> {
        // A non-owning 0.17 view of the same host mappings.
        let mut regions = Vec::new();
        for r in ctx.mem.iter() {
            let host = r
                .get_host_address(vm_memory::MemoryRegionAddress(0))
                .map_err(|e| e.to_string())?;
            // SAFETY: the range is a live mapping owned by `ctx.mem`, which `Active` keeps
            // alive for as long as the view; build_raw does not unmap on drop.
            let mmap = unsafe {
                Mmap017::<()>::build_raw(
                    host,
                    r.len() as usize,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_ANONYMOUS | libc::MAP_PRIVATE,
                )
            }
            .map_err(|e| e.to_string())?;
            regions.push(
                Region017::new(mmap, Ga017(r.start_addr().0)).ok_or("guest region overflows")?,
            );
        }
        let view = Mem017::from_regions(regions).map_err(|e| e.to_string())?;
        let mut queues = Vec::new();
        for (q, evt) in ctx.queues {
            let mut v = Queue017::new(q.max_size()).map_err(|e| format!("{e:?}"))?;
            v.set_size(q.size());
            let split = |a: u64| (Some(a as u32), Some((a >> 32) as u32));
            let (lo, hi) = split(q.desc_table());
            v.set_desc_table_address(lo, hi);
            let (lo, hi) = split(q.avail_ring());
            v.set_avail_ring_address(lo, hi);
            let (lo, hi) = split(q.used_ring());
            v.set_used_ring_address(lo, hi);
            v.set_ready(true);
            if !v.is_valid(&view) {
                return Err("invalid queue".into());
            }
            queues.push((v, evt));
        }
        Ok(Active {
            _mem: ctx.mem,
            view,
            queues,
            interrupt: ctx.interrupt,
        })
    }
}

/// Serves FUSE requests from the guest.
pub struct FsHandler {
    /// The passthrough file system mounted at the root of a one-mount VFS: the VFS layer
    /// negotiates the FUSE session (async reads, 1 MiB requests, parallel directory ops),
    /// which the bare passthrough file system does not.
    vfs: Arc<Vfs>,
    server: Server<Arc<Vfs>>,
    control: Arc<Handoff>,
    active: Option<Active>,
}

impl FsHandler {
    pub(super) fn new(shared_dir: &Path, control: Arc<Handoff>) -> std::io::Result<Self> {
        raise_fd_limit();
        let cfg = Config {
            root_dir: shared_dir.display().to_string(),
            // The VFS mount below imports the root; a re-INIT after a device reset goes
            // through `Vfs::destroy`, which re-imports it.
            do_import: false,
            xattr: true,
            cache_policy: CachePolicy::Auto,
            ..Default::default()
        };
        let fs = PassthroughFs::<()>::new(cfg)?;
        fs.import()?;
        let vfs = Arc::new(Vfs::new(session_options()));
        vfs.mount(Box::new(fs), "/")
            .map_err(|e| std::io::Error::other(format!("mounting the shared dir: {e:?}")))?;
        Ok(FsHandler {
            server: Server::new(vfs.clone()),
            vfs,
            control,
            active: None,
        })
    }

    fn activate(
        &mut self,
        ctx: crate::device::ActivateContext,
        ops: &mut EventOps,
    ) -> Result<(), String> {
        let active = Active::new(ctx)?;
        for (_, evt) in &active.queues {
            if let Err(e) = ops.add(Events::new(evt, EventSet::IN)) {
                return Err(format!("watching a queue: {e:?}"));
            }
        }
        self.active = Some(active);
        Ok(())
    }

    fn process_queue(&mut self, index: usize) {
        let Some(a) = self.active.as_mut() else {
            return;
        };
        let Some((queue, evt)) = a.queues.get_mut(index) else {
            return;
        };
        let _ = evt.read();
        let mut used = false;
        let mut budget = Budget::per_event();
        while budget.take() {
            let Some(chain) = queue.pop_descriptor_chain(&a.view) else {
                break;
            };
            let head = chain.head_index();
            let reader = Reader::from_descriptor_chain(&a.view, chain.clone());
            let writer = VirtioFsWriter::new(&a.view, chain).map(Writer::VirtioFs);
            let len = match (reader, writer) {
                (Ok(r), Ok(w)) => match self.server.handle_message(r, w, None, None) {
                    Ok(n) => n as u32,
                    Err(e) => {
                        log::debug!("virtio-fs: request failed: {e}");
                        0
                    }
                },
                // Descriptors outside guest memory: returned empty.
                _ => 0,
            };
            if queue.add_used(&a.view, head, len).is_err() {
                break;
            }
            used = true;
        }
        budget.rearm_if_spent(evt);
        if used && queue.needs_notification(&a.view).unwrap_or(true) {
            a.interrupt.signal_used_queue();
        }
    }
}

/// What the VFS offers the guest at FUSE_INIT: the crate's defaults (async and parallel
/// requests, up to 1 MiB each), without the ones that change what the guest sees of the
/// host directory: no writeback cache (the host stays the authority on size and mtime),
/// no open-less or opendir-less sessions (each open is checked on the host), no
/// killpriv_v2, and no per-file DAX (the device has no DAX window).
fn session_options() -> VfsOptions {
    let defaults = VfsOptions::default();
    VfsOptions {
        out_opts: defaults.out_opts - FsOptions::PERFILE_DAX,
        no_open: false,
        no_opendir: false,
        no_writeback: true,
        killpriv_v2: false,
        ..defaults
    }
}

/// The passthrough server keeps an fd per guest-visible inode: lift this process's open
/// file limit as far as allowed (the hard limit; up to fs.nr_open when privileged).
fn raise_fd_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid rlimit struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return;
        }
        let nr_open = std::fs::read_to_string("/proc/sys/fs/nr_open")
            .ok()
            .and_then(|s| s.trim().parse::<libc::rlim_t>().ok())
            .unwrap_or(lim.rlim_max);
        let wanted = libc::rlimit {
            rlim_cur: nr_open.max(lim.rlim_max),
            rlim_max: nr_open.max(lim.rlim_max),
        };
        if libc::setrlimit(libc::RLIMIT_NOFILE, &wanted) != 0 {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

impl MutEventSubscriber for FsHandler {
    fn process(&mut self, events: Events, ops: &mut EventOps) {
        let fd = events.fd();
        if fd == self.control.evt.as_raw_fd() {
            for p in self.control.take() {
                if let Some(old) = self.active.take() {
                    for (_, evt) in &old.queues {
                        let _ = ops.remove(Events::empty(evt));
                    }
                    // The next driver starts a new FUSE session with its own INIT.
                    self.vfs.destroy();
                }
                if let Pending::Activate(ctx) = p
                    && let Err(e) = self.activate(ctx, ops)
                {
                    log::warn!("virtio-fs: activation failed: {e}");
                }
            }
            return;
        }
        let index = self
            .active
            .as_ref()
            .and_then(|a| a.queues.iter().position(|(_, e)| e.as_raw_fd() == fd));
        if let Some(i) = index {
            self.process_queue(i);
        }
    }

    fn init(&mut self, ops: &mut EventOps) {
        if let Err(e) = ops.add(Events::new(&self.control.evt, EventSet::IN)) {
            log::error!("virtio-fs: watching the handoff: {e:?}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use virtio_queue::desc::RawDescriptor;
    use virtio_queue::desc::split::Descriptor as SplitDescriptor;
    use virtio_queue::mock::MockSplitQueue;
    use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

    const FUSE_INIT: u32 = 26;
    const REQUEST: u64 = 0x10_0000;
    const REPLY: u64 = 0x10_1000;
    const NEXT: u16 = 1;
    const WRITE: u16 = 2;

    struct SilentLine;
    impl dbs_interrupt::InterruptLine for SilentLine {
        fn trigger(&self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn desc(addr: u64, len: u32, flags: u16, next: u16) -> RawDescriptor {
        RawDescriptor::from(SplitDescriptor::new(addr, len, flags, next))
    }

    /// FUSE_INIT as a 7.31 guest kernel sends it, offering `flags`.
    fn init_request(flags: u32) -> Vec<u8> {
        let mut body = Vec::new();
        for word in [7u32, 31, 128 << 10, flags] {
            body.extend_from_slice(&word.to_le_bytes());
        }
        let len = (40 + body.len()) as u32;
        let mut req = Vec::new();
        req.extend_from_slice(&len.to_le_bytes());
        req.extend_from_slice(&FUSE_INIT.to_le_bytes());
        req.extend_from_slice(&1u64.to_le_bytes()); // unique
        req.extend_from_slice(&0u64.to_le_bytes()); // nodeid
        req.extend_from_slice(&[0u8; 16]); // uid, gid, pid, extlen, padding
        req.extend_from_slice(&body);
        req
    }

    /// The session the guest gets: async reads, 1 MiB requests and parallel directory
    /// operations (without them every read is a lone 128 KiB round trip), but never the
    /// writeback cache, which would make the guest the authority on file sizes and times.
    #[test]
    fn init_negotiates_async_reads_and_1_mib_requests_without_writeback() {
        let dir = std::env::temp_dir().join(format!("fs-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mem =
            Arc::new(GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x20_0000)]).unwrap());
        let offered = FsOptions::ASYNC_READ
            | FsOptions::BIG_WRITES
            | FsOptions::WRITEBACK_CACHE
            | FsOptions::PARALLEL_DIROPS
            | FsOptions::MAX_PAGES;
        let req = init_request(offered.bits() as u32);
        mem.write_slice(&req, GuestAddress(REQUEST)).unwrap();
        let q = MockSplitQueue::new(mem.as_ref(), 16);
        q.add_desc_chains(
            &[
                desc(REQUEST, req.len() as u32, NEXT, 1),
                desc(REPLY, 0x1000, WRITE, 0),
            ],
            0,
        )
        .unwrap();
        let hiprio = MockSplitQueue::create(mem.as_ref(), GuestAddress(0x8_0000), 16);
        let evt = || EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let control = Arc::new(Handoff::new().unwrap());
        let mut handler = FsHandler::new(&dir, control).unwrap();
        handler.active = Some(
            Active::new(crate::device::ActivateContext {
                mem: mem.clone(),
                queues: vec![
                    (hiprio.create_queue().unwrap(), evt()),
                    (q.create_queue().unwrap(), evt()),
                ],
                interrupt: Arc::new(VirtioInterrupt::new(Arc::new(SilentLine))),
            })
            .unwrap(),
        );
        handler.process_queue(1);
        std::fs::remove_dir_all(&dir).unwrap();

        assert_eq!(q.used().idx().load(), 1, "the INIT request was answered");
        let word = |at: u64| mem.read_obj::<u32>(GuestAddress(REPLY + at)).unwrap();
        assert_eq!(word(4), 0, "INIT succeeded");
        // fuse_init_out after the 16-byte header: major, minor, max_readahead, flags,
        // max_background + congestion_threshold, max_write, time_gran, max_pages.
        let flags = FsOptions::from_bits_truncate(word(16 + 12) as u64);
        for wanted in [
            FsOptions::ASYNC_READ,
            FsOptions::BIG_WRITES,
            FsOptions::PARALLEL_DIROPS,
            FsOptions::MAX_PAGES,
        ] {
            assert!(flags.contains(wanted), "{wanted:?} missing from {flags:?}");
        }
        assert!(!flags.contains(FsOptions::WRITEBACK_CACHE), "{flags:?}");
        assert_eq!(word(16 + 20), 1 << 20, "max_write");
        let max_pages = mem.read_obj::<u16>(GuestAddress(REPLY + 16 + 28)).unwrap();
        assert_eq!(max_pages, 256, "max_pages");
    }
}
