//! The vsock muxer: runs on the VMM event loop, moves packets between the virtqueues and
//! the host unix sockets, and keeps per-connection credit.

use std::collections::{HashMap, VecDeque};
use std::io::{ErrorKind, Read};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::Arc;

use event_manager::{EventOps, Events, MutEventSubscriber};
use virtio_queue::{DescriptorChain, Queue, QueueOwnedT, QueueT};
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::eventfd::EventFd;

use super::HOST_CID;
use super::connection::{BUF_ALLOC, ConnState, Connection, FlushResult};
use super::packet::{self, HDR_LEN, Header, SHUTDOWN_RCV, SHUTDOWN_SEND, TYPE_STREAM, op};
use crate::budget::Budget;
use crate::device::{GuestMemory, Handoff, Pending, VirtioInterrupt};

/// Largest payload we put in or accept from one packet.
const MAX_PAYLOAD: usize = 64 * 1024;
/// Most connections per device.
const MAX_CONNECTIONS: usize = 1024;
/// Most control packets waiting for RX buffers; beyond this, resets are dropped.
const MAX_PENDING_CONTROL: usize = 4096;
/// Longest accepted `CONNECT <port>\n` line.
const MAX_CONNECT_LINE: usize = 64;
/// First port handed to host-initiated connections.
const FIRST_LOCAL_PORT: u32 = 1 << 30;

struct Active {
    mem: GuestMemory,
    rxq: Queue,
    txq: Queue,
    evts: Vec<EventFd>,
    interrupt: Arc<VirtioInterrupt>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Token {
    Control,
    Listener,
    RxQueue,
    TxQueue,
    EventQueue,
    Client(RawFd),
    Conn(u32, u32),
}

/// A host client that has not sent its CONNECT line yet.
struct Client {
    stream: UnixStream,
    line: Vec<u8>,
}

/// A control packet for the guest; credit fields are filled at delivery.
struct Control2Guest {
    key: (u32, u32),
    op: u16,
    flags: u32,
}

/// Moves vsock traffic between the guest and host unix sockets.
pub struct VsockMuxer {
    cid: u64,
    uds_path: PathBuf,
    listener: UnixListener,
    control: Arc<Handoff>,
    active: Option<Active>,
    tokens: HashMap<RawFd, Token>,
    clients: HashMap<RawFd, Client>,
    conns: HashMap<(u32, u32), Connection>,
    to_guest: VecDeque<Control2Guest>,
    next_local_port: u32,
}

impl VsockMuxer {
    pub(super) fn new(
        cid: u64,
        uds_path: PathBuf,
        listener: UnixListener,
        control: Arc<Handoff>,
    ) -> Self {
        VsockMuxer {
            cid,
            uds_path,
            listener,
            control,
            active: None,
            tokens: HashMap::new(),
            clients: HashMap::new(),
            conns: HashMap::new(),
            to_guest: VecDeque::new(),
            next_local_port: FIRST_LOCAL_PORT,
        }
    }

    fn watch(&mut self, ops: &mut EventOps, fd: RawFd, token: Token, set: EventSet) {
        match ops.add(Events::new_raw(fd, set)) {
            Ok(()) => {
                self.tokens.insert(fd, token);
            }
            Err(e) => log::error!("vsock: watching fd {fd}: {e:?}"),
        }
    }

    fn unwatch(&mut self, ops: &mut EventOps, fd: RawFd) {
        if self.tokens.remove(&fd).is_some() {
            let _ = ops.remove(Events::empty_raw(fd));
        }
    }

    fn queue_control(&mut self, key: (u32, u32), op: u16, flags: u32) {
        if self.to_guest.len() >= MAX_PENDING_CONTROL {
            log::warn!("vsock: guest is not taking RX buffers; dropping a control packet");
            return;
        }
        self.to_guest.push_back(Control2Guest { key, op, flags });
    }

    fn remove_conn(&mut self, ops: &mut EventOps, key: (u32, u32)) {
        if let Some(conn) = self.conns.remove(&key) {
            self.unwatch(ops, conn.stream.as_raw_fd());
        }
    }

    fn reset_conn(&mut self, ops: &mut EventOps, key: (u32, u32)) {
        self.remove_conn(ops, key);
        self.queue_control(key, op::RST, 0);
    }

    fn handle_control(&mut self, ops: &mut EventOps) {
        let pending = self.control.take();
        for p in pending {
            match p {
                Pending::Activate(ctx) => {
                    self.deactivate(ops);
                    let mut queues = ctx.queues.into_iter();
                    let (Some((rxq, rx_evt)), Some((txq, tx_evt)), Some((_evq, ev_evt))) =
                        (queues.next(), queues.next(), queues.next())
                    else {
                        continue;
                    };
                    let fds = [
                        (rx_evt.as_raw_fd(), Token::RxQueue),
                        (tx_evt.as_raw_fd(), Token::TxQueue),
                        (ev_evt.as_raw_fd(), Token::EventQueue),
                    ];
                    self.active = Some(Active {
                        mem: ctx.mem,
                        rxq,
                        txq,
                        evts: vec![rx_evt, tx_evt, ev_evt],
                        interrupt: ctx.interrupt,
                    });
                    for (fd, token) in fds {
                        self.watch(ops, fd, token, EventSet::IN);
                    }
                    self.process_tx(ops);
                }
                Pending::Reset => self.deactivate(ops),
            }
        }
    }

    fn deactivate(&mut self, ops: &mut EventOps) {
        if let Some(active) = self.active.take() {
            for evt in &active.evts {
                self.unwatch(ops, evt.as_raw_fd());
            }
        }
        let keys: Vec<_> = self.conns.keys().copied().collect();
        for key in keys {
            self.remove_conn(ops, key);
        }
        self.to_guest.clear();
    }

    fn accept_clients(&mut self, ops: &mut EventOps) {
        loop {
            match self.listener.accept() {
                Ok((stream, _)) => {
                    if stream.set_nonblocking(true).is_err()
                        || self.clients.len() >= MAX_CONNECTIONS
                    {
                        continue;
                    }
                    let fd = stream.as_raw_fd();
                    self.clients.insert(
                        fd,
                        Client {
                            stream,
                            line: Vec::new(),
                        },
                    );
                    self.watch(
                        ops,
                        fd,
                        Token::Client(fd),
                        EventSet::IN | EventSet::EDGE_TRIGGERED,
                    );
                    self.read_connect_line(ops, fd);
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => return,
            }
        }
    }

    fn drop_client(&mut self, ops: &mut EventOps, fd: RawFd) {
        self.unwatch(ops, fd);
        self.clients.remove(&fd);
    }

    /// Reads a host client's `CONNECT <port>\n`; on success, asks the guest.
    fn read_connect_line(&mut self, ops: &mut EventOps, fd: RawFd) {
        let Some(client) = self.clients.get_mut(&fd) else {
            return;
        };
        let mut buf = [0u8; MAX_CONNECT_LINE];
        let newline = loop {
            if let Some(i) = client.line.iter().position(|b| *b == b'\n') {
                break i;
            }
            if client.line.len() >= MAX_CONNECT_LINE {
                log::warn!("vsock: host client sent no CONNECT line in {MAX_CONNECT_LINE} bytes");
                return self.drop_client(ops, fd);
            }
            let room = MAX_CONNECT_LINE - client.line.len();
            match client.stream.read(&mut buf[..room]) {
                Ok(0) => return self.drop_client(ops, fd),
                Ok(n) => client.line.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => return self.drop_client(ops, fd),
            }
        };
        let line = String::from_utf8_lossy(&client.line[..newline]).into_owned();
        let rest = client.line[newline + 1..].to_vec();
        let Some(port) = packet::parse_connect(&line) else {
            log::warn!("vsock: bad host request {line:?} (expected CONNECT <port>)");
            return self.drop_client(ops, fd);
        };
        if self.active.is_none() || self.conns.len() >= MAX_CONNECTIONS {
            return self.drop_client(ops, fd);
        }
        let Some(client) = self.clients.remove(&fd) else {
            return;
        };
        let local = self.alloc_local_port();
        let key = (local, port);
        let mut conn = Connection::new(client.stream, ConnState::LocalInit);
        conn.early_to_guest = rest;
        conn.readable = true;
        self.conns.insert(key, conn);
        self.tokens.insert(fd, Token::Conn(key.0, key.1));
        // From now on host-bound data can back up: watch writability too.
        if let Err(e) = ops.modify(Events::new_raw(
            fd,
            EventSet::IN | EventSet::OUT | EventSet::EDGE_TRIGGERED,
        )) {
            log::error!("vsock: watching a host connection: {e:?}");
        }
        self.queue_control(key, op::REQUEST, 0);
    }

    fn alloc_local_port(&mut self) -> u32 {
        loop {
            let port = self.next_local_port;
            self.next_local_port = self
                .next_local_port
                .checked_add(1)
                .unwrap_or(FIRST_LOCAL_PORT);
            if !self.conns.keys().any(|(l, _)| *l == port) {
                return port;
            }
        }
    }

    /// Serves the TX queue: each guest packet is parsed (bounded) and dispatched as it is
    /// popped, at most a budget's worth per event (the queue is re-armed for the rest).
    fn process_tx(&mut self, ops: &mut EventOps) {
        let mut budget = Budget::per_event();
        let mut used = false;
        while budget.take() {
            let Some(active) = self.active.as_mut() else {
                return;
            };
            let mem = active.mem.clone();
            let Some(chain) = active.txq.pop_descriptor_chain(mem.as_ref()) else {
                break;
            };
            let head = chain.head_index();
            let packet = read_packet(mem.as_ref(), chain);
            if active.txq.add_used(mem.as_ref(), head, 0).is_err() {
                log::warn!("vsock: TX used ring is not writable");
                break;
            }
            used = true;
            if let Some((hdr, payload)) = packet {
                self.handle_guest_packet(ops, hdr, &payload);
            }
        }
        let Some(active) = self.active.as_mut() else {
            return;
        };
        budget.rearm_if_spent(&active.evts[1]);
        if used
            && active
                .txq
                .needs_notification(active.mem.as_ref())
                .unwrap_or(true)
        {
            active.interrupt.signal_used_queue();
        }
    }

    fn handle_guest_packet(&mut self, ops: &mut EventOps, hdr: Header, payload: &[u8]) {
        let key = (hdr.dst_port, hdr.src_port);
        if hdr.src_cid != self.cid || hdr.dst_cid != HOST_CID || hdr.type_ != TYPE_STREAM {
            if hdr.op != op::RST {
                self.queue_control(key, op::RST, 0);
            }
            return;
        }
        if let Some(conn) = self.conns.get_mut(&key) {
            conn.update_peer_credit(hdr.buf_alloc, hdr.fwd_cnt);
        }
        match hdr.op {
            op::REQUEST => self.guest_connect(ops, key, &hdr),
            op::RESPONSE => {
                let Some(conn) = self.conns.get_mut(&key) else {
                    return self.queue_control(key, op::RST, 0);
                };
                if conn.state != ConnState::LocalInit {
                    return self.reset_conn(ops, key);
                }
                conn.state = ConnState::Established;
                let line = format!("OK {}\n", key.0);
                if conn.push_line_to_host(line.as_bytes()) == FlushResult::Failed {
                    self.reset_conn(ops, key);
                }
            }
            op::RST => self.remove_conn(ops, key),
            op::SHUTDOWN => {
                let Some(conn) = self.conns.get_mut(&key) else {
                    return;
                };
                conn.peer_done_receiving |= hdr.flags & SHUTDOWN_RCV != 0;
                conn.peer_done_sending |= hdr.flags & SHUTDOWN_SEND != 0;
                let both = conn.peer_done_receiving && conn.peer_done_sending;
                if both || conn.flush_to_host() == FlushResult::Failed {
                    self.reset_conn(ops, key);
                }
            }
            op::RW => {
                let Some(conn) = self.conns.get_mut(&key) else {
                    return self.queue_control(key, op::RST, 0);
                };
                if conn.state != ConnState::Established || payload.len() > conn.free_space() {
                    // Data before the handshake, or more than our credit allows.
                    return self.reset_conn(ops, key);
                }
                if conn.push_to_host(payload) == FlushResult::Failed {
                    return self.reset_conn(ops, key);
                }
                if conn.needs_credit_update() {
                    self.queue_control(key, op::CREDIT_UPDATE, 0);
                }
            }
            op::CREDIT_UPDATE => {}
            op::CREDIT_REQUEST => {
                if self.conns.contains_key(&key) {
                    self.queue_control(key, op::CREDIT_UPDATE, 0);
                }
            }
            _ => self.reset_conn(ops, key),
        }
    }

    /// A guest connection to host port P goes to `<uds>_P`.
    fn guest_connect(&mut self, ops: &mut EventOps, key: (u32, u32), hdr: &Header) {
        if self.conns.contains_key(&key) || self.conns.len() >= MAX_CONNECTIONS {
            return self.queue_control(key, op::RST, 0);
        }
        let path = format!("{}_{}", self.uds_path.display(), key.0);
        let stream = match connect_nonblocking(&path) {
            Ok(s) => s,
            Err(e) => {
                log::info!(
                    "vsock: guest connection to host port {} refused: {path}: {e}",
                    key.0
                );
                return self.queue_control(key, op::RST, 0);
            }
        };
        let fd = stream.as_raw_fd();
        let mut conn = Connection::new(stream, ConnState::Established);
        conn.update_peer_credit(hdr.buf_alloc, hdr.fwd_cnt);
        conn.readable = true;
        self.conns.insert(key, conn);
        self.watch(
            ops,
            fd,
            Token::Conn(key.0, key.1),
            EventSet::IN | EventSet::OUT | EventSet::EDGE_TRIGGERED,
        );
        self.queue_control(key, op::RESPONSE, 0);
    }

    fn conn_event(&mut self, ops: &mut EventOps, key: (u32, u32), set: EventSet) {
        let Some(conn) = self.conns.get_mut(&key) else {
            return;
        };
        if set
            .intersects(EventSet::IN | EventSet::HANG_UP | EventSet::READ_HANG_UP | EventSet::ERROR)
        {
            conn.readable = true;
        }
        if set.contains(EventSet::OUT) {
            if conn.flush_to_host() == FlushResult::Failed {
                return self.reset_conn(ops, key);
            }
            // Space freed in our buffer: tell the guest before it stalls.
            if conn.needs_credit_update() {
                self.queue_control(key, op::CREDIT_UPDATE, 0);
            }
        }
    }

    fn header(&self, key: (u32, u32), op: u16, flags: u32, len: u32) -> Header {
        Header {
            src_cid: HOST_CID,
            dst_cid: self.cid,
            src_port: key.0,
            dst_port: key.1,
            len,
            type_: TYPE_STREAM,
            op,
            flags,
            buf_alloc: BUF_ALLOC,
            fwd_cnt: self.conns.get(&key).map(|c| c.fwd_cnt.0).unwrap_or(0),
        }
    }

    /// Fills RX buffers: control packets first, then data from host sockets the guest has
    /// credit for.
    fn process_rx(&mut self, ops: &mut EventOps) {
        let Some(mem) = self.active.as_ref().map(|a| a.mem.clone()) else {
            return;
        };
        let mut used = false;
        let mut buf = vec![0u8; MAX_PAYLOAD];
        loop {
            let ctrl = self.to_guest.front().map(|c| (c.key, c.op, c.flags));
            let data_key = if ctrl.is_none() {
                match self.conns.iter().find(|(_, c)| c.can_send_to_guest()) {
                    Some((k, _)) => Some(*k),
                    None => break,
                }
            } else {
                None
            };
            let Some(active) = self.active.as_mut() else {
                break;
            };
            let Some(chain) = active.rxq.pop_descriptor_chain(mem.as_ref()) else {
                break;
            };
            let head = chain.head_index();
            let mut writer = match chain.writer(mem.as_ref()) {
                Ok(w) if w.available_bytes() > HDR_LEN => w,
                _ => {
                    // Unusable buffer (outside memory or too small): give it back empty.
                    let _ = active.rxq.add_used(mem.as_ref(), head, 0);
                    used = true;
                    continue;
                }
            };
            let room = (writer.available_bytes() - HDR_LEN).min(MAX_PAYLOAD);
            let (hdr, payload_len) = if let Some((key, op, flags)) = ctrl {
                self.to_guest.pop_front();
                if let Some(conn) = self.conns.get_mut(&key) {
                    conn.credit_sent();
                }
                (self.header(key, op, flags, 0), 0)
            } else {
                let key = data_key.unwrap_or_default();
                let Some(conn) = self.conns.get_mut(&key) else {
                    continue;
                };
                let want = room.min(conn.peer_credit() as usize);
                let n = if !conn.early_to_guest.is_empty() {
                    let n = want.min(conn.early_to_guest.len());
                    buf[..n].copy_from_slice(&conn.early_to_guest[..n]);
                    conn.early_to_guest.drain(..n);
                    Ok(n)
                } else {
                    conn.read_from_host(&mut buf[..want])
                };
                match n {
                    Ok(0) => {
                        conn.host_eof_sent = true;
                        conn.readable = false;
                        (
                            self.header(key, op::SHUTDOWN, SHUTDOWN_RCV | SHUTDOWN_SEND, 0),
                            0,
                        )
                    }
                    Ok(n) => {
                        conn.sent_to_guest(n as u32);
                        conn.credit_sent();
                        (self.header(key, op::RW, 0, n as u32), n)
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {
                        conn.readable = false;
                        if let Some(active) = self.active.as_mut() {
                            active.rxq.go_to_previous_position();
                        }
                        continue;
                    }
                    Err(_) => {
                        self.remove_conn(ops, key);
                        (self.header(key, op::RST, 0, 0), 0)
                    }
                }
            };
            let written = std::io::Write::write_all(&mut writer, &hdr.to_bytes())
                .and_then(|_| std::io::Write::write_all(&mut writer, &buf[..payload_len]));
            let len = if written.is_ok() {
                (HDR_LEN + payload_len) as u32
            } else {
                0
            };
            let Some(active) = self.active.as_mut() else {
                break;
            };
            if active.rxq.add_used(mem.as_ref(), head, len).is_err() {
                break;
            }
            used = true;
        }
        if let Some(active) = self.active.as_mut()
            && used
            && active.rxq.needs_notification(mem.as_ref()).unwrap_or(true)
        {
            active.interrupt.signal_used_queue();
        }
    }
}

/// Connects to the unix socket at `path` without blocking the event loop: a listener
/// whose backlog is full refuses at once (EAGAIN) instead of stalling every device.
fn connect_nonblocking(path: &str) -> std::io::Result<UnixStream> {
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, UnixAddr, connect, socket};
    let fd = socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    connect(fd.as_raw_fd(), &UnixAddr::new(path)?)?;
    Ok(UnixStream::from(fd))
}

/// Reads one TX packet: a full header plus exactly `len` payload bytes, at most
/// [`MAX_PAYLOAD`]. Anything malformed is dropped.
fn read_packet(
    mem: &GuestMemoryMmap<()>,
    chain: DescriptorChain<&GuestMemoryMmap<()>>,
) -> Option<(Header, Vec<u8>)> {
    let mut reader = chain.reader(mem).ok()?;
    let mut raw = [0u8; HDR_LEN];
    reader.read_exact(&mut raw).ok()?;
    let hdr = Header::parse(&raw);
    let len = hdr.len as usize;
    if len > MAX_PAYLOAD || reader.available_bytes() < len {
        log::warn!("vsock: dropping a malformed TX packet (len {len})");
        return None;
    }
    let mut payload = vec![0u8; len];
    reader.read_exact(&mut payload).ok()?;
    Some((hdr, payload))
}

impl MutEventSubscriber for VsockMuxer {
    fn process(&mut self, events: Events, ops: &mut EventOps) {
        let fd = events.fd();
        match self.tokens.get(&fd).copied() {
            Some(Token::Control) => self.handle_control(ops),
            Some(Token::Listener) => self.accept_clients(ops),
            Some(Token::TxQueue) => {
                if let Some(a) = &self.active {
                    let _ = a.evts[1].read();
                }
                self.process_tx(ops);
            }
            Some(Token::RxQueue) => {
                if let Some(a) = &self.active {
                    let _ = a.evts[0].read();
                }
            }
            Some(Token::EventQueue) => {
                if let Some(a) = &self.active {
                    let _ = a.evts[2].read();
                }
            }
            Some(Token::Client(fd)) => self.read_connect_line(ops, fd),
            Some(Token::Conn(l, p)) => self.conn_event(ops, (l, p), events.event_set()),
            None => {
                let _ = ops.remove(Events::empty_raw(fd));
            }
        }
        self.process_rx(ops);
    }

    fn init(&mut self, ops: &mut EventOps) {
        let control = self.control.evt.as_raw_fd();
        self.watch(ops, control, Token::Control, EventSet::IN);
        let listener = self.listener.as_raw_fd();
        self.watch(ops, listener, Token::Listener, EventSet::IN);
    }
}

impl Drop for VsockMuxer {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.uds_path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A host listener that never accepts and whose backlog is full: the guest's
    /// connection is refused at once (the event loop serving every device never blocks).
    #[test]
    fn a_full_host_listener_refuses_without_blocking() {
        use nix::sys::socket::{Backlog, bind, listen};
        let path = std::env::temp_dir().join(format!("vsock-backlog-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let listener = nix::sys::socket::socket(
            nix::sys::socket::AddressFamily::Unix,
            nix::sys::socket::SockType::Stream,
            nix::sys::socket::SockFlag::SOCK_CLOEXEC,
            None,
        )
        .unwrap();
        bind(
            listener.as_raw_fd(),
            &nix::sys::socket::UnixAddr::new(&path).unwrap(),
        )
        .unwrap();
        listen(&listener, Backlog::new(0).unwrap()).unwrap();
        let path = path.to_str().unwrap().to_string();
        let mut held = Vec::new();
        let started = std::time::Instant::now();
        let refused = loop {
            match connect_nonblocking(&path) {
                Ok(stream) => held.push(stream),
                Err(e) => break e,
            }
            assert!(held.len() < 64, "the backlog never filled");
        };
        assert_eq!(refused.kind(), std::io::ErrorKind::WouldBlock, "{refused}");
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
        let _ = std::fs::remove_file(&path);
    }
}
