//! `rootfs-builder`: builds a deterministic guest initrd from a static `/init` plus files.
//!
//! ```text
//! rootfs-builder -o initrd.cpio.gz --init target/.../kata-agent \
//!     [--file SRC:DEST[:MODE]]... [--dir DEST[:MODE]]... [--symlink DEST:TARGET]... \
//!     [--compress gzip|none]
//! ```

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use rootfs_builder::{Archive, Compression};

const USAGE: &str = "usage: rootfs-builder -o OUT [--init FILE] [--file SRC:DEST[:MODE]]... \
[--dir DEST[:MODE]]... [--symlink DEST:TARGET]... [--compress gzip|none]";

fn parse_mode(s: &str, flag: &str) -> Result<u32> {
    u32::from_str_radix(s, 8).with_context(|| format!("{flag}: mode '{s}' is not octal"))
}

fn add_host_file(archive: &mut Archive, src: &str, dest: &str, mode: Option<u32>) -> Result<()> {
    let data = std::fs::read(src).with_context(|| format!("reading '{src}'"))?;
    let mode = match mode {
        Some(m) => m,
        None => std::fs::metadata(src)?.permissions().mode() & 0o7777,
    };
    archive.add_file(dest, mode, data)?;
    Ok(())
}

fn main() {
    if let Err(e) = run() {
        eprintln!("rootfs-builder: {e:#}");
        std::process::exit(2);
    }
}

fn run() -> Result<()> {
    let mut archive = Archive::new();
    let mut out: Option<PathBuf> = None;
    let mut compression = Compression::Gzip;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || {
            args.next()
                .with_context(|| format!("{flag} needs a value\n{USAGE}"))
        };
        match flag.as_str() {
            "-o" | "--output" => out = Some(PathBuf::from(value()?)),
            "--init" => add_host_file(&mut archive, &value()?, "init", Some(0o755))?,
            "--file" => {
                let v = value()?;
                let parts: Vec<&str> = v.splitn(3, ':').collect();
                match parts.as_slice() {
                    [src, dest] => add_host_file(&mut archive, src, dest, None)?,
                    [src, dest, mode] => {
                        add_host_file(&mut archive, src, dest, Some(parse_mode(mode, "--file")?))?
                    }
                    _ => bail!("--file '{v}': expected SRC:DEST[:MODE]"),
                }
            }
            "--dir" => {
                let v = value()?;
                match v.split_once(':') {
                    Some((dest, mode)) => archive.add_dir(dest, parse_mode(mode, "--dir")?)?,
                    None => archive.add_dir(&v, 0o755)?,
                };
            }
            "--symlink" => {
                let v = value()?;
                let (dest, target) = v
                    .split_once(':')
                    .with_context(|| format!("--symlink '{v}': expected DEST:TARGET"))?;
                archive.add_symlink(dest, target)?;
            }
            "--compress" => {
                compression = match value()?.as_str() {
                    "gzip" => Compression::Gzip,
                    "none" => Compression::None,
                    other => bail!("--compress '{other}': expected gzip or none"),
                }
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(());
            }
            other => bail!("unknown argument '{other}'\n{USAGE}"),
        }
    }
    let out = out.with_context(|| format!("missing -o OUT\n{USAGE}"))?;
    if archive.is_empty() {
        bail!("nothing to archive: give --init or --file\n{USAGE}");
    }
    let bytes = archive.to_bytes(compression)?;
    let tmp = out.with_extension("partial");
    std::fs::write(&tmp, &bytes).with_context(|| format!("writing '{}'", tmp.display()))?;
    std::fs::rename(&tmp, &out).with_context(|| format!("renaming to '{}'", out.display()))?;
    eprintln!(
        "rootfs-builder: wrote {} ({} entries, {} bytes)",
        out.display(),
        archive.len(),
        bytes.len()
    );
    Ok(())
}
