//! Dragonball VMs under real KVM (needs /dev/kvm, the guest kernel and test initrd):
//! run by `make vm-suite` inside the KVM test host of each arch, or natively where KVM
//! is real.

#![cfg(any(target_arch = "riscv64", target_arch = "x86_64"))]

mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use dragonball::{
    BootSourceConfig, ConsoleConfig, InstanceState, VmConfigInfo, VmmAction, VmmActionError,
    VmmData, start_vmm_thread,
};
use kvm_host::{Arch, artifacts};
use support::harness::{Scratch, config, kvm_or_skip, resources, resources_settled};
#[cfg(target_arch = "riscv64")]
use support::rv_guest::{A0, A1, A2, DATA_OFFSET, Program};

/// The architecture these tests run on.
fn arch() -> Arch {
    Arch::native().expect("tests are built for riscv64 or x86_64")
}

/// The guest kernel + test initrd; x86_64 guests end their run with a reboot through the
/// i8042 controller, which the VMM treats as the end of the VM (`acpi_power_off_ends_the_vm`
/// covers the ACPI power-off), and skip the PCI probe (there is no PCI bus).
fn test_initrd_boot(cmdline: &str) -> BootSourceConfig {
    let cmdline = match arch() {
        Arch::X86_64 => format!("{cmdline} reboot=k pci=off"),
        Arch::Riscv64 => cmdline.to_string(),
    };
    BootSourceConfig {
        kernel_path: artifacts::kernel(arch()),
        initrd_path: Some(artifacts::out_dir(arch()).join("test-initrd.cpio.gz")),
        boot_args: Some(cmdline),
    }
}

/// Boots, waits for the VM to end, returns (exit code, console).
/// Configures and starts a VM; returns its VMM thread, its client and its console file.
fn start_vm(
    cfg: VmConfigInfo,
    boot: BootSourceConfig,
) -> (std::thread::JoinHandle<i32>, dragonball::VmmClient, PathBuf) {
    let console = match &cfg.console {
        ConsoleConfig::File(p) => p.clone(),
        _ => unreachable!(),
    };
    let (client, vmm) = start_vmm_thread().unwrap();
    client.request(VmmAction::SetVmConfiguration(cfg)).unwrap();
    client
        .request(VmmAction::ConfigureBootSource(boot))
        .unwrap();
    client.request(VmmAction::StartMicroVm).unwrap();
    (vmm, client, console)
}

fn boot_to_end(cfg: VmConfigInfo, boot: BootSourceConfig) -> (i32, String) {
    let (vmm, _client, console) = start_vm(cfg, boot);
    let code = vmm.join().unwrap();
    (code, std::fs::read_to_string(console).unwrap_or_default())
}

/// [`boot_to_end`], but a VM still running after `limit` is shut down and the test fails
/// with `what` and the console.
#[cfg(target_arch = "x86_64")]
fn boot_to_end_within(
    cfg: VmConfigInfo,
    boot: BootSourceConfig,
    limit: Duration,
    what: &str,
) -> (i32, String) {
    let (vmm, client, console) = start_vm(cfg, boot);
    let (done_tx, done) = std::sync::mpsc::channel();
    let joiner = std::thread::spawn(move || {
        let _ = done_tx.send(vmm.join().unwrap());
    });
    let ended = done.recv_timeout(limit);
    if ended.is_err() {
        let _ = client.request(VmmAction::ShutdownMicroVm);
    }
    let _ = joiner.join();
    let text = std::fs::read_to_string(&console).unwrap_or_default();
    match ended {
        Ok(code) => (code, text),
        Err(_) => panic!("{what} within {limit:?}; console:\n{text}"),
    }
}

#[test]
fn boots_the_test_initrd_on_two_harts_and_powers_off() {
    if !kvm_or_skip("boots_the_test_initrd_on_two_harts_and_powers_off") {
        return;
    }
    let dir = Scratch::new("boot");
    let before = resources();
    let (code, console) = boot_to_end(
        config(2, 128, &dir.0.join("console")),
        test_initrd_boot("console=ttyS0 panic=-1"),
    );
    // The make target says which irqchip this host gives (AIA, or the PLIC fallback).
    match std::env::var("KATA_RV_EXPECT_IRQCHIP")
        .ok()
        .filter(|_| arch() == Arch::Riscv64)
        .as_deref()
    {
        Some("aia") => assert!(
            console.contains("riscv-aplic"),
            "expected the AIA:\n{console}"
        ),
        Some("plic") => assert!(
            console.contains("riscv-plic"),
            "expected the PLIC:\n{console}"
        ),
        _ => {}
    }
    let marker = console
        .lines()
        .find(|l| l.contains("KATA-RV-TEST-INIT: booted"))
        .unwrap_or_else(|| panic!("no marker; console:\n{console}"));
    println!("{marker}");
    assert!(marker.contains("cpus=0-1"), "both harts online: {marker}");
    assert_eq!(code, 0, "guest power-off is exit 0");
    // Every VMM thread (vmm_master, vCPUs) and fd (KVM, eventfds, console) is gone.
    assert_eq!(resources_settled(before), before, "threads/fds left behind");
}

/// A guest power-off on x86_64 goes through the ACPI tables (the FADT's PM1 control
/// register, the DSDT's `_S5_`) and ends the VM; without them Linux would only halt.
#[cfg(target_arch = "x86_64")]
#[test]
fn acpi_power_off_ends_the_vm() {
    if !kvm_or_skip("acpi_power_off_ends_the_vm") {
        return;
    }
    let dir = Scratch::new("poweroff");
    let mut boot = test_initrd_boot("console=ttyS0 panic=-1 test_init.end=poweroff");
    // No reboot fallback: only the power-off may end this VM.
    boot.boot_args = boot.boot_args.map(|a| a.replace(" reboot=k", ""));
    let (code, text) = boot_to_end_within(
        config(2, 128, &dir.0.join("console")),
        boot,
        Duration::from_secs(120),
        "the powered-off guest did not end the VM",
    );
    // Both vCPUs came from the MADT (with ACPI on, Linux ignores the MP table).
    assert!(
        text.contains("Using ACPI (MADT) for SMP") && text.contains("cpus=0-1"),
        "console:\n{text}"
    );
    assert!(
        text.contains("ACPI: PM: (supports S0 S5)"),
        "console:\n{text}"
    );
    assert!(text.contains("reboot: Power down"), "console:\n{text}");
    assert_eq!(code, 0, "a guest power-off is exit 0");
}

/// A bzImage (Linux 32-bit boot protocol, zero page, e820) with RAM beyond the 3–4 GiB
/// MMIO hole and two vCPUs announced by the MP table alone (`acpi=off`), ended by a
/// triple fault (`reboot=t`).
#[cfg(target_arch = "x86_64")]
#[test]
fn bzimage_boots_with_ram_above_4_gib_and_a_triple_fault_ends_it() {
    if !kvm_or_skip("bzimage_boots_with_ram_above_4_gib_and_a_triple_fault_ends_it") {
        return;
    }
    let dir = Scratch::new("bzimage");
    let mem_mib: u64 = 4608;
    let (code, console) = boot_to_end(
        config(2, mem_mib as usize, &dir.0.join("console")),
        BootSourceConfig {
            kernel_path: artifacts::out_dir(arch()).join("bzImage"),
            initrd_path: Some(artifacts::out_dir(arch()).join("test-initrd.cpio.gz")),
            // acpi=off: the second vCPU is found through the MP table alone.
            boot_args: Some("console=ttyS0 panic=-1 reboot=t pci=off acpi=off".into()),
        },
    );
    assert!(
        console.contains("KATA-RV-TEST-INIT: booted") && console.contains("cpus=0-1"),
        "no marker with two CPUs; console:\n{console}"
    );
    // The kernel's own view of the e820 map: RAM resumes at 4 GiB.
    let high_end = (4u64 << 30) + ((mem_mib - 3072) << 20) - 1;
    let high = format!("[mem 0x0000000100000000-{high_end:#018x}] usable");
    assert!(console.contains(&high), "no {high}; console:\n{console}");
    assert_eq!(code, 0, "a guest reset is exit 0");
}

#[cfg(target_arch = "riscv64")]
#[test]
fn bogus_sbi_calls_get_errors_and_the_vm_keeps_running() {
    if !kvm_or_skip("bogus_sbi_calls_get_errors_and_the_vm_keeps_running") {
        return;
    }
    let dir = Scratch::new("sbi");
    const DBCN: u32 = 0x4442_434e;
    let mem_mib = 64;
    let mut p = Program::new();
    // DBCN write from an address outside RAM: INVALID_PARAM.
    p.li(A0, 8)
        .li(A1, 0x10)
        .li(A2, 0)
        .ecall(DBCN, 0)
        .report_a0();
    // DBCN write with base_hi set: INVALID_PARAM.
    p.li(A0, 8)
        .li(A1, 0x1000)
        .li(A2, 1)
        .ecall(DBCN, 0)
        .report_a0();
    // Vendor and experimental extensions reach the VMM: NOT_SUPPORTED.
    p.ecall(0x0900_0000, 7).report_a0();
    p.ecall(0x0800_0001, 0).report_a0();
    // An unknown standard extension (answered by KVM): NOT_SUPPORTED.
    p.ecall(0x1234_5678, 0).report_a0();
    // A valid DBCN write of our string: success.
    p.li(A0, 6)
        .la_image(A1, DATA_OFFSET)
        .li(A2, 0)
        .ecall(DBCN, 0)
        .report_a0();
    // A huge write running off the end of RAM: INVALID_PARAM, not a crash.
    let ram_end_from_image = (mem_mib << 20) - 0x20_0000 - 16;
    p.li(A0, 0xffff_ffff)
        .la_relative(A1, ram_end_from_image)
        .li(A2, 0)
        .ecall(DBCN, 0)
        .report_a0();
    // DBCN read: nothing to read, success with 0 bytes.
    p.li(A0, 16)
        .la_image(A1, DATA_OFFSET)
        .li(A2, 0)
        .ecall(DBCN, 1)
        .report_a0();
    // Legacy getchar with no input: -1.
    p.ecall(2, 0).report_a0();
    p.putchar(b'\n').shutdown().spin();
    p.data(b"sbi-ok");
    let kernel = dir.0.join("Image");
    std::fs::write(&kernel, p.image()).unwrap();
    let (code, console) = boot_to_end(
        config(1, mem_mib as usize, &dir.0.join("console")),
        BootSourceConfig {
            kernel_path: kernel,
            initrd_path: None,
            boot_args: None,
        },
    );
    assert_eq!(console, "CCDDDsbi-okFCFE\n");
    assert_eq!(code, 0);
}

/// The running VM's `vcpus` vCPU threads and its event loop are under seccomp filters
/// (`Seccomp: 2` in their status), and this test's own thread is not.
fn assert_vmm_threads_confined(vcpus: usize) {
    let mut confined = Vec::new();
    for task in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        let status = std::fs::read_to_string(task.path().join("status")).unwrap_or_default();
        let mode = status
            .lines()
            .find_map(|l| l.strip_prefix("Seccomp:"))
            .map(|m| m.trim().to_string())
            .unwrap_or_default();
        let comm = comm.trim().to_string();
        if comm.starts_with("db_vcpu") || comm == "vmm_master" {
            assert_eq!(mode, "2", "thread {comm} is not under a seccomp filter");
            confined.push(comm);
        }
    }
    assert_eq!(confined.len(), vcpus + 1, "VMM threads: {confined:?}");
    let own = std::fs::read_to_string("/proc/thread-self/status").unwrap();
    assert!(
        own.contains("Seccomp:\t0"),
        "the caller's thread was confined too"
    );
}

#[test]
fn lifecycle_pause_resume_shutdown_and_late_config_is_rejected() {
    if !kvm_or_skip("lifecycle_pause_resume_shutdown_and_late_config_is_rejected") {
        return;
    }
    let dir = Scratch::new("lifecycle");
    let before = resources();
    let (client, vmm) = start_vmm_thread().unwrap();
    let cfg = config(2, 64, &dir.0.join("console"));
    client
        .request(VmmAction::SetVmConfiguration(cfg.clone()))
        .unwrap();
    client
        .request(VmmAction::ConfigureBootSource(test_initrd_boot(
            "console=ttyS0 panic=-1 quiet test_init.mode=sleep",
        )))
        .unwrap();
    client.request(VmmAction::StartMicroVm).unwrap();
    let state = |c: &dragonball::VmmClient| c.request(VmmAction::GetInstanceState).unwrap();
    assert_eq!(
        state(&client),
        VmmData::InstanceState(InstanceState::Running)
    );
    // The guest has run once it printed its mark.
    let start = std::time::Instant::now();
    while !std::fs::read_to_string(dir.0.join("console"))
        .unwrap_or_default()
        .contains("KATA-RV-TEST-INIT: booted")
    {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the guest never booted"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_vmm_threads_confined(2);

    for late in [
        VmmAction::SetVmConfiguration(cfg),
        VmmAction::ConfigureBootSource(test_initrd_boot("console=ttyS0")),
        VmmAction::StartMicroVm,
        VmmAction::InsertVsockDevice(dragonball::VsockDeviceConfigInfo {
            guest_cid: 3,
            uds_path: dir.0.join("late.sock"),
        }),
        VmmAction::InsertBlockDevice(dragonball::BlockDeviceConfigInfo {
            drive_id: "late".into(),
            path_on_host: dir.0.join("console"),
            is_read_only: true,
        }),
    ] {
        let e = client.request(late).unwrap_err();
        assert!(matches!(e, VmmActionError::NotAllowedAfterStart(_)), "{e}");
    }

    client.request(VmmAction::PauseMicroVm).unwrap();
    assert_eq!(
        state(&client),
        VmmData::InstanceState(InstanceState::Paused)
    );
    assert!(
        client.request(VmmAction::PauseMicroVm).is_err(),
        "pausing twice"
    );
    std::thread::sleep(Duration::from_millis(100));
    client.request(VmmAction::ResumeMicroVm).unwrap();
    assert_eq!(
        state(&client),
        VmmData::InstanceState(InstanceState::Running)
    );

    client.request(VmmAction::ShutdownMicroVm).unwrap();
    assert_eq!(vmm.join().unwrap(), 0);
    drop(client);
    assert_eq!(resources_settled(before), before, "threads/fds left behind");
}

#[test]
fn a_kernel_that_does_not_fit_is_a_clear_error() {
    if !kvm_or_skip("a_kernel_that_does_not_fit_is_a_clear_error") {
        return;
    }
    let dir = Scratch::new("toobig");
    let (client, vmm) = start_vmm_thread().unwrap();
    client
        .request(VmmAction::SetVmConfiguration(config(
            1,
            32,
            &dir.0.join("console"),
        )))
        .unwrap();
    // The real kernel with a 40 MiB initrd cannot fit in 32 MiB of RAM.
    let initrd = dir.0.join("big.cpio");
    std::fs::write(&initrd, vec![0u8; 40 << 20]).unwrap();
    let mut boot = test_initrd_boot("console=ttyS0");
    boot.initrd_path = Some(initrd);
    client
        .request(VmmAction::ConfigureBootSource(boot))
        .unwrap();
    let e = client.request(VmmAction::StartMicroVm).unwrap_err();
    assert!(e.to_string().contains("memory too small"), "{e}");
    // A garbage kernel is named as such.
    let junk = dir.0.join("junk");
    std::fs::write(
        &junk,
        b"definitely not a kernel image, just text....................................",
    )
    .unwrap();
    client
        .request(VmmAction::ConfigureBootSource(BootSourceConfig {
            kernel_path: junk.clone(),
            initrd_path: None,
            boot_args: None,
        }))
        .unwrap();
    let e = client.request(VmmAction::StartMicroVm).unwrap_err();
    let expected = match arch() {
        Arch::Riscv64 => "no RISC-V Image magic",
        Arch::X86_64 => "neither an ELF vmlinux nor a bzImage",
    };
    assert!(e.to_string().contains(expected), "{e}");
    assert_eq!(
        client.request(VmmAction::GetInstanceState).unwrap(),
        VmmData::InstanceState(InstanceState::Uninitialized)
    );
    client.request(VmmAction::ShutdownMicroVm).unwrap();
    vmm.join().unwrap();
}

mod vsock {
    use super::*;
    use dragonball::VsockDeviceConfigInfo;
    use std::io::{Read, Write};
    use std::os::unix::net::{UnixListener, UnixStream};
    use std::time::Instant;

    const PAYLOAD: usize = 1 << 20;
    const HOST_STREAMS: usize = 32;
    const GUEST_STREAMS: usize = 4;

    fn pattern(seed: u64) -> Vec<u8> {
        let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        (0..PAYLOAD)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    /// Sends the pattern and checks the echo, writing and reading concurrently.
    fn echo_round_trip(stream: UnixStream, seed: u64) {
        stream
            .set_read_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        let data = pattern(seed);
        let mut writer = stream.try_clone().unwrap();
        let sent = data.clone();
        let w = std::thread::spawn(move || writer.write_all(&sent).unwrap());
        let mut back = vec![0u8; PAYLOAD];
        let mut reader = stream;
        reader
            .read_exact(&mut back)
            .unwrap_or_else(|e| panic!("stream {seed}: reading the echo: {e}"));
        w.join().unwrap();
        assert!(
            back == data,
            "stream {seed}: echo differs from what was sent"
        );
    }

    fn wait_for(console: &Path, needle: &str) -> String {
        let start = Instant::now();
        loop {
            let text = std::fs::read_to_string(console).unwrap_or_default();
            if text.contains(needle) {
                return text;
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "no {needle:?} on the console:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn connect(uds: &Path, port: u32) -> (UnixStream, String) {
        let mut s = UnixStream::connect(uds).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        writeln!(s, "CONNECT {port}").unwrap();
        let mut line = String::new();
        // Read byte by byte: nothing after the newline may be consumed here.
        let mut b = [0u8; 1];
        while s.read(&mut b).unwrap_or(0) == 1 {
            line.push(b[0] as char);
            if b[0] == b'\n' {
                break;
            }
        }
        (s, line)
    }

    #[test]
    fn vsock_echo_both_directions_with_many_streams() {
        if !kvm_or_skip("vsock_echo_both_directions_with_many_streams") {
            return;
        }
        let dir = Scratch::new("vsock");
        let uds = dir.0.join("vsock.sock");
        let before = resources();
        let guest_listener = UnixListener::bind(format!("{}_4321", uds.display())).unwrap();
        let console = dir.0.join("console");
        let (client, vmm) = start_vmm_thread().unwrap();
        client
            .request(VmmAction::SetVmConfiguration(config(2, 256, &console)))
            .unwrap();
        client
            .request(VmmAction::ConfigureBootSource(test_initrd_boot(&format!(
                "console=ttyS0 panic=-1 quiet test_init.mode=vsock-echo test_init.connect={GUEST_STREAMS}"
            ))))
            .unwrap();
        client
            .request(VmmAction::InsertVsockDevice(VsockDeviceConfigInfo {
                guest_cid: 3,
                uds_path: uds.clone(),
            }))
            .unwrap();
        client.request(VmmAction::StartMicroVm).unwrap();
        wait_for(&console, "vsock echo listening");

        // Protocol errors: a port nobody listens on is refused (EOF, no OK), and a
        // garbage request is closed.
        let (refused, line) = connect(&uds, 9999);
        assert_eq!(line, "", "connecting to a closed guest port must fail");
        drop(refused);
        let mut junk = UnixStream::connect(&uds).unwrap();
        junk.set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        junk.write_all(b"HELLO there\n").unwrap();
        let mut rest = Vec::new();
        assert_eq!(junk.read_to_end(&mut rest).unwrap_or(0), 0);
        drop(junk);

        // host -> guest: 32 concurrent streams of 1 MiB each.
        let start = Instant::now();
        let workers: Vec<_> = (0..HOST_STREAMS)
            .map(|i| {
                let uds = uds.clone();
                std::thread::spawn(move || {
                    let (s, line) = connect(&uds, 1234);
                    assert!(
                        line.starts_with("OK ") && line.ends_with('\n'),
                        "stream {i}: got {line:?}"
                    );
                    line.trim()[3..]
                        .parse::<u32>()
                        .expect("OK carries the host port");
                    echo_round_trip(s, i as u64);
                })
            })
            .collect();
        for w in workers {
            w.join().unwrap();
        }
        let secs = start.elapsed().as_secs_f64();
        println!(
            "host->guest: {HOST_STREAMS} x 1 MiB echoed in {secs:.2} s ({:.1} MiB/s each way)",
            HOST_STREAMS as f64 / secs
        );

        // guest -> host: the guest connects to host port 4321 (<uds>_4321).
        guest_listener.set_nonblocking(true).unwrap();
        let mut accepted = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        while accepted.len() < GUEST_STREAMS {
            match guest_listener.accept() {
                Ok((s, _)) => {
                    s.set_nonblocking(false).unwrap();
                    accepted.push(s);
                }
                Err(_) => {
                    assert!(
                        Instant::now() < deadline,
                        "only {} guest connections arrived",
                        accepted.len()
                    );
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        }
        let workers: Vec<_> = accepted
            .into_iter()
            .enumerate()
            .map(|(i, s)| std::thread::spawn(move || echo_round_trip(s, 1000 + i as u64)))
            .collect();
        for w in workers {
            w.join().unwrap();
        }

        client.request(VmmAction::ShutdownMicroVm).unwrap();
        assert_eq!(vmm.join().unwrap(), 0);
        drop(client);
        drop(guest_listener);
        assert!(!uds.exists(), "the vsock socket is removed with the VM");
        let _ = std::fs::remove_file(format!("{}_4321", uds.display()));
        assert_eq!(resources_settled(before), before, "threads/fds left behind");
    }
}

#[test]
fn console_socket_streams_the_guest_console() {
    use std::io::Read;
    if !kvm_or_skip("console_socket_streams_the_guest_console") {
        return;
    }
    let dir = Scratch::new("console-socket");
    let sock = dir.0.join("console.sock");
    let before = resources();
    let (client, vmm) = start_vmm_thread().unwrap();
    let mut cfg = config(1, 128, &dir.0.join("unused"));
    cfg.console = ConsoleConfig::Socket(sock.clone());
    client.request(VmmAction::SetVmConfiguration(cfg)).unwrap();
    client
        .request(VmmAction::ConfigureBootSource(test_initrd_boot(
            "console=ttyS0 panic=-1 test_init.mode=sleep",
        )))
        .unwrap();
    client.request(VmmAction::StartMicroVm).unwrap();
    let mut stream = std::os::unix::net::UnixStream::connect(&sock).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&seen).contains("KATA-RV-TEST-INIT: booted") {
        let n = stream
            .read(&mut buf)
            .expect("console output before the timeout");
        assert!(
            n > 0,
            "console closed early:\n{}",
            String::from_utf8_lossy(&seen)
        );
        seen.extend_from_slice(&buf[..n]);
    }
    client.request(VmmAction::ShutdownMicroVm).unwrap();
    assert_eq!(vmm.join().unwrap(), 0);
    drop(client);
    // The VMM closed its end: the client reads to EOF, and the socket file is gone.
    let mut rest = Vec::new();
    stream
        .read_to_end(&mut rest)
        .expect("EOF after the VM stopped");
    drop(stream);
    assert!(!sock.exists());
    assert_eq!(resources_settled(before), before, "threads/fds left behind");
}

#[test]
fn virtio_blk_reads_writes_and_honours_read_only() {
    use dragonball::BlockDeviceConfigInfo;
    if !kvm_or_skip("virtio_blk_reads_writes_and_honours_read_only") {
        return;
    }
    let dir = Scratch::new("blk");
    let image = dir.0.join("disk.img");
    let mut data = vec![0u8; 1 << 20];
    data[..17].copy_from_slice(b"KATA-RV-BLK-IMAGE");
    std::fs::write(&image, &data).unwrap();
    for read_only in [false, true] {
        let console = dir.0.join(format!("console-{read_only}"));
        let (client, vmm) = start_vmm_thread().unwrap();
        client
            .request(VmmAction::SetVmConfiguration(config(1, 128, &console)))
            .unwrap();
        client
            .request(VmmAction::ConfigureBootSource(test_initrd_boot(
                "console=ttyS0 panic=-1 quiet test_init.mode=blk",
            )))
            .unwrap();
        client
            .request(VmmAction::InsertBlockDevice(BlockDeviceConfigInfo {
                drive_id: "rootdisk".into(),
                path_on_host: image.clone(),
                is_read_only: read_only,
            }))
            .unwrap();
        client.request(VmmAction::StartMicroVm).unwrap();
        assert_eq!(vmm.join().unwrap(), 0);
        let text = std::fs::read_to_string(&console).unwrap();
        assert!(text.contains("blk head KATA-RV-BLK-IMAGE"), "{text}");
        assert!(text.contains("blk serial rootdisk"), "{text}");
        let on_disk = std::fs::read(&image).unwrap();
        if read_only {
            assert!(text.contains("blk write rejected"), "{text}");
        } else {
            assert!(text.contains("blk write ok"), "{text}");
            assert_eq!(&on_disk[4096..4096 + 17], b"KATA-RV-BLK-WRITE");
            // Undo, so the read-only pass can show that nothing is written.
            std::fs::write(&image, &data).unwrap();
        }
        if read_only {
            assert_eq!(on_disk, data, "a read-only disk is unchanged");
        }
    }
}

#[test]
fn virtio_net_tcp_echo_over_a_tap_in_a_private_netns() {
    if !kvm_or_skip("virtio_net_tcp_echo_over_a_tap_in_a_private_netns") {
        return;
    }
    // Everything runs on a thread with its own network namespace: the VMM threads it
    // starts inherit it, and it disappears with the thread.
    std::thread::spawn(net_echo_in_private_netns)
        .join()
        .unwrap();
}

fn net_echo_in_private_netns() {
    use dragonball::NetworkInterfaceConfig;
    use std::io::{Read, Write};
    // SAFETY: unshare affects only this thread's namespaces.
    assert_eq!(
        unsafe { libc::unshare(libc::CLONE_NEWNET) },
        0,
        "unshare(CLONE_NEWNET)"
    );
    kvm_host::netcfg::link_up("lo").unwrap();
    let dir = Scratch::new("net");
    let console = dir.0.join("console");
    let (client, vmm) = start_vmm_thread().unwrap();
    client
        .request(VmmAction::SetVmConfiguration(config(1, 128, &console)))
        .unwrap();
    client
        .request(VmmAction::ConfigureBootSource(test_initrd_boot(
            "console=ttyS0 panic=-1 quiet test_init.mode=net test_init.ip=10.0.2.2/24",
        )))
        .unwrap();
    client
        .request(VmmAction::InsertNetworkDevice(NetworkInterfaceConfig {
            iface_id: "eth0".into(),
            host_dev_name: "ktap0".into(),
            guest_mac: Some("52:54:00:12:34:56".into()),
        }))
        .unwrap();
    client.request(VmmAction::StartMicroVm).unwrap();
    kvm_host::netcfg::configure_ipv4("ktap0", [10, 0, 2, 1], 24).unwrap();
    let start = std::time::Instant::now();
    while !std::fs::read_to_string(&console)
        .unwrap_or_default()
        .contains("net echo listening")
    {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "guest never listened:\n{}",
            std::fs::read_to_string(&console).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let addr: std::net::SocketAddr = "10.0.2.2:7777".parse().unwrap();
    let stream = loop {
        match std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5)) {
            Ok(s) => break s,
            Err(e) => {
                assert!(start.elapsed() < Duration::from_secs(60), "connect: {e}");
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    };
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let data: Vec<u8> = (0..(1u32 << 20))
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let mut writer = stream.try_clone().unwrap();
    let sent = data.clone();
    let t = Instant::now();
    let w = std::thread::spawn(move || writer.write_all(&sent).unwrap());
    let mut back = vec![0u8; data.len()];
    let mut reader = stream;
    reader.read_exact(&mut back).unwrap();
    w.join().unwrap();
    println!("net: 1 MiB TCP echo in {:.2} s", t.elapsed().as_secs_f64());
    assert!(back == data, "TCP echo over virtio-net differs");
    client.request(VmmAction::ShutdownMicroVm).unwrap();
    assert_eq!(vmm.join().unwrap(), 0);
}

fn fnv1a(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3)
    })
}

/// A host directory for virtio-fs tests: 1 MiB host.bin and 1000 small files.
fn fs_share(dir: &Path) -> (PathBuf, Vec<u8>) {
    let shared = dir.join("shared");
    std::fs::create_dir_all(shared.join("many")).unwrap();
    let data: Vec<u8> = (0..(1u32 << 20))
        .map(|i| (i.wrapping_mul(2_246_822_519) >> 11) as u8)
        .collect();
    std::fs::write(shared.join("host.bin"), &data).unwrap();
    for i in 0..1000 {
        std::fs::write(shared.join("many").join(format!("f{i:04}")), i.to_string()).unwrap();
    }
    (shared, data)
}

/// Boots the fs test guest on `backend` and checks what it saw and wrote.
fn fs_round_trip(dir: &Path, shared: &Path, data: &[u8], backend: dragonball::FsBackend) {
    use dragonball::FsDeviceConfigInfo;
    let console = dir.join("console");
    let before = resources();
    let (client, vmm) = start_vmm_thread().unwrap();
    client
        .request(VmmAction::SetVmConfiguration(config(1, 128, &console)))
        .unwrap();
    client
        .request(VmmAction::ConfigureBootSource(test_initrd_boot(
            "console=ttyS0 panic=-1 quiet test_init.mode=fs",
        )))
        .unwrap();
    client
        .request(VmmAction::InsertFsDevice(FsDeviceConfigInfo {
            tag: "kataShared".into(),
            backend,
        }))
        .unwrap();
    client.request(VmmAction::StartMicroVm).unwrap();
    assert_eq!(vmm.join().unwrap(), 0);
    drop(client);
    let text = std::fs::read_to_string(&console).unwrap();
    assert!(
        text.contains(&format!(
            "fs host.bin len={} fnv={:016x}",
            data.len(),
            fnv1a(data)
        )),
        "guest saw different host.bin bytes:\n{text}"
    );
    assert!(text.contains("fs many=1000"), "{text}");
    let written =
        std::fs::read(shared.join("from-guest.txt")).expect("the guest's file on the host");
    let expected: String = (0..1000).map(|i| format!("guest line {i}\n")).collect();
    assert_eq!(written, expected.as_bytes());
    assert!(
        text.contains(&format!("fs wrote fnv={:016x}", fnv1a(expected.as_bytes()))),
        "{text}"
    );
    assert_eq!(resources_settled(before), before, "threads/fds left behind");
}

#[test]
fn inline_virtio_fs_reads_writes_and_lists_a_host_directory() {
    if !kvm_or_skip("inline_virtio_fs_reads_writes_and_lists_a_host_directory") {
        return;
    }
    let dir = Scratch::new("fs");
    let (shared, data) = fs_share(&dir.0);
    fs_round_trip(
        &dir.0,
        &shared,
        &data,
        dragonball::FsBackend::Inline {
            shared_dir: shared.clone(),
        },
    );
}

/// virtiofsd on `socket` sharing `shared`; killed on drop.
struct Virtiofsd(std::process::Child);

impl Virtiofsd {
    fn start(socket: &Path, shared: &Path) -> Self {
        let child = std::process::Command::new(artifacts::binary(arch(), "virtiofsd"))
            .arg(format!("--socket-path={}", socket.display()))
            .arg(format!("--shared-dir={}", shared.display()))
            .args(["--cache=auto", "--sandbox=none", "--seccomp=none"])
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("starting virtiofsd (make kvm-artifacts builds it)");
        let start = Instant::now();
        while !socket.exists() {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "virtiofsd never created its socket"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Virtiofsd(child)
    }
}

impl Drop for Virtiofsd {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn virtiofsd_virtio_fs_reads_writes_and_lists_a_host_directory() {
    if !kvm_or_skip("virtiofsd_virtio_fs_reads_writes_and_lists_a_host_directory") {
        return;
    }
    let dir = Scratch::new("vfsd");
    let (shared, data) = fs_share(&dir.0);
    let socket = dir.0.join("vfsd.sock");
    let _daemon = Virtiofsd::start(&socket, &shared);
    fs_round_trip(
        &dir.0,
        &shared,
        &data,
        dragonball::FsBackend::VhostUser { socket },
    );
}

#[test]
fn virtiofsd_absent_or_killed_is_an_error_not_a_hang() {
    use dragonball::{FsBackend, FsDeviceConfigInfo};
    if !kvm_or_skip("virtiofsd_absent_or_killed_is_an_error_not_a_hang") {
        return;
    }
    let dir = Scratch::new("vfsd-kill");
    let shared = dir.0.join("shared");
    std::fs::create_dir_all(&shared).unwrap();
    let socket = dir.0.join("vfsd.sock");
    let console = dir.0.join("console");
    let fs = |socket: &Path| FsDeviceConfigInfo {
        tag: "kataShared".into(),
        backend: FsBackend::VhostUser {
            socket: socket.to_path_buf(),
        },
    };
    let setup = || {
        let (client, vmm) = start_vmm_thread().unwrap();
        client
            .request(VmmAction::SetVmConfiguration(config(1, 128, &console)))
            .unwrap();
        client
            .request(VmmAction::ConfigureBootSource(test_initrd_boot(
                "console=ttyS0 panic=-1 quiet test_init.mode=sleep",
            )))
            .unwrap();
        (client, vmm)
    };
    // No virtiofsd at all: refused at insert time, naming the socket.
    let (client, vmm) = setup();
    let e = client
        .request(VmmAction::InsertFsDevice(fs(&socket)))
        .unwrap_err();
    assert!(
        e.to_string().contains("vfsd.sock") && e.to_string().contains("virtiofsd"),
        "{e}"
    );
    // A dead socket file (nobody listening): StartMicroVm fails clearly, no hang.
    let stale = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    client
        .request(VmmAction::InsertFsDevice(fs(&socket)))
        .unwrap();
    drop(stale);
    let e = client.request(VmmAction::StartMicroVm).unwrap_err();
    assert!(e.to_string().contains("virtiofsd socket"), "{e}");
    client.request(VmmAction::ShutdownMicroVm).unwrap();
    vmm.join().unwrap();
    std::fs::remove_file(&socket).unwrap();

    // virtiofsd killed while the VM runs: the guest's file system is gone, so the VMM
    // ends the VM itself (a failure status), bounded, and leaves nothing behind.
    let before = resources();
    let mut daemon = Virtiofsd::start(&socket, &shared);
    let (client, vmm) = setup();
    client
        .request(VmmAction::InsertFsDevice(fs(&socket)))
        .unwrap();
    client.request(VmmAction::StartMicroVm).unwrap();
    let start = Instant::now();
    while !std::fs::read_to_string(&console)
        .unwrap_or_default()
        .contains("KATA-RV-TEST-INIT: booted")
    {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "guest did not boot"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    daemon.0.kill().unwrap();
    daemon.0.wait().unwrap();
    drop(daemon);
    let killed = Instant::now();
    while !vmm.is_finished() {
        assert!(
            killed.elapsed() < Duration::from_secs(30),
            "the VM did not end after its virtiofsd died"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(vmm.join().unwrap(), 1, "the VM ended with a failure status");
    assert!(matches!(
        client.request(VmmAction::ShutdownMicroVm),
        Err(VmmActionError::VmmGone)
    ));
    drop(client);
    let _ = std::fs::remove_file(&socket);
    assert_eq!(resources_settled(before), before, "threads/fds left behind");
}
