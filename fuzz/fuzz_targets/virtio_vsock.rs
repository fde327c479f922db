//! virtio-vsock (hybrid vsock) over MMIO: any register sequence and TX/RX chains from
//! the guest, while the host side connects with `CONNECT <port>` lines (or garbage),
//! writes, closes, and listens on the port the guest may connect to.
#![no_main]

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;

use arbitrary::Arbitrary;
use dbs_virtio_devices::vsock::{VsockConfig, VsockDevice};
use kata_rv_fuzz::virtio::{Backend, Op, Rig, scratch_dir};
use libfuzzer_sys::fuzz_target;

/// Most host connections one input may hold.
const MAX_CLIENTS: usize = 16;
/// The host port the guest can connect to (the agent's log port).
const HOST_PORT: u32 = 1025;

#[derive(Arbitrary, Debug)]
struct Input {
    ops: Vec<Op>,
}

struct HostSide {
    uds: PathBuf,
    listener: UnixListener,
    streams: Vec<UnixStream>,
}

impl HostSide {
    fn stream(&mut self, data: &[u8]) -> Option<&mut UnixStream> {
        let n = self.streams.len();
        let pick = usize::from(*data.first()?) % n.max(1);
        self.streams.get_mut(pick)
    }
}

impl Backend for HostSide {
    fn act(&mut self, code: u8, data: &[u8]) {
        match code % 4 {
            0 if self.streams.len() < MAX_CLIENTS => {
                let Ok(mut s) = UnixStream::connect(&self.uds) else {
                    return;
                };
                s.set_nonblocking(true).unwrap();
                // A well-formed request most of the time, the raw bytes otherwise.
                let line = match data.split_first() {
                    Some((0, rest)) => rest.to_vec(),
                    Some((_, rest)) => {
                        let port = rest
                            .iter()
                            .fold(0u32, |p, b| p.wrapping_mul(31) ^ u32::from(*b));
                        format!("CONNECT {}\n", port % 2048).into_bytes()
                    }
                    None => b"CONNECT 1024\n".to_vec(),
                };
                let _ = s.write(&line);
                self.streams.push(s);
            }
            1 => {
                let payload = data.get(1..).unwrap_or_default().to_vec();
                if let Some(s) = self.stream(data) {
                    let _ = s.write(&payload);
                }
            }
            2 => {
                if !self.streams.is_empty() {
                    let pick = usize::from(*data.first().unwrap_or(&0)) % self.streams.len();
                    self.streams.swap_remove(pick);
                }
            }
            _ => {
                if let Some(s) = self.stream(data) {
                    let _ = s.shutdown(std::net::Shutdown::Write);
                }
            }
        }
    }

    fn after_poll(&mut self) {
        while self.streams.len() < MAX_CLIENTS
            && let Ok((s, _)) = self.listener.accept()
        {
            s.set_nonblocking(true).unwrap();
            self.streams.push(s);
        }
        let mut buf = [0u8; 4096];
        for s in &mut self.streams {
            for _ in 0..4 {
                if !matches!(s.read(&mut buf), Ok(n) if n > 0) {
                    break;
                }
            }
        }
    }
}

fuzz_target!(|input: Input| {
    let dir = scratch_dir("vsock");
    let uds = dir.join("kata.hvsock");
    let listener = UnixListener::bind(format!("{}_{HOST_PORT}", uds.display())).unwrap();
    listener.set_nonblocking(true).unwrap();
    let (device, muxer) = VsockDevice::new(&VsockConfig {
        guest_cid: 3,
        uds_path: uds.clone(),
    })
    .unwrap();
    let mut host = HostSide {
        uds,
        listener,
        streams: Vec::new(),
    };
    let mut rig = Rig::new(Box::new(device), muxer);
    rig.run(&input.ops, &mut host);
});
