//! The small static test `/init` for guest initrds. It mounts proc/sys/dev, prints a
//! marker line with its uptime and the online CPUs, then acts on `test_init.mode=` from
//! the kernel command line:
//!
//! - (absent) power the VM off;
//! - `sleep`: stay up until the VMM stops the VM (for measurements);
//! - `blk`: read the head and serial of /dev/vda, write a pattern at 4 KiB, power off;
//! - `fs`: mount virtio-fs tag `kataShared` at /mnt, hash /mnt/host.bin, write
//!   /mnt/from-guest.txt, count /mnt/many, power off;
//! - `fsbench`: mount `kataShared`, time a sequential read of /mnt/big.bin and a stat
//!   walk of /mnt/tree, print the figures, power off;
//! - `net`: give eth0 the address `test_init.ip=` (CIDR) and echo TCP port 7777 until
//!   the VMM stops the VM;
//! - `vsock-echo`: echo every stream accepted on vsock port 1234, and open
//!   `test_init.connect=N` streams (default 0) to host port 4321 and echo those too;
//!   runs until the VMM stops the VM.
//! - `dmesg`: print the kernel log (every level, `[seconds] message`), then power off: with
//!   `quiet initcall_debug` it times each initcall of a boot that wrote nothing to the console.
//!
//! The VM ends by power-off on riscv64 and by reboot on x86_64, unless
//! `test_init.end=poweroff` asks for a power-off there too (ACPI S5 under Dragonball).

use std::io::{Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::Path;

use kvm_host::pid1;
use nix::sys::socket::{
    AddressFamily, Backlog, SockFlag, SockType, VsockAddr, accept, bind, connect, listen, socket,
};

/// The marker tests look for on the guest console.
const MARKER: &str = "KATA-RV-TEST-INIT";
/// Port the guest echo server listens on.
const ECHO_PORT: u32 = 1234;
/// Host port the guest connects to.
const HOST_PORT: u32 = 4321;
const HOST_CID: u32 = 2;
const ANY_CID: u32 = u32::MAX;

fn cmdline_value(key: &str) -> Option<String> {
    let cmdline = std::fs::read_to_string("/proc/cmdline").ok()?;
    cmdline
        .split_whitespace()
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('=').map(str::to_string))
}

/// Copies everything read back to the same stream until EOF.
fn echo(fd: OwnedFd) {
    let mut file = std::fs::File::from(fd);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match file.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if file.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
        }
    }
}

fn vsock_echo(connects: usize) -> nix::Result<()> {
    let server = socket(
        AddressFamily::Vsock,
        SockType::Stream,
        SockFlag::empty(),
        None,
    )?;
    bind(
        std::os::fd::AsRawFd::as_raw_fd(&server),
        &VsockAddr::new(ANY_CID, ECHO_PORT),
    )?;
    listen(&server, Backlog::new(128)?)?;
    println!("{MARKER}: vsock echo listening on port {ECHO_PORT}");
    for i in 0..connects {
        std::thread::spawn(move || {
            for _attempt in 0..50 {
                let Ok(fd) = socket(
                    AddressFamily::Vsock,
                    SockType::Stream,
                    SockFlag::empty(),
                    None,
                ) else {
                    return;
                };
                let raw = std::os::fd::AsRawFd::as_raw_fd(&fd);
                if connect(raw, &VsockAddr::new(HOST_CID, HOST_PORT)).is_ok() {
                    println!("{MARKER}: connected to host port {HOST_PORT} ({i})");
                    return echo(fd);
                }
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            println!("{MARKER}: could not connect to host port {HOST_PORT} ({i})");
        });
    }
    loop {
        let raw = accept(std::os::fd::AsRawFd::as_raw_fd(&server))?;
        // SAFETY: accept returned a fresh fd that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        std::thread::spawn(move || echo(fd));
    }
}

/// Exercises /dev/vda: read, serial (GET_ID), write + flush.
fn blk_check() {
    use std::os::unix::fs::FileExt;
    const DEV: &str = "/dev/vda";
    match std::fs::File::open(DEV) {
        Ok(f) => {
            let mut head = [0u8; 17];
            match f.read_exact_at(&mut head, 0) {
                Ok(()) => println!("{MARKER}: blk head {}", String::from_utf8_lossy(&head)),
                Err(e) => println!("{MARKER}: blk read failed: {e}"),
            }
        }
        Err(e) => println!("{MARKER}: blk open failed: {e}"),
    }
    let serial = std::fs::read_to_string("/sys/block/vda/serial").unwrap_or_default();
    println!("{MARKER}: blk serial {}", serial.trim());
    let written = std::fs::OpenOptions::new()
        .write(true)
        .open(DEV)
        .and_then(|f| {
            f.write_all_at(b"KATA-RV-BLK-WRITE", 4096)
                .and_then(|_| f.sync_all())
        });
    match written {
        Ok(()) => println!("{MARKER}: blk write ok"),
        Err(e) => println!("{MARKER}: blk write rejected: {e}"),
    }
}

/// FNV-1a 64 of `data` (what the host side recomputes).
fn fnv1a(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3)
    })
}

/// Exercises a virtio-fs share: read, write, list.
fn fs_check() {
    use nix::mount::{MsFlags, mount, umount};
    let target = Path::new("/mnt");
    let _ = std::fs::create_dir_all(target);
    if let Err(e) = mount(
        Some("kataShared"),
        target,
        Some("virtiofs"),
        MsFlags::empty(),
        None::<&str>,
    ) {
        println!("{MARKER}: fs mount failed: {e}");
        return;
    }
    match std::fs::read("/mnt/host.bin") {
        Ok(d) => println!(
            "{MARKER}: fs host.bin len={} fnv={:016x}",
            d.len(),
            fnv1a(&d)
        ),
        Err(e) => println!("{MARKER}: fs read failed: {e}"),
    }
    let text: String = (0..1000).map(|i| format!("guest line {i}\n")).collect();
    match std::fs::write("/mnt/from-guest.txt", &text) {
        Ok(()) => println!("{MARKER}: fs wrote fnv={:016x}", fnv1a(text.as_bytes())),
        Err(e) => println!("{MARKER}: fs write failed: {e}"),
    }
    match std::fs::read_dir("/mnt/many") {
        Ok(d) => println!("{MARKER}: fs many={}", d.count()),
        Err(e) => println!("{MARKER}: fs list failed: {e}"),
    }
    nix::unistd::sync();
    if let Err(e) = umount(target) {
        println!("{MARKER}: fs umount failed: {e}");
    }
}

/// Sequential read MiB/s of `file` and the time to stat every entry under `tree`.
pub fn fs_workload(file: &Path, tree: &Path) -> std::io::Result<(f64, f64, usize)> {
    let start = std::time::Instant::now();
    let mut f = std::fs::File::open(file)?;
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0usize;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        total += n;
    }
    let read_mib_s = total as f64 / (1 << 20) as f64 / start.elapsed().as_secs_f64();
    let start = std::time::Instant::now();
    let mut stack = vec![tree.to_path_buf()];
    let mut entries = 0usize;
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir)? {
            let path = e?.path();
            let meta = std::fs::symlink_metadata(&path)?;
            entries += 1;
            if meta.is_dir() {
                stack.push(path);
            }
        }
    }
    Ok((read_mib_s, start.elapsed().as_secs_f64() * 1e3, entries))
}

fn fs_bench() {
    use nix::mount::{MsFlags, mount};
    let target = Path::new("/mnt");
    let _ = std::fs::create_dir_all(target);
    if let Err(e) = mount(
        Some("kataShared"),
        target,
        Some("virtiofs"),
        MsFlags::empty(),
        None::<&str>,
    ) {
        println!("{MARKER}: fsbench mount failed: {e}");
        return;
    }
    match fs_workload(&target.join("big.bin"), &target.join("tree")) {
        Ok((mib_s, walk_ms, n)) => {
            println!("{MARKER}: fsbench read_mib_s={mib_s:.1} walk_ms={walk_ms:.1} entries={n}")
        }
        Err(e) => println!("{MARKER}: fsbench failed: {e}"),
    }
}

/// Configures eth0 and echoes TCP port 7777 forever.
fn net_echo() {
    let cidr = cmdline_value("test_init.ip").unwrap_or_default();
    let Some((ip, prefix)) = kvm_host::netcfg::parse_cidr(&cidr) else {
        println!("{MARKER}: net: bad test_init.ip '{cidr}'");
        return;
    };
    if let Err(e) = kvm_host::netcfg::link_up("lo")
        .and_then(|_| kvm_host::netcfg::configure_ipv4("eth0", ip, prefix))
    {
        println!("{MARKER}: net: configuring eth0: {e}");
        return;
    }
    let listener = match std::net::TcpListener::bind(("0.0.0.0", 7777)) {
        Ok(l) => l,
        Err(e) => {
            println!("{MARKER}: net: listen: {e}");
            return;
        }
    };
    println!("{MARKER}: net echo listening on {cidr} port 7777");
    for stream in listener.incoming().flatten() {
        std::thread::spawn(move || {
            use std::os::fd::OwnedFd;
            echo(OwnedFd::from(stream));
        });
    }
}

/// Prints every record of the kernel log buffer as `[seconds] message` (from /dev/kmsg,
/// read non-blocking until it is drained).
fn dmesg() {
    use std::os::unix::fs::OpenOptionsExt;
    let kmsg = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NONBLOCK)
        .open("/dev/kmsg");
    let mut kmsg = match kmsg {
        Ok(f) => f,
        Err(e) => return println!("{MARKER}: /dev/kmsg: {e}"),
    };
    let mut record = vec![0u8; 8192];
    let mut out = std::io::stdout().lock();
    loop {
        match kmsg.read(&mut record) {
            Ok(0) => break,
            Ok(n) => {
                // "prio,seq,usec,flags[,…];message\n" (continuation lines start with a space).
                let line = String::from_utf8_lossy(&record[..n]);
                let Some((head, message)) = line.split_once(';') else {
                    continue;
                };
                let usec: u64 = head
                    .split(',')
                    .nth(2)
                    .and_then(|u| u.parse().ok())
                    .unwrap_or(0);
                let first = message.lines().next().unwrap_or("");
                let _ = writeln!(
                    out,
                    "[{:>4}.{:06}] {first}",
                    usec / 1_000_000,
                    usec % 1_000_000
                );
            }
            // EPIPE: a record was overwritten while reading; go on with the next.
            Err(e) if e.raw_os_error() == Some(nix::libc::EPIPE) => continue,
            Err(_) => break,
        }
    }
}

fn main() {
    if let Err(e) = pid1::mount_kernel_filesystems(Path::new("/")) {
        println!("{MARKER}: error: {e}");
    }
    let cpus = std::fs::read_to_string("/sys/devices/system/cpu/online")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|e| format!("unknown ({e})"));
    println!("{MARKER}: booted uptime={:.3} cpus={cpus}", pid1::uptime());
    let mode = cmdline_value("test_init.mode");
    if mode.as_deref() == Some("blk") {
        blk_check();
    }
    if mode.as_deref() == Some("fs") {
        fs_check();
    }
    if mode.as_deref() == Some("fsbench") {
        fs_bench();
    }
    if mode.as_deref() == Some("net") {
        net_echo();
    }
    if mode.as_deref() == Some("sleep") {
        loop {
            std::thread::sleep(std::time::Duration::from_secs(3600));
        }
    }
    if mode.as_deref() == Some("dmesg") {
        dmesg();
    }
    if mode.as_deref() == Some("vsock-echo") {
        let connects = cmdline_value("test_init.connect")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        if let Err(e) = vsock_echo(connects) {
            println!("{MARKER}: vsock echo failed: {e}");
        }
    }
    let _ = std::io::stdout().flush();
    if cmdline_value("test_init.end").as_deref() == Some("poweroff") {
        pid1::end_vm_by(true);
    }
    pid1::end_vm();
}
