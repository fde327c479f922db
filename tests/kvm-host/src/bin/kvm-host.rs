//! `kvm-host`: runs a shell command inside a KVM test host and exits with its status.
//!
//! ```text
//! kvm-host --arch riscv64|x86_64 [--timeout SECS] [--mode native|emulated]
//!          [--share DIR[:ro]]... [--no-aia] [--verbose] -- COMMAND...
//! ```

use std::time::Duration;

use anyhow::{Context, Result, bail};
use kvm_host::{Arch, Invocation, Mode, Share, harness};

const USAGE: &str = "usage: kvm-host --arch riscv64|x86_64 [--timeout SECS] \
[--mode native|emulated] [--share DIR[:ro]]... [--no-aia] [--verbose] -- COMMAND...";

fn main() {
    if let Err(e) = run() {
        eprintln!("kvm-host: {e:#}");
        std::process::exit(2);
    }
}

fn run() -> Result<()> {
    let mut arch = None;
    let mut timeout = None;
    let mut mode = None;
    let mut shares = Vec::new();
    let mut verbose = false;
    let mut riscv_aia = true;
    let mut args = std::env::args().skip(1);
    let mut command = Vec::new();
    while let Some(a) = args.next() {
        let mut value = || {
            args.next()
                .with_context(|| format!("{a} needs a value\n{USAGE}"))
        };
        match a.as_str() {
            "--arch" => arch = Some(value()?.parse::<Arch>().map_err(anyhow::Error::msg)?),
            "--timeout" => {
                let v = value()?;
                let secs: u64 = v
                    .parse()
                    .with_context(|| format!("--timeout '{v}' is not a number of seconds"))?;
                timeout = Some(Duration::from_secs(secs));
            }
            "--mode" => {
                mode = Some(match value()?.as_str() {
                    "native" => Mode::Native,
                    "emulated" => Mode::Emulated,
                    m => bail!("--mode '{m}': expected native or emulated"),
                })
            }
            "--share" => {
                let v = value()?;
                let (path, read_only) = match v.strip_suffix(":ro") {
                    Some(p) => (p.to_string(), true),
                    None => (v, false),
                };
                let path =
                    std::fs::canonicalize(&path).with_context(|| format!("--share '{path}'"))?;
                shares.push(Share { path, read_only });
            }
            "--verbose" | "-v" => verbose = true,
            "--no-aia" => riscv_aia = false,
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(());
            }
            "--" => {
                command.extend(args.by_ref());
                break;
            }
            other => bail!("unknown argument '{other}'\n{USAGE}"),
        }
    }
    let arch = arch.with_context(|| format!("missing --arch\n{USAGE}"))?;
    if command.is_empty() {
        bail!("missing COMMAND\n{USAGE}");
    }
    let mut inv = Invocation::new(arch, command.join(" "));
    inv.shares.extend(shares);
    inv.echo = true;
    inv.mode = mode;
    inv.riscv_aia = riscv_aia;
    inv.cwd = std::env::current_dir().ok();
    if let Some(t) = timeout {
        inv.timeout = t;
    }
    for key in [
        "KATA_TEST_REQUIRE_KVM",
        "KATA_RV_EXPECT_IRQCHIP",
        "RUST_LOG",
        "RUST_BACKTRACE",
    ] {
        if let Ok(v) = std::env::var(key) {
            inv.env.push((key.into(), v));
        }
    }
    let outcome = harness::run(&inv)?;
    if verbose && !outcome.console.is_empty() {
        eprintln!(
            "---- {arch} test host console ----\n{}\n----",
            outcome.console
        );
    }
    let start = outcome
        .l1_uptime_at_start
        .map(|u| format!(", L1 ready at {u:.2} s uptime"))
        .unwrap_or_default();
    eprintln!(
        "kvm-host: {arch} ({:?}) exit {}{start}, wall {:.1} s",
        outcome.mode,
        outcome.exit_code,
        outcome.wall.as_secs_f64()
    );
    std::process::exit(outcome.exit_code);
}
