//! Virtio devices of Dragonball microVMs, on the virtio-mmio (version 2) transport.
//!
//! The transport ([`mmio::MmioTransport`]) runs on vCPU threads (register accesses);
//! device work runs on the VMM's event loop through an event-manager subscriber that
//! each device hands out at creation. Everything the guest writes — registers, queue
//! addresses, descriptors, packet headers — is untrusted and bounded.

pub mod block;
pub mod budget;
pub mod device;
pub mod fs;
pub mod mmio;
pub mod net;
pub mod vsock;

pub use device::{ActivateContext, GuestMemory, VirtioDevice, VirtioInterrupt};
pub use mmio::MmioTransport;
