//! virtio-net over MMIO on a real tap: any register sequence and TX/RX chains, while
//! the host sends broadcast datagrams out of the tap (RX traffic for the guest).
//!
//! Needs root: at the first input the fuzzing thread moves into a network namespace of
//! its own (so nothing reaches the host's network and the tap goes when the process
//! does) and creates the tap there, persistent, so each input only attaches to it.
#![no_main]

use std::net::UdpSocket;
use std::sync::OnceLock;

use dbs_virtio_devices::net::{NetConfig, NetDevice, Tap};
use kata_rv_fuzz::virtio::{Backend, Op, Rig};
use libfuzzer_sys::fuzz_target;

const TAP: &str = "kfz0";
/// TUNSETPERSIST = _IOW('T', 203, int).
const TUNSETPERSIST: libc::c_ulong = 0x4004_54cb;

struct HostSide(UdpSocket);

impl Backend for HostSide {
    fn act(&mut self, code: u8, data: &[u8]) {
        let port = 1000 + u16::from(code);
        let _ = self
            .0
            .send_to(&data[..data.len().min(1400)], ("10.77.0.255", port));
    }
}

fn run(what: &str, args: &[&str]) {
    let status = std::process::Command::new(what).args(args).status();
    assert!(
        matches!(status, Ok(s) if s.success()),
        "{what} {args:?} failed: {status:?}"
    );
}

fn setup() -> UdpSocket {
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
        .unwrap_or_else(|e| panic!("virtio_net needs root for a network namespace: {e}"));
    let tap = Tap::open(TAP).expect("creating the tap");
    // SAFETY: TUNSETPERSIST takes an int by value; the fd is the tap's.
    let ret = unsafe { libc::ioctl(tap.fd(), TUNSETPERSIST as _, 1 as libc::c_int) };
    assert_eq!(ret, 0, "TUNSETPERSIST: {}", std::io::Error::last_os_error());
    drop(tap);
    run("ip", &["link", "set", "lo", "up"]);
    run("ip", &["link", "set", TAP, "up"]);
    run(
        "ip",
        &[
            "addr",
            "add",
            "10.77.0.1/24",
            "brd",
            "10.77.0.255",
            "dev",
            TAP,
        ],
    );
    let socket = UdpSocket::bind("10.77.0.1:0").expect("udp socket");
    socket.set_broadcast(true).unwrap();
    socket.set_nonblocking(true).unwrap();
    socket
}

static SOCKET: OnceLock<UdpSocket> = OnceLock::new();

fuzz_target!(|ops: Vec<Op>| {
    let socket = SOCKET.get_or_init(setup);
    let config = NetConfig {
        tap_name: TAP.into(),
        mac: [0x02, 0, 0, 0, 0, 1],
    };
    let (device, handler) = NetDevice::new(&config).expect("attaching to the tap");
    let mut rig = Rig::new(Box::new(device), handler);
    rig.run(&ops, &mut HostSide(socket.try_clone().unwrap()));
});
