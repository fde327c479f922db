//! The vsock packet header (44 bytes from the guest) and the hybrid-vsock `CONNECT`
//! line (from any host process): parsing never fails, and a header survives a round
//! trip.
#![no_main]

use dbs_virtio_devices::vsock::packet::{HDR_LEN, Header, parse_connect};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(raw) = <[u8; HDR_LEN]>::try_from(data.get(..HDR_LEN).unwrap_or_default()) {
        let header = Header::parse(&raw);
        assert_eq!(Header::parse(&header.to_bytes()), header);
    }
    if let Ok(line) = std::str::from_utf8(data) {
        let _ = parse_connect(line);
    }
});
