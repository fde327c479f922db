//! `dragonball`: boots a microVM from flags and exits with the guest's status.
//!
//! ```text
//! dragonball --kernel PATH [--initrd PATH] [--cmdline STR] [--vcpus N] [--mem MIB]
//!            [--console stdout|none|file:PATH|socket:PATH] [--vsock-cid N --vsock-uds PATH]
//!            [--block PATH[:ro]]... [--net TAP[,MAC]]... [--fs TAG:DIR]... [--fs-vhost TAG:SOCKET]... [--check-leaks]
//! ```

use std::time::Instant;

use anyhow::{Context, Result, bail};
use dragonball::{
    BlockDeviceConfigInfo, BootSourceConfig, ConsoleConfig, FsBackend, FsDeviceConfigInfo,
    NetworkInterfaceConfig, VmConfigInfo, VmmAction, VsockDeviceConfigInfo, start_vmm_thread,
};

const USAGE: &str = "usage: dragonball --kernel PATH [--initrd PATH] [--cmdline STR] [--vcpus N] \
[--mem MIB] [--console stdout|none|file:PATH|socket:PATH] [--vsock-cid N --vsock-uds PATH] [--block PATH[:ro]]... [--net TAP[,MAC]]... [--fs TAG:DIR]... [--fs-vhost TAG:SOCKET]... [--thp] [--check-leaks]";

struct Args {
    boot: BootSourceConfig,
    config: VmConfigInfo,
    vsock: Option<VsockDeviceConfigInfo>,
    blocks: Vec<BlockDeviceConfigInfo>,
    nets: Vec<NetworkInterfaceConfig>,
    fs: Vec<FsDeviceConfigInfo>,
    check_leaks: bool,
}

fn parse_args() -> Result<Args> {
    let mut kernel = None;
    let mut initrd = None;
    let mut cmdline = None;
    let mut config = VmConfigInfo::default();
    let mut check_leaks = false;
    let mut vsock_cid = None;
    let mut vsock_uds = None;
    let mut blocks = Vec::new();
    let mut nets = Vec::new();
    let mut fs = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || {
            args.next()
                .with_context(|| format!("{flag} needs a value\n{USAGE}"))
        };
        match flag.as_str() {
            "--kernel" => kernel = Some(value()?.into()),
            "--initrd" => initrd = Some(value()?.into()),
            "--cmdline" => cmdline = Some(value()?),
            "--vcpus" => {
                let v = value()?;
                config.vcpu_count = v
                    .parse()
                    .with_context(|| format!("--vcpus '{v}' is not a number"))?;
            }
            "--mem" => {
                let v = value()?;
                config.mem_size_mib = v
                    .parse()
                    .with_context(|| format!("--mem '{v}' is not a number of MiB"))?;
            }
            "--console" => {
                config.console = value()?
                    .parse::<ConsoleConfig>()
                    .map_err(anyhow::Error::msg)?
            }
            "--vsock-cid" => {
                let v = value()?;
                vsock_cid = Some(
                    v.parse::<u32>()
                        .with_context(|| format!("--vsock-cid '{v}' is not a number"))?,
                );
            }
            "--vsock-uds" => vsock_uds = Some(std::path::PathBuf::from(value()?)),
            "--block" => {
                let v = value()?;
                let (path, ro) = match v.strip_suffix(":ro") {
                    Some(p) => (p.to_string(), true),
                    None => (v, false),
                };
                blocks.push(BlockDeviceConfigInfo {
                    drive_id: format!("blk{}", blocks.len()),
                    path_on_host: path.into(),
                    is_read_only: ro,
                });
            }
            "--net" => {
                let v = value()?;
                let (tap, mac) = match v.split_once(',') {
                    Some((t, m)) => (t.to_string(), Some(m.to_string())),
                    None => (v, None),
                };
                nets.push(NetworkInterfaceConfig {
                    iface_id: format!("eth{}", nets.len()),
                    host_dev_name: tap,
                    guest_mac: mac,
                });
            }
            "--fs" => {
                let v = value()?;
                let (tag, dir) = v
                    .split_once(':')
                    .with_context(|| format!("--fs '{v}': expected TAG:DIR"))?;
                fs.push(FsDeviceConfigInfo {
                    tag: tag.to_string(),
                    backend: FsBackend::Inline {
                        shared_dir: dir.into(),
                    },
                });
            }
            "--fs-vhost" => {
                let v = value()?;
                let (tag, sock) = v
                    .split_once(':')
                    .with_context(|| format!("--fs-vhost '{v}': expected TAG:SOCKET"))?;
                fs.push(FsDeviceConfigInfo {
                    tag: tag.to_string(),
                    backend: FsBackend::VhostUser {
                        socket: sock.into(),
                    },
                });
            }
            "--check-leaks" => check_leaks = true,
            "--thp" => config.transparent_huge_pages = true,
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => bail!("unknown argument '{other}'\n{USAGE}"),
        }
    }
    let kernel_path = kernel.with_context(|| format!("--kernel is required\n{USAGE}"))?;
    let vsock = match (vsock_cid, vsock_uds) {
        (Some(guest_cid), Some(uds_path)) => Some(VsockDeviceConfigInfo {
            guest_cid,
            uds_path,
        }),
        (None, None) => None,
        _ => bail!("--vsock-cid and --vsock-uds go together\n{USAGE}"),
    };
    Ok(Args {
        boot: BootSourceConfig {
            kernel_path,
            initrd_path: initrd,
            boot_args: cmdline,
        },
        config,
        vsock,
        blocks,
        nets,
        fs,
        check_leaks,
    })
}

/// Threads and open fds of this process.
fn resources() -> (usize, usize) {
    let count = |dir: &str| std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0);
    (count("/proc/self/task"), count("/proc/self/fd"))
}

fn run() -> Result<i32> {
    let start = Instant::now();
    let args = parse_args()?;
    let before = resources();
    let (client, vmm) = start_vmm_thread().context("starting the VMM thread")?;
    client.request(VmmAction::SetVmConfiguration(args.config))?;
    client.request(VmmAction::ConfigureBootSource(args.boot))?;
    for f in args.fs {
        client.request(VmmAction::InsertFsDevice(f))?;
    }
    for net in args.nets {
        client.request(VmmAction::InsertNetworkDevice(net))?;
    }
    for block in args.blocks {
        client.request(VmmAction::InsertBlockDevice(block))?;
    }
    if let Some(vsock) = args.vsock {
        client.request(VmmAction::InsertVsockDevice(vsock))?;
    }
    let boot = Instant::now();
    let start_requested = start.elapsed();
    client.request(VmmAction::StartMicroVm)?;
    let running = boot.elapsed();
    let code = vmm
        .join()
        .map_err(|_| anyhow::anyhow!("the VMM thread panicked"))?;
    drop(client);
    eprintln!(
        "dragonball: guest exited with {code} after {:.3} s (StartMicroVm took {:.3} s)",
        start.elapsed().as_secs_f64(),
        running.as_secs_f64()
    );
    // Machine-readable timings (ms since process start) for bench/.
    eprintln!(
        "dragonball: timing start_requested_ms={:.3} running_ms={:.3} exited_ms={:.3}",
        start_requested.as_secs_f64() * 1e3,
        (start_requested + running).as_secs_f64() * 1e3,
        start.elapsed().as_secs_f64() * 1e3
    );
    if args.check_leaks {
        // A joined thread can linger in /proc/self/task for a moment: let it settle.
        let mut after = resources();
        for _ in 0..300 {
            if after == before {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
            after = resources();
        }
        eprintln!(
            "dragonball: leak check: threads {} -> {}, fds {} -> {}",
            before.0, after.0, before.1, after.1
        );
        if after != before {
            bail!("leak check failed: threads/fds before {before:?}, after {after:?}");
        }
    }
    Ok(code)
}

fn main() {
    match run() {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("dragonball: {e:#}");
            std::process::exit(2);
        }
    }
}
