//! virtio-vsock with the hybrid-vsock backend (the Firecracker/Dragonball convention):
//!
//! - host → guest: a client connects to the device's unix socket and writes
//!   `CONNECT <port>\n` (keyword case-insensitive); once the guest accepts, the VMM
//!   answers `OK <host_port>\n` and the socket carries the stream's bytes;
//! - guest → host: a guest connection to host port P is connected to `<uds>_P`.
//!
//! Flow control is virtio-vsock's credit scheme: the guest never sends more than our
//! advertised buffer, and we never read from a host socket more than the guest can take,
//! so guest data is never buffered without bound.

mod connection;
mod device;
mod muxer;
pub mod packet;

pub use device::{VsockConfig, VsockDevice};
pub use muxer::VsockMuxer;

/// The host's CID.
pub const HOST_CID: u64 = 2;
/// virtio device id of vsock.
pub const VIRTIO_ID_VSOCK: u32 = 19;
/// Queue size of each of the three queues.
pub const QUEUE_SIZE: u16 = 256;
