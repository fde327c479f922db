//! virtio-fs through an external virtiofsd: a vhost-user frontend. The VMM keeps the
//! virtio-mmio transport; virtiofsd maps guest memory (a shared memfd) and serves the
//! queues itself, kicked directly by the queues' ioeventfds. Its "call" eventfds come
//! back to the VMM loop, which raises the device interrupt.

use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use event_manager::{EventOps, Events, MutEventSubscriber};
use vhost::vhost_user::message::{VhostUserProtocolFeatures, VhostUserVirtioFeatures};
use vhost::vhost_user::{Frontend, VhostUserFrontend};
use vhost::{VhostBackend, VhostUserMemoryRegionInfo, VringConfigData};
use virtio_queue::QueueT;
use vm_memory::{GuestAddress, GuestMemoryBackend, GuestMemoryRegion};
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::eventfd::EventFd;

use super::{QUEUE_SIZE, TAG_LEN, VIRTIO_ID_FS};
use crate::device::{
    ActivateContext, ActivateError, Handoff, Pending, VIRTIO_F_VERSION_1, VirtioDevice,
    VirtioInterrupt,
};

const NUM_QUEUES: usize = 2;

/// Errors connecting to virtiofsd.
#[derive(Debug, thiserror::Error)]
#[error("virtiofsd socket '{}': {reason} (is virtiofsd running on it?)", path.display())]
pub struct VhostUserFsError {
    /// The socket.
    pub path: PathBuf,
    /// What failed.
    pub reason: String,
}

/// virtio-fs backed by virtiofsd over vhost-user.
pub struct VhostUserFsDevice {
    frontend: Frontend,
    backend_features: u64,
    acked: u64,
    config_space: Vec<u8>,
    control: Arc<Handoff>,
}

impl VhostUserFsDevice {
    /// Connects to virtiofsd at `socket` and negotiates what can be before the guest
    /// runs; returns the device and the handler that forwards its interrupts and calls
    /// `on_backend_gone` once if virtiofsd goes away (the guest's file system is then
    /// gone: the VMM ends the VM rather than leave its containers looking alive).
    pub fn new(
        tag: &str,
        socket: &Path,
        on_backend_gone: BackendGone,
    ) -> Result<(Self, Arc<Mutex<VhostUserFsHandler>>), VhostUserFsError> {
        let err = |reason: String| VhostUserFsError {
            path: socket.to_path_buf(),
            reason,
        };
        if tag.is_empty() || tag.len() > TAG_LEN {
            return Err(err(format!("tag '{tag}' must be 1 to 36 bytes")));
        }
        let mut frontend = Frontend::connect(socket, NUM_QUEUES as u64)
            .map_err(|e| err(format!("connect: {e}")))?;
        frontend
            .set_owner()
            .map_err(|e| err(format!("SET_OWNER: {e}")))?;
        let backend_features = frontend
            .get_features()
            .map_err(|e| err(format!("GET_FEATURES: {e}")))?;
        if backend_features & VIRTIO_F_VERSION_1 == 0 {
            return Err(err("the backend does not offer VIRTIO_F_VERSION_1".into()));
        }
        let protocol = VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits();
        if backend_features & protocol != 0 {
            let offered = frontend
                .get_protocol_features()
                .map_err(|e| err(format!("GET_PROTOCOL_FEATURES: {e}")))?;
            let wanted =
                offered & (VhostUserProtocolFeatures::MQ | VhostUserProtocolFeatures::REPLY_ACK);
            frontend
                .set_protocol_features(wanted)
                .map_err(|e| err(format!("SET_PROTOCOL_FEATURES: {e}")))?;
        }
        let control = Arc::new(Handoff::new().map_err(|e| err(format!("eventfd: {e}")))?);
        // SAFETY: dup of the live vhost-user socket, owned by the handler from here on.
        let sock = unsafe { libc::dup(frontend.as_raw_fd()) };
        if sock < 0 {
            return Err(err(format!("dup: {}", std::io::Error::last_os_error())));
        }
        // SAFETY: `sock` is a fresh fd nothing else owns.
        let sock = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(sock) };
        let mut config_space = vec![0u8; TAG_LEN + 4];
        config_space[..tag.len()].copy_from_slice(tag.as_bytes());
        config_space[TAG_LEN..].copy_from_slice(&((NUM_QUEUES - 1) as u32).to_le_bytes());
        let handler = VhostUserFsHandler {
            control: control.clone(),
            socket: sock,
            socket_path: socket.to_path_buf(),
            calls: Vec::new(),
            interrupt: None,
            on_backend_gone: Some(on_backend_gone),
        };
        Ok((
            VhostUserFsDevice {
                frontend,
                backend_features,
                acked: 0,
                config_space,
                control,
            },
            Arc::new(Mutex::new(handler)),
        ))
    }

    fn setup_backend(&mut self, ctx: &ActivateContext, calls: &[EventFd]) -> Result<(), String> {
        let protocol = self.backend_features & VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits();
        self.frontend
            .set_features(self.acked | protocol)
            .map_err(|e| format!("SET_FEATURES: {e}"))?;
        let mut regions = Vec::new();
        for r in ctx.mem.iter() {
            let file = r.file_offset().ok_or("guest memory is not file-backed")?;
            regions.push(VhostUserMemoryRegionInfo {
                guest_phys_addr: r.start_addr().0,
                memory_size: r.len(),
                userspace_addr: r.as_ptr() as u64,
                mmap_offset: file.start(),
                mmap_handle: file.file().as_raw_fd(),
            });
        }
        self.frontend
            .set_mem_table(&regions)
            .map_err(|e| format!("SET_MEM_TABLE: {e}"))?;
        let host = |gpa: u64| {
            ctx.mem
                .get_host_address(GuestAddress(gpa))
                .map(|p| p as u64)
                .map_err(|e| format!("queue address {gpa:#x}: {e}"))
        };
        for (i, ((q, kick), call)) in ctx.queues.iter().zip(calls).enumerate() {
            self.frontend
                .set_vring_num(i, q.size())
                .map_err(|e| format!("SET_VRING_NUM: {e}"))?;
            let config = VringConfigData {
                queue_max_size: q.max_size(),
                queue_size: q.size(),
                flags: 0,
                desc_table_addr: host(q.desc_table())?,
                used_ring_addr: host(q.used_ring())?,
                avail_ring_addr: host(q.avail_ring())?,
                log_addr: None,
            };
            self.frontend
                .set_vring_addr(i, &config)
                .map_err(|e| format!("SET_VRING_ADDR: {e}"))?;
            self.frontend
                .set_vring_base(i, 0)
                .map_err(|e| format!("SET_VRING_BASE: {e}"))?;
            self.frontend
                .set_vring_call(i, call)
                .map_err(|e| format!("SET_VRING_CALL: {e}"))?;
            self.frontend
                .set_vring_kick(i, kick)
                .map_err(|e| format!("SET_VRING_KICK: {e}"))?;
            if protocol != 0 {
                self.frontend
                    .set_vring_enable(i, true)
                    .map_err(|e| format!("SET_VRING_ENABLE: {e}"))?;
            }
        }
        Ok(())
    }
}

impl VirtioDevice for VhostUserFsDevice {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_FS
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE; NUM_QUEUES]
    }

    fn features(&self) -> u64 {
        VIRTIO_F_VERSION_1
    }

    fn ack_features(&mut self, features: u64) {
        self.acked = features;
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        crate::device::read_config_space(&self.config_space, offset, data);
    }

    fn write_config(&mut self, _offset: u64, _data: &[u8]) {}

    fn activate(&mut self, ctx: ActivateContext) -> Result<(), ActivateError> {
        if ctx.queues.len() != NUM_QUEUES {
            return Err(ActivateError::BadQueues(format!(
                "expected {NUM_QUEUES} queues"
            )));
        }
        let calls = (0..NUM_QUEUES)
            .map(|_| EventFd::new(libc::EFD_NONBLOCK))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| ActivateError::Backend(format!("eventfd: {e}")))?;
        self.setup_backend(&ctx, &calls)
            .map_err(|e| ActivateError::Backend(format!("virtiofsd: {e}")))?;
        // The handler watches the call eventfds in place of the queues.
        let queues = ctx
            .queues
            .into_iter()
            .zip(calls)
            .map(|((q, _kick), call)| (q, call))
            .collect();
        self.control.send(Pending::Activate(ActivateContext {
            mem: ctx.mem,
            queues,
            interrupt: ctx.interrupt,
        }));
        Ok(())
    }

    fn reset(&mut self) {
        for i in 0..NUM_QUEUES {
            let _ = self.frontend.set_vring_enable(i, false);
            let _ = self.frontend.get_vring_base(i);
        }
        self.control.send(Pending::Reset);
    }
}

/// Forwards virtiofsd's used-buffer notifications to the guest, and notices its death.
pub struct VhostUserFsHandler {
    control: Arc<Handoff>,
    socket: std::os::fd::OwnedFd,
    socket_path: PathBuf,
    calls: Vec<EventFd>,
    interrupt: Option<Arc<VirtioInterrupt>>,
    on_backend_gone: Option<BackendGone>,
}

/// What to do once virtiofsd has gone away.
pub type BackendGone = Box<dyn FnOnce() + Send>;

impl VhostUserFsHandler {
    /// virtiofsd closed its socket (it died or was killed): reported once.
    fn backend_hung_up(&mut self) {
        log::error!(
            "virtio-fs: virtiofsd on '{}' went away; the guest's file system is gone",
            self.socket_path.display()
        );
        if let Some(report) = self.on_backend_gone.take() {
            report();
        }
    }
}

impl MutEventSubscriber for VhostUserFsHandler {
    fn process(&mut self, events: Events, ops: &mut EventOps) {
        let fd = events.fd();
        if fd == self.control.evt.as_raw_fd() {
            for p in self.control.take() {
                for c in self.calls.drain(..) {
                    let _ = ops.remove(Events::empty(&c));
                }
                self.interrupt = None;
                if let Pending::Activate(ctx) = p {
                    for (_, call) in ctx.queues {
                        if let Err(e) = ops.add(Events::new(&call, EventSet::IN)) {
                            log::error!("virtio-fs: watching a call eventfd: {e:?}");
                        }
                        self.calls.push(call);
                    }
                    self.interrupt = Some(ctx.interrupt);
                }
            }
        } else if fd == self.socket.as_raw_fd() {
            if events
                .event_set()
                .intersects(EventSet::HANG_UP | EventSet::READ_HANG_UP | EventSet::ERROR)
            {
                let _ = ops.remove(Events::empty(&self.socket));
                self.backend_hung_up();
            }
        } else if let Some(call) = self.calls.iter().find(|c| c.as_raw_fd() == fd) {
            let _ = call.read();
            if let Some(irq) = &self.interrupt {
                irq.signal_used_queue();
            }
        }
    }

    fn init(&mut self, ops: &mut EventOps) {
        let _ = ops.add(Events::new(&self.control.evt, EventSet::IN));
        let _ = ops.add(Events::new(
            &self.socket,
            EventSet::READ_HANG_UP | EventSet::HANG_UP | EventSet::ERROR,
        ));
    }
}
