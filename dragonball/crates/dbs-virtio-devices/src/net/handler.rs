//! Frame movement between the virtqueues and the tap, on the VMM event loop.

use std::io::{ErrorKind, Read, Write};
use std::os::fd::AsRawFd;
use std::sync::Arc;

use event_manager::{EventOps, Events, MutEventSubscriber};
use virtio_queue::{Queue, QueueOwnedT, QueueT};
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::eventfd::EventFd;

use super::NET_HDR_LEN;
use super::tap::Tap;
use crate::budget::Budget;
use crate::device::{GuestMemory, Handoff, Pending, VirtioInterrupt};

/// Largest frame we move (64 KiB + Ethernet header); larger TX chains are dropped.
const MAX_FRAME: usize = 65_562;

struct Active {
    mem: GuestMemory,
    rxq: Queue,
    txq: Queue,
    rx_evt: EventFd,
    tx_evt: EventFd,
    interrupt: Arc<VirtioInterrupt>,
}

/// Moves frames between the guest and the tap.
pub struct NetHandler {
    tap: Tap,
    control: Arc<Handoff>,
    active: Option<Active>,
    /// The tap may have frames to read (edge-triggered readiness).
    tap_readable: bool,
    buf: Vec<u8>,
}

impl NetHandler {
    pub(super) fn new(tap: Tap, control: Arc<Handoff>) -> Self {
        NetHandler {
            tap,
            control,
            active: None,
            tap_readable: true,
            buf: vec![0u8; NET_HDR_LEN + MAX_FRAME],
        }
    }

    fn process_tx(&mut self) {
        let Some(a) = self.active.as_mut() else {
            return;
        };
        let mem = a.mem.clone();
        let mut used = false;
        let mut budget = Budget::per_event();
        while budget.take() {
            let Some(chain) = a.txq.pop_descriptor_chain(mem.as_ref()) else {
                break;
            };
            let head = chain.head_index();
            if let Ok(mut reader) = chain.reader(mem.as_ref()) {
                let len = reader.available_bytes();
                if (NET_HDR_LEN..=NET_HDR_LEN + MAX_FRAME).contains(&len)
                    && reader.read_exact(&mut self.buf[..len]).is_ok()
                {
                    // A full tap queue drops the frame, as a real NIC would.
                    let _ = self.tap.file.write(&self.buf[NET_HDR_LEN..len]);
                }
            }
            if a.txq.add_used(mem.as_ref(), head, 0).is_err() {
                break;
            }
            used = true;
        }
        budget.rearm_if_spent(&a.tx_evt);
        if used && a.txq.needs_notification(mem.as_ref()).unwrap_or(true) {
            a.interrupt.signal_used_queue();
        }
    }

    fn process_rx(&mut self) {
        let Some(a) = self.active.as_mut() else {
            return;
        };
        let mem = a.mem.clone();
        let mut used = false;
        let mut budget = Budget::per_event();
        while self.tap_readable && budget.take() {
            let Some(chain) = a.rxq.pop_descriptor_chain(mem.as_ref()) else {
                break;
            };
            let head = chain.head_index();
            let n = match self.tap.file.read(&mut self.buf[NET_HDR_LEN..]) {
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    self.tap_readable = false;
                    a.rxq.go_to_previous_position();
                    break;
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {
                    a.rxq.go_to_previous_position();
                    continue;
                }
                Err(e) => {
                    log::warn!("virtio-net: reading the tap: {e}");
                    self.tap_readable = false;
                    a.rxq.go_to_previous_position();
                    break;
                }
            };
            // virtio_net_hdr_v1: no offloads, num_buffers = 1.
            self.buf[..NET_HDR_LEN].fill(0);
            self.buf[10] = 1;
            let total = NET_HDR_LEN + n;
            let written = match chain.writer(mem.as_ref()) {
                Ok(mut w) if w.available_bytes() >= total => w
                    .write_all(&self.buf[..total])
                    .map(|_| total as u32)
                    .unwrap_or(0),
                // Buffer outside memory or too small: the frame is dropped.
                _ => 0,
            };
            if a.rxq.add_used(mem.as_ref(), head, written).is_err() {
                break;
            }
            used = true;
        }
        if self.tap_readable {
            budget.rearm_if_spent(&a.rx_evt);
        }
        if used && a.rxq.needs_notification(mem.as_ref()).unwrap_or(true) {
            a.interrupt.signal_used_queue();
        }
    }
}

impl MutEventSubscriber for NetHandler {
    fn process(&mut self, events: Events, ops: &mut EventOps) {
        let fd = events.fd();
        if fd == self.control.evt.as_raw_fd() {
            for p in self.control.take() {
                if let Some(old) = self.active.take() {
                    let _ = ops.remove(Events::empty(&old.rx_evt));
                    let _ = ops.remove(Events::empty(&old.tx_evt));
                }
                if let Pending::Activate(ctx) = p {
                    let mut q = ctx.queues.into_iter();
                    let (Some((rxq, rx_evt)), Some((txq, tx_evt))) = (q.next(), q.next()) else {
                        continue;
                    };
                    for evt in [&rx_evt, &tx_evt] {
                        if let Err(e) = ops.add(Events::new(evt, EventSet::IN)) {
                            log::error!("virtio-net: watching a queue: {e:?}");
                        }
                    }
                    self.active = Some(Active {
                        mem: ctx.mem,
                        rxq,
                        txq,
                        rx_evt,
                        tx_evt,
                        interrupt: ctx.interrupt,
                    });
                }
            }
        } else if fd == self.tap.fd() {
            self.tap_readable = true;
        } else if let Some(a) = &self.active {
            if fd == a.rx_evt.as_raw_fd() {
                let _ = a.rx_evt.read();
            } else if fd == a.tx_evt.as_raw_fd() {
                let _ = a.tx_evt.read();
                self.process_tx();
            }
        }
        self.process_rx();
    }

    fn init(&mut self, ops: &mut EventOps) {
        if let Err(e) = ops.add(Events::new(&self.control.evt, EventSet::IN)) {
            log::error!("virtio-net: watching the handoff: {e:?}");
        }
        let tap = self.tap.fd();
        if let Err(e) = ops.add(Events::new_raw(
            tap,
            EventSet::IN | EventSet::EDGE_TRIGGERED,
        )) {
            log::error!("virtio-net: watching the tap: {e:?}");
        }
    }
}
