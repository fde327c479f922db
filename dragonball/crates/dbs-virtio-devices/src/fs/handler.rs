//! FUSE request processing of inline virtio-fs on the VMM event loop.

use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::Arc;

use event_manager::{EventOps, Events, MutEventSubscriber};
use fuse_backend_rs::api::server::Server;
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

/// Serves FUSE requests from the guest.
pub struct FsHandler {
    server: Server<Arc<PassthroughFs>>,
    control: Arc<Handoff>,
    active: Option<Active>,
}

impl FsHandler {
    pub(super) fn new(shared_dir: &Path, control: Arc<Handoff>) -> std::io::Result<Self> {
        raise_fd_limit();
        let cfg = Config {
            root_dir: shared_dir.display().to_string(),
            do_import: true,
            xattr: true,
            cache_policy: CachePolicy::Auto,
            ..Default::default()
        };
        let fs = PassthroughFs::<()>::new(cfg)?;
        fs.import()?;
        Ok(FsHandler {
            server: Server::new(Arc::new(fs)),
            control,
            active: None,
        })
    }

    fn activate(
        &mut self,
        ctx: crate::device::ActivateContext,
        ops: &mut EventOps,
    ) -> Result<(), String> {
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
            if let Err(e) = ops.add(Events::new(&evt, EventSet::IN)) {
                return Err(format!("watching a queue: {e:?}"));
            }
            queues.push((v, evt));
        }
        self.active = Some(Active {
            _mem: ctx.mem,
            view,
            queues,
            interrupt: ctx.interrupt,
        });
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
