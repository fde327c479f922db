//! virtio-net with a userspace tap backend (no vhost-net): one RX and one TX queue, a MAC
//! from the configuration, no offloads. Frames move only while the guest has posted RX
//! buffers; otherwise they wait in the tap's kernel queue, so nothing grows without bound.

mod handler;
mod tap;

use std::sync::{Arc, Mutex};

pub use handler::NetHandler;
pub use tap::Tap;

use crate::device::{
    ActivateContext, ActivateError, Handoff, Pending, VIRTIO_F_VERSION_1, VirtioDevice,
};

/// virtio device id of network devices.
pub const VIRTIO_ID_NET: u32 = 1;
/// Queue size of RX and TX.
pub const QUEUE_SIZE: u16 = 256;
/// virtio_net_hdr_v1 (with num_buffers) size.
pub const NET_HDR_LEN: usize = 12;

const VIRTIO_NET_F_MAC: u64 = 1 << 5;
const VIRTIO_NET_F_STATUS: u64 = 1 << 16;
const VIRTIO_NET_S_LINK_UP: u16 = 1;

/// Configuration of a network device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetConfig {
    /// Host tap interface name (created if missing).
    pub tap_name: String,
    /// Guest MAC address.
    pub mac: [u8; 6],
}

/// Errors creating a network device.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// The tap cannot be opened.
    #[error("tap '{name}': {reason}")]
    Tap {
        /// Interface name.
        name: String,
        /// Why.
        reason: String,
    },
}

/// Parses "aa:bb:cc:dd:ee:ff".
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let parts: Vec<&str> = s.split(':').collect();
    if parts.len() != 6 {
        return None;
    }
    let mut mac = [0u8; 6];
    for (b, p) in mac.iter_mut().zip(parts) {
        if p.len() != 2 {
            return None;
        }
        *b = u8::from_str_radix(p, 16).ok()?;
    }
    Some(mac)
}

/// The virtio-net device.
pub struct NetDevice {
    config_space: [u8; 8],
    control: Arc<Handoff>,
}

impl NetDevice {
    /// Opens the tap and creates the device and its event-loop handler.
    pub fn new(config: &NetConfig) -> Result<(NetDevice, Arc<Mutex<NetHandler>>), NetError> {
        let err = |reason: String| NetError::Tap {
            name: config.tap_name.clone(),
            reason,
        };
        let tap = Tap::open(&config.tap_name).map_err(|e| err(e.to_string()))?;
        let control = Arc::new(Handoff::new().map_err(|e| err(format!("eventfd: {e}")))?);
        let mut config_space = [0u8; 8];
        config_space[..6].copy_from_slice(&config.mac);
        config_space[6..8].copy_from_slice(&VIRTIO_NET_S_LINK_UP.to_le_bytes());
        Ok((
            NetDevice {
                config_space,
                control: control.clone(),
            },
            Arc::new(Mutex::new(NetHandler::new(tap, control))),
        ))
    }
}

impl VirtioDevice for NetDevice {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_NET
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE; 2]
    }

    fn features(&self) -> u64 {
        VIRTIO_F_VERSION_1 | VIRTIO_NET_F_MAC | VIRTIO_NET_F_STATUS
    }

    fn ack_features(&mut self, _features: u64) {}

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        crate::device::read_config_space(&self.config_space, offset, data);
    }

    fn write_config(&mut self, _offset: u64, _data: &[u8]) {}

    fn activate(&mut self, ctx: ActivateContext) -> Result<(), ActivateError> {
        if ctx.queues.len() != 2 {
            return Err(ActivateError::BadQueues(format!(
                "expected 2 queues, got {}",
                ctx.queues.len()
            )));
        }
        self.control.send(Pending::Activate(ctx));
        Ok(())
    }

    fn reset(&mut self) {
        self.control.send(Pending::Reset);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs_parse() {
        assert_eq!(
            parse_mac("52:54:00:12:34:56"),
            Some([0x52, 0x54, 0, 0x12, 0x34, 0x56])
        );
        assert_eq!(parse_mac("52:54:00:12:34"), None);
        assert_eq!(parse_mac("52:54:00:12:34:5g"), None);
        assert_eq!(parse_mac("152:54:00:12:34:56"), None);
    }
}
