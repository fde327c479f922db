//! One vsock stream between a guest port and a host unix socket, with its credit state.

use std::collections::VecDeque;
use std::io::{ErrorKind, Read, Write};
use std::net::Shutdown;
use std::num::Wrapping;
use std::os::unix::net::UnixStream;

/// Our receive buffer per connection: the most guest data we ever hold for a host
/// socket that is slow to read.
pub const BUF_ALLOC: u32 = 256 * 1024;
/// Send a credit update once the guest's view of our buffer is this stale.
const CREDIT_UPDATE_THRESHOLD: u32 = BUF_ALLOC / 4;

/// Where a connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnState {
    /// Host-initiated: REQUEST sent, waiting for the guest's RESPONSE.
    LocalInit,
    /// Both sides connected.
    Established,
}

/// Outcome of moving guest data to the host socket.
#[derive(Debug, PartialEq, Eq)]
pub enum FlushResult {
    /// All good (maybe with data still pending).
    Ok,
    /// The host socket failed: reset the connection.
    Failed,
}

/// A stream.
pub struct Connection {
    /// The host end.
    pub stream: UnixStream,
    /// Lifecycle state.
    pub state: ConnState,
    /// The host socket may have data to read (edge-triggered readiness).
    pub readable: bool,
    /// Guest-bound bytes that arrived before the stream was established (after the
    /// CONNECT line).
    pub early_to_guest: Vec<u8>,
    /// Host-bound control text (the "OK <port>" line), written before any data.
    line_to_host: Vec<u8>,
    /// Host-bound bytes not yet written to the host socket (bounded by BUF_ALLOC).
    to_host: VecDeque<u8>,
    /// Guest's receive buffer size.
    peer_buf_alloc: u32,
    /// Guest's consumed counter.
    peer_fwd_cnt: Wrapping<u32>,
    /// Bytes we sent to the guest.
    tx_cnt: Wrapping<u32>,
    /// Bytes of guest data we delivered to the host socket.
    pub fwd_cnt: Wrapping<u32>,
    /// fwd_cnt when the guest last heard it.
    last_fwd_cnt_sent: Wrapping<u32>,
    /// The guest will send no more data.
    pub peer_done_sending: bool,
    /// The guest will receive no more data.
    pub peer_done_receiving: bool,
    /// We told the guest the host side ended.
    pub host_eof_sent: bool,
}

impl Connection {
    /// A connection over `stream`.
    pub fn new(stream: UnixStream, state: ConnState) -> Self {
        Connection {
            stream,
            state,
            readable: false,
            early_to_guest: Vec::new(),
            line_to_host: Vec::new(),
            to_host: VecDeque::new(),
            peer_buf_alloc: 0,
            peer_fwd_cnt: Wrapping(0),
            tx_cnt: Wrapping(0),
            fwd_cnt: Wrapping(0),
            last_fwd_cnt_sent: Wrapping(0),
            peer_done_sending: false,
            peer_done_receiving: false,
            host_eof_sent: false,
        }
    }

    /// Records the guest's credit information from any packet it sent.
    pub fn update_peer_credit(&mut self, buf_alloc: u32, fwd_cnt: u32) {
        self.peer_buf_alloc = buf_alloc;
        self.peer_fwd_cnt = Wrapping(fwd_cnt);
    }

    /// How many bytes the guest can take now.
    pub fn peer_credit(&self) -> u32 {
        let in_flight = (self.tx_cnt - self.peer_fwd_cnt).0;
        self.peer_buf_alloc.saturating_sub(in_flight)
    }

    /// Counts bytes sent to the guest.
    pub fn sent_to_guest(&mut self, n: u32) {
        self.tx_cnt += Wrapping(n);
    }

    /// Marks our fwd_cnt as told to the guest (it rides on every packet we send).
    pub fn credit_sent(&mut self) {
        self.last_fwd_cnt_sent = self.fwd_cnt;
    }

    /// Whether the guest should get a CREDIT_UPDATE now.
    pub fn needs_credit_update(&self) -> bool {
        (self.fwd_cnt - self.last_fwd_cnt_sent).0 >= CREDIT_UPDATE_THRESHOLD
    }

    /// Room left in our receive buffer; a guest that sends more broke the protocol.
    pub fn free_space(&self) -> usize {
        BUF_ALLOC as usize - self.to_host.len().min(BUF_ALLOC as usize)
    }

    /// Queues guest data for the host and writes what the socket takes.
    pub fn push_to_host(&mut self, data: &[u8]) -> FlushResult {
        self.to_host.extend(data);
        self.flush_to_host()
    }

    /// Queues a control line for the host (e.g. "OK <port>\n"); not counted as credit.
    pub fn push_line_to_host(&mut self, line: &[u8]) -> FlushResult {
        self.line_to_host.extend_from_slice(line);
        self.flush_to_host()
    }

    /// Writes pending host-bound data until the socket would block.
    pub fn flush_to_host(&mut self) -> FlushResult {
        while !self.line_to_host.is_empty() {
            match self.stream.write(&self.line_to_host) {
                Ok(0) => return FlushResult::Failed,
                Ok(n) => {
                    self.line_to_host.drain(..n);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return FlushResult::Ok,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => return FlushResult::Failed,
            }
        }
        while !self.to_host.is_empty() {
            let (front, _) = self.to_host.as_slices();
            match self.stream.write(front) {
                Ok(0) => return FlushResult::Failed,
                Ok(n) => {
                    self.to_host.drain(..n);
                    self.fwd_cnt += Wrapping(n as u32);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => return FlushResult::Failed,
            }
        }
        if self.to_host.is_empty() && self.peer_done_sending {
            let _ = self.stream.shutdown(Shutdown::Write);
        }
        FlushResult::Ok
    }

    /// Reads up to `buf.len()` bytes from the host socket.
    pub fn read_from_host(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            match self.stream.read(buf) {
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                other => return other,
            }
        }
    }

    /// Whether data may flow to the guest now.
    pub fn can_send_to_guest(&self) -> bool {
        self.state == ConnState::Established
            && !self.peer_done_receiving
            && !self.host_eof_sent
            && (self.readable || !self.early_to_guest.is_empty())
            && self.peer_credit() > 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credit_accounting_saturates_on_garbage() {
        let (a, _b) = UnixStream::pair().unwrap();
        let mut c = Connection::new(a, ConnState::Established);
        c.update_peer_credit(1000, 0);
        assert_eq!(c.peer_credit(), 1000);
        c.sent_to_guest(600);
        assert_eq!(c.peer_credit(), 400);
        c.update_peer_credit(1000, 600);
        assert_eq!(c.peer_credit(), 1000);
        // A guest claiming it consumed more than we sent cannot give itself credit
        // beyond its buffer, and a tiny buffer gives none.
        c.update_peer_credit(10, 0);
        assert_eq!(c.peer_credit(), 0);
    }

    #[test]
    fn data_reaches_the_host_and_counts_as_forwarded() {
        let (a, mut b) = UnixStream::pair().unwrap();
        a.set_nonblocking(true).unwrap();
        let mut c = Connection::new(a, ConnState::Established);
        assert_eq!(c.push_line_to_host(b"OK 5\n"), FlushResult::Ok);
        assert_eq!(c.push_to_host(b"hello"), FlushResult::Ok);
        assert_eq!(c.fwd_cnt.0, 5, "the OK line is not guest data");
        let mut buf = [0u8; 10];
        b.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"OK 5\nhello");
    }
}
