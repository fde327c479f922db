//! Hand-assembled hostile guests against a real Dragonball VM (riscv64: an `Image` using
//! SBI; x86_64: a PVH ELF using COM1 and the i8042): garbage in the vsock device's
//! registers and queues, and floods of the console and of vsock TX that never stop. The
//! VMM must survive, keep its disk and memory bounded, keep answering its API while the
//! guest floods, and stop the VM promptly.

#![cfg(any(target_arch = "riscv64", target_arch = "x86_64"))]

mod support;

use std::io::Read;
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use dragonball::{
    BootSourceConfig, InstanceState, VmmAction, VmmClient, VmmData, VsockDeviceConfigInfo,
    start_vmm_thread,
};
use support::harness::{Scratch, config, kvm_or_skip, resources, resources_settled};
#[cfg(target_arch = "riscv64")]
use support::rv_guest::{A0, A1, A2, DATA_OFFSET, Program, T0, T1, T3};
#[cfg(target_arch = "x86_64")]
use support::x86_guest::{DATA_OFFSET, Program, T0, T1, T3};

/// virtio-mmio slot 0: the vsock device.
#[cfg(target_arch = "riscv64")]
const BASE: u32 = 0x1000_1000;
#[cfg(target_arch = "x86_64")]
const BASE: u32 = 0xd000_0000;
/// A guest-physical address outside the 64 MiB of RAM.
#[cfg(target_arch = "riscv64")]
const OUTSIDE_RAM: u64 = 0x10;
#[cfg(target_arch = "x86_64")]
const OUTSIDE_RAM: u64 = 0x1000_0000;
const LOAD: u64 = Program::LOAD_ADDR;
/// The guest's vsock CID.
const GUEST_CID: u64 = 3;
/// Descriptor flags.
const NEXT: u16 = 1;
const WRITE: u16 = 2;
/// vsock ops.
const OP_REQUEST: u16 = 1;
const OP_RW: u16 = 5;
/// Longest a VM may take to stop once asked, however busy its guest keeps it.
const STOP_LIMIT: Duration = Duration::from_secs(60);
/// Most the process's RSS may grow over a flood's observation window.
const RSS_SLACK_KIB: u64 = 16 * 1024;

/// Guest-physical address of data offset `off`.
fn gpa(off: usize) -> u64 {
    LOAD + (DATA_OFFSET + off) as u64
}

fn desc(table: &mut [u8], i: usize, addr: u64, len: u32, flags: u16, next: u16) {
    let d = &mut table[i * 16..i * 16 + 16];
    d[0..8].copy_from_slice(&addr.to_le_bytes());
    d[8..12].copy_from_slice(&len.to_le_bytes());
    d[12..14].copy_from_slice(&flags.to_le_bytes());
    d[14..16].copy_from_slice(&next.to_le_bytes());
}

fn avail(ring: &mut [u8], heads: &[u16]) {
    ring[2..4].copy_from_slice(&(heads.len() as u16).to_le_bytes());
    for (i, h) in heads.iter().enumerate() {
        ring[4 + 2 * i..6 + 2 * i].copy_from_slice(&h.to_le_bytes());
    }
}

/// A vsock packet header from `src_cid` port 5 to the host's port 6, offering the host
/// 64 KiB of credit.
fn header(src_cid: u64, len: u32, op: u16) -> [u8; 44] {
    let mut h = [0u8; 44];
    h[0..8].copy_from_slice(&src_cid.to_le_bytes());
    h[8..16].copy_from_slice(&2u64.to_le_bytes());
    h[16..20].copy_from_slice(&5u32.to_le_bytes());
    h[20..24].copy_from_slice(&6u32.to_le_bytes());
    h[24..28].copy_from_slice(&len.to_le_bytes());
    h[28..30].copy_from_slice(&1u16.to_le_bytes());
    h[30..32].copy_from_slice(&op.to_le_bytes());
    h[36..40].copy_from_slice(&(64u32 << 10).to_le_bytes());
    h
}

/// Queue tables: per queue q, desc at 0x1000*(q+1), avail +0x400, used +0x800.
fn table(q: usize) -> usize {
    0x1000 * (q + 1)
}

fn setup_queue(p: &mut Program, q: u32) {
    let table = table(q as usize);
    p.li(T1, q).sw(T1, T0, 0x30); // QueueSel
    p.li(T1, 16).sw(T1, T0, 0x38); // QueueNum
    for (reg, off) in [(0x80, 0), (0x90, 0x400), (0xa0, 0x800)] {
        p.li(T1, gpa(table + off) as u32).sw(T1, T0, reg);
        p.li(T1, 0).sw(T1, T0, reg + 4);
    }
    p.li(T1, 1).sw(T1, T0, 0x44); // QueueReady
}

/// The driver's side of the handshake up to FEATURES_OK, then all three queues.
fn negotiate_and_set_up_queues(p: &mut Program) {
    p.li(T1, 1).sw(T1, T0, 0x70);
    p.li(T1, 3).sw(T1, T0, 0x70);
    p.li(T1, 1).sw(T1, T0, 0x24).sw(T1, T0, 0x20); // VIRTIO_F_VERSION_1
    p.li(T1, 0xb).sw(T1, T0, 0x70);
    for q in 0..3 {
        setup_queue(p, q);
    }
}

/// Writes the guest image and starts a one-vCPU, 64 MiB VM with a vsock device at
/// `vsock` if given; returns its client, its VMM thread and its console file.
fn boot(dir: &Path, p: &Program, vsock: Option<PathBuf>) -> (VmmClient, JoinHandle<i32>, PathBuf) {
    let kernel = dir.join("Image");
    std::fs::write(&kernel, p.image()).unwrap();
    let console = dir.join("console");
    let (client, vmm) = start_vmm_thread().unwrap();
    client
        .request(VmmAction::SetVmConfiguration(config(1, 64, &console)))
        .unwrap();
    client
        .request(VmmAction::ConfigureBootSource(BootSourceConfig {
            kernel_path: kernel,
            initrd_path: None,
            boot_args: None,
        }))
        .unwrap();
    if let Some(uds_path) = vsock {
        client
            .request(VmmAction::InsertVsockDevice(VsockDeviceConfigInfo {
                guest_cid: GUEST_CID as u32,
                uds_path,
            }))
            .unwrap();
    }
    client.request(VmmAction::StartMicroVm).unwrap();
    (client, vmm, console)
}

/// This process's resident set.
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/self/status")
}

/// CPU time (clock ticks, user + system) of this process's threads named `name`.
fn thread_ticks(name: &str) -> u64 {
    let mut ticks = 0;
    for task in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if comm.trim() != name {
            continue;
        }
        let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
        // Fields after the parenthesised comm: state is field 3, utime 14, stime 15.
        let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
        let fields: Vec<&str> = rest.split_whitespace().collect();
        for i in [11, 12] {
            ticks += fields
                .get(i)
                .and_then(|f| f.parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    ticks
}

/// Over a few seconds of the flood: the API keeps answering, the thread `busy` (the one
/// the flood lands on) keeps running, and the process's memory stays put.
fn assert_bounded_while_flooded(client: &VmmClient, busy: &str) {
    let (rss_before, ticks_before) = (rss_kib(), thread_ticks(busy));
    let mut slowest = Duration::ZERO;
    for _ in 0..10 {
        let asked = Instant::now();
        assert_eq!(
            client.request(VmmAction::GetInstanceState).unwrap(),
            VmmData::InstanceState(InstanceState::Running)
        );
        slowest = slowest.max(asked.elapsed());
        std::thread::sleep(Duration::from_millis(300));
    }
    let (rss_after, ticks_after) = (rss_kib(), thread_ticks(busy));
    eprintln!(
        "while flooded: RSS {rss_before} -> {rss_after} KiB, {busy} ran {} ticks, slowest API answer {slowest:?}",
        ticks_after - ticks_before
    );
    assert!(
        ticks_after > ticks_before,
        "{busy} did not run: the guest is not flooding"
    );
    assert!(
        rss_after <= rss_before + RSS_SLACK_KIB,
        "RSS grew from {rss_before} to {rss_after} KiB while the guest flooded"
    );
}

/// Asks the VM to stop and waits for its VMM thread, failing after [`STOP_LIMIT`].
fn stop_within_limit(client: &VmmClient, vmm: JoinHandle<i32>) -> i32 {
    let asked = Instant::now();
    client.request(VmmAction::ShutdownMicroVm).unwrap();
    while !vmm.is_finished() {
        assert!(
            asked.elapsed() < STOP_LIMIT,
            "the VM did not stop within {STOP_LIMIT:?} of being asked"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    eprintln!("stopped {:?} after being asked", asked.elapsed());
    vmm.join().unwrap()
}

/// Polls `done` every 50 ms, failing with `what` after `limit`.
fn wait_until(limit: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < limit, "{what} within {limit:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// The garbage test's queues: hostile RX buffers and TX chains.
fn garbage_tables() -> Vec<u8> {
    let mut d = vec![0u8; 0x5000];
    d[0x4000..0x402c].copy_from_slice(&header(GUEST_CID, u32::MAX, OP_RW)); // claims 4 GiB
    d[0x4100..0x412c].copy_from_slice(&header(99, 0, OP_REQUEST)); // from a forged CID
    // RX (queue 0): outside RAM, too small, then a usable buffer.
    let rx = &mut d[table(0)..];
    desc(rx, 0, OUTSIDE_RAM, 4096, WRITE, 0);
    desc(rx, 1, gpa(0x4800), 8, WRITE, 0);
    desc(rx, 2, gpa(0x4c00), 1024, WRITE, 0);
    avail(&mut rx[0x400..], &[0, 1, 2]);
    // TX (queue 1): hostile chains, then a head index past the queue.
    let tx = &mut d[table(1)..];
    desc(tx, 0, 0xffff_ffff_ffff_0000, u32::MAX, 0, 0);
    desc(tx, 1, gpa(0x4000), 16, 0, 0);
    desc(tx, 2, gpa(0x4000), 44, NEXT, 2);
    desc(tx, 3, gpa(0x4000), 44, 0, 0);
    desc(tx, 4, gpa(0x4100), 44, 0, 0);
    avail(&mut tx[0x400..], &[0, 1, 2, 3, 4, 200]);
    d
}

#[test]
fn garbage_registers_and_descriptors_never_hurt_the_vmm() {
    if !kvm_or_skip("garbage_registers_and_descriptors_never_hurt_the_vmm") {
        return;
    }
    let dir = Scratch::new("hostile-virtio");
    let mut p = Program::new();
    p.li(T0, BASE);
    // Phase 1: garbage register traffic.
    p.li(T1, 0xffff_ffff);
    for off in [
        0x14, 0x24, 0x30, 0x38, 0x44, 0x80, 0x84, 0x50, 0x64, 0x100, 0x1fc, 0xffc,
    ] {
        p.sw(T1, T0, off);
    }
    p.sb(T1, T0, 0x70); // a narrow status write is ignored
    // DRIVER_OK without any ready queue: DEVICE_NEEDS_RESET ('B').
    p.li(T1, 0xf)
        .sw(T1, T0, 0x70)
        .lw(T1, T0, 0x70)
        .extract(T1, T1, 6, 1)
        .report_reg(T1);
    // Reset ('A': status 0).
    p.li(T1, 0).sw(T1, T0, 0x70).lw(T1, T0, 0x70).report_reg(T1);
    // Phase 2: a proper handshake over hostile queue contents.
    negotiate_and_set_up_queues(&mut p);
    p.li(T1, 0xf)
        .sw(T1, T0, 0x70)
        .lw(T1, T0, 0x70)
        .extract(T1, T1, 6, 1)
        .report_reg(T1);
    // Notify TX then RX.
    p.li(T1, 1).sw(T1, T0, 0x50);
    p.li(T1, 0).sw(T1, T0, 0x50);
    // TX: five chains consumed, the head past the queue stops the device ('F').
    p.la_image(T3, DATA_OFFSET + table(1) + 0x800)
        .wait_u16(T3, 2, 5)
        .report_reg(T1);
    // RX: the unusable buffers come back empty and the RST to the forged CID lands
    // in the good one ('D': 3 used).
    p.la_image(T3, DATA_OFFSET + table(0) + 0x800)
        .wait_u16(T3, 2, 3)
        .report_reg(T1);
    p.putchar(b'\n').shutdown().spin();
    p.data(&garbage_tables());
    let (_client, vmm, console) = boot(&dir.0, &p, Some(dir.0.join("v.sock")));
    assert_eq!(
        vmm.join().unwrap(),
        0,
        "the VMM survived and the guest shut down"
    );
    assert_eq!(std::fs::read_to_string(&console).unwrap(), "BAAFD\n");
}

/// 4 KiB of console text: lines of 63 'x' and a newline.
fn console_text() -> Vec<u8> {
    (0..4096)
        .map(|i| if i % 64 == 63 { b'\n' } else { b'x' })
        .collect()
}

/// The guest writes its console forever: 4 KiB per SBI DBCN call on riscv64, a byte per
/// `out` to COM1 on x86_64. On disk the console never holds more than its file and one
/// rotated predecessor, each at most [`dragonball::console::FILE_CAP`].
#[test]
fn a_console_flood_stays_within_its_cap_and_the_vm_still_stops() {
    if !kvm_or_skip("a_console_flood_stays_within_its_cap_and_the_vm_still_stops") {
        return;
    }
    let dir = Scratch::new("console-flood");
    let before = resources();
    let mut p = Program::new();
    let top = p.label();
    #[cfg(target_arch = "riscv64")]
    p.li(A0, 4096)
        .la_image(A1, DATA_OFFSET)
        .li(A2, 0)
        .ecall(0x4442_434e, 0); // DBCN console_write
    #[cfg(target_arch = "x86_64")]
    p.putchar(b'x');
    p.jump_to(top);
    p.data(&console_text());
    let (client, vmm, console) = boot(&dir.0, &p, None);
    let rotated = dir.0.join("console.1");
    let cap = dragonball::console::FILE_CAP;
    let flood_started = Instant::now();
    // DBCN moves 4 KiB per exit, so riscv64 fills the cap many times over; COM1 moves a
    // byte per exit, so x86_64 is only watched until its flood is well under way.
    #[cfg(target_arch = "riscv64")]
    wait_until(Duration::from_secs(300), "the console rotated", || {
        file_len(&rotated) == cap && file_len(&console) > 0
    });
    #[cfg(target_arch = "x86_64")]
    wait_until(Duration::from_secs(300), "64 KiB on the console", || {
        file_len(&console) >= 64 << 10
    });
    assert_bounded_while_flooded(&client, "db_vcpu0");
    let (current, older) = (file_len(&console), file_len(&rotated));
    eprintln!(
        "console after {:?} of flooding: {current} + {older} bytes (cap {cap} each)",
        flood_started.elapsed()
    );
    assert!(
        current <= cap && older <= cap,
        "console files of {current} and {older} bytes: over the {cap}-byte cap"
    );
    let others: Vec<_> = std::fs::read_dir(&dir.0)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !["Image", "console", "console.1"].contains(&n.as_str()))
        .collect();
    assert!(others.is_empty(), "more console files: {others:?}");
    assert_eq!(stop_within_limit(&client, vmm), 0);
    drop(client);
    assert_eq!(resources_settled(before), before, "threads/fds left behind");
}

/// The flood test's queues: four small RX buffers; on TX a REQUEST to host port 6 (head
/// 0), then RW chains of a 4 KiB payload (head 1, in every other ring slot).
fn flood_tables() -> Vec<u8> {
    let mut d = vec![0u8; 0x7000];
    d[0x4000..0x402c].copy_from_slice(&header(GUEST_CID, 0, OP_REQUEST));
    d[0x4100..0x412c].copy_from_slice(&header(GUEST_CID, 4096, OP_RW));
    d[0x5000..0x6000].copy_from_slice(&payload());
    let rx = &mut d[table(0)..];
    for i in 0..4 {
        desc(rx, i, gpa(0x6000 + 0x100 * i), 0x100, WRITE, 0);
    }
    avail(&mut rx[0x400..], &[0, 1, 2, 3]);
    let tx = &mut d[table(1)..];
    desc(tx, 0, gpa(0x4000), 44, 0, 0);
    desc(tx, 1, gpa(0x4100), 44, NEXT, 2);
    desc(tx, 2, gpa(0x5000), 4096, 0, 0);
    let mut heads = [1u16; 16];
    heads[0] = 0;
    avail(&mut tx[0x400..], &heads);
    tx[0x402..0x404].copy_from_slice(&1u16.to_le_bytes()); // only the REQUEST, at first
    d
}

/// What every RW packet of the flood carries.
fn payload() -> Vec<u8> {
    (0..4096u32).map(|i| (i * 7 % 251) as u8).collect()
}

/// Waits up to `limit` for the peer of `stream` to close its end, without reading.
fn peer_closed_within(stream: &UnixStream, limit: Duration) -> bool {
    let mut pfd = libc::pollfd {
        fd: stream.as_raw_fd(),
        events: libc::POLLRDHUP,
        revents: 0,
    };
    let ms = limit.as_millis().min(i32::MAX as u128) as i32;
    // SAFETY: `pfd` is one valid pollfd for the duration of the call.
    let n = unsafe { libc::poll(&mut pfd, 1, ms) };
    n == 1 && pfd.revents & (libc::POLLRDHUP | libc::POLLHUP) != 0
}

/// The guest opens a stream to a host listener that never reads, then sends 4 KiB RW
/// packets as fast as the device takes them, forever, whatever credit the host gave.
/// Past the host's credit the connection is reset; the flood goes on against the dead
/// connection while the VMM's memory stays bounded and its API answers.
#[test]
fn a_vsock_flood_past_its_credit_is_reset_and_stays_bounded() {
    if !kvm_or_skip("a_vsock_flood_past_its_credit_is_reset_and_stays_bounded") {
        return;
    }
    let dir = Scratch::new("vsock-flood");
    let before = resources();
    let uds = dir.0.join("v.sock");
    let listener = UnixListener::bind(format!("{}_6", uds.display())).unwrap();
    listener.set_nonblocking(true).unwrap();
    let mut p = Program::new();
    p.li(T0, BASE);
    negotiate_and_set_up_queues(&mut p);
    p.li(T1, 0xf).sw(T1, T0, 0x70); // DRIVER_OK
    // The REQUEST, then RX for its RESPONSE.
    p.li(T1, 1).sw(T1, T0, 0x50);
    p.li(T1, 0).sw(T1, T0, 0x50);
    p.la_image(T3, DATA_OFFSET + table(1) + 0x400) // TX avail
        .wait_u16(T3, 0x402, 1); // TX used.idx: the REQUEST was taken
    // From now on every ring slot holds the RW chain; keep 15 of them outstanding.
    p.li(T1, 1).sh(T1, T3, 4);
    let top = p.label();
    p.lhu(T1, T3, 0x402)
        .addi(T1, T1, 15)
        .sh(T1, T3, 2)
        .li(T1, 1)
        .sw(T1, T0, 0x50)
        .jump_to(top);
    p.data(&flood_tables());
    let (client, vmm, _console) = boot(&dir.0, &p, Some(uds.clone()));

    let mut stream = None;
    wait_until(Duration::from_secs(120), "the guest's connection", || {
        stream = listener.accept().ok().map(|(s, _)| s);
        stream.is_some()
    });
    let mut stream = stream.unwrap();
    stream.set_nonblocking(false).unwrap();
    assert!(
        peer_closed_within(&stream, Duration::from_secs(300)),
        "the VMM never reset a connection whose guest ignored its credit"
    );
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut received = Vec::new();
    stream.read_to_end(&mut received).unwrap();
    let pattern = payload();
    eprintln!("the host got {} bytes before the reset", received.len());
    assert!(!received.is_empty(), "nothing reached the host");
    assert!(
        received
            .iter()
            .enumerate()
            .all(|(i, b)| *b == pattern[i % pattern.len()]),
        "what reached the host is not the guest's payload, in order"
    );
    assert_bounded_while_flooded(&client, "vmm_master");
    assert_eq!(stop_within_limit(&client, vmm), 0);
    drop(client);
    drop(stream);
    drop(listener);
    assert!(!uds.exists(), "the vsock socket is removed with the VM");
    assert_eq!(resources_settled(before), before, "threads/fds left behind");
}
