//! `dragonball`: boots a microVM from flags and exits with the guest's status.
//!
//! ```text
//! dragonball --kernel PATH [--initrd PATH] [--cmdline STR] [--vcpus N] [--mem MIB]
//!            [--console stdout|none|file:PATH] [--check-leaks]
//! ```

use std::time::Instant;

use anyhow::{Context, Result, bail};
use dragonball::{BootSourceConfig, ConsoleConfig, VmConfigInfo, VmmAction, start_vmm_thread};

const USAGE: &str = "usage: dragonball --kernel PATH [--initrd PATH] [--cmdline STR] [--vcpus N] \
[--mem MIB] [--console stdout|none|file:PATH] [--check-leaks]";

struct Args {
    boot: BootSourceConfig,
    config: VmConfigInfo,
    check_leaks: bool,
}

fn parse_args() -> Result<Args> {
    let mut kernel = None;
    let mut initrd = None;
    let mut cmdline = None;
    let mut config = VmConfigInfo::default();
    let mut check_leaks = false;
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
            "--check-leaks" => check_leaks = true,
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => bail!("unknown argument '{other}'\n{USAGE}"),
        }
    }
    let kernel_path = kernel.with_context(|| format!("--kernel is required\n{USAGE}"))?;
    Ok(Args {
        boot: BootSourceConfig {
            kernel_path,
            initrd_path: initrd,
            boot_args: cmdline,
        },
        config,
        check_leaks,
    })
}

/// Threads and open fds of this process.
fn resources() -> (usize, usize) {
    let count = |dir: &str| std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0);
    (count("/proc/self/task"), count("/proc/self/fd"))
}

fn run() -> Result<i32> {
    let args = parse_args()?;
    let before = resources();
    let start = Instant::now();
    let (client, vmm) = start_vmm_thread().context("starting the VMM thread")?;
    client.request(VmmAction::SetVmConfiguration(args.config))?;
    client.request(VmmAction::ConfigureBootSource(args.boot))?;
    let boot = Instant::now();
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
    if args.check_leaks {
        let after = resources();
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
