//! virtio-fs benchmark, run where KVM is (the riscv64 test host): a sequential read of a
//! 256 MiB file and a stat walk over 10k files, in the guest through each virtio-fs
//! backend (inline, virtiofsd) and natively on the host; figures and guest/host ratios.
//!
//! ```text
//! fs-bench --dragonball PATH --virtiofsd PATH --kernel PATH --initrd PATH [--dir DIR]
//! ```

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

const FILE_MIB_DEFAULT: usize = 256;
const TREE_DIRS: usize = 100;
const TREE_FILES_PER_DIR: usize = 100;

fn arg(name: &str) -> Result<String> {
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        if a == name {
            return it.next().with_context(|| format!("{name} needs a value"));
        }
    }
    bail!("missing {name}")
}

fn file_mib() -> usize {
    std::env::var("FS_BENCH_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(FILE_MIB_DEFAULT)
}

fn prepare(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir.join("tree"))?;
    let mut f = std::fs::File::create(dir.join("big.bin"))?;
    let chunk: Vec<u8> = (0..(1u32 << 20)).map(|i| (i * 7 + 3) as u8).collect();
    for _ in 0..file_mib() {
        f.write_all(&chunk)?;
    }
    for d in 0..TREE_DIRS {
        let sub = dir.join("tree").join(format!("d{d:03}"));
        std::fs::create_dir_all(&sub)?;
        for i in 0..TREE_FILES_PER_DIR {
            std::fs::write(sub.join(format!("f{i:03}")), b"x")?;
        }
    }
    Ok(())
}

/// The same workload as the guest's `test_init.mode=fsbench` (tests/kvm-host test-init).
fn host_workload(dir: &Path) -> Result<(f64, f64)> {
    use std::io::Read;
    let start = Instant::now();
    let mut f = std::fs::File::open(dir.join("big.bin"))?;
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0usize;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        total += n;
    }
    let mib_s = total as f64 / (1 << 20) as f64 / start.elapsed().as_secs_f64();
    let start = Instant::now();
    let mut stack = vec![dir.join("tree")];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d)? {
            let p = e?.path();
            if std::fs::symlink_metadata(&p)?.is_dir() {
                stack.push(p);
            }
        }
    }
    Ok((mib_s, start.elapsed().as_secs_f64() * 1e3))
}

fn guest_run(
    db: &str,
    kernel: &str,
    initrd: &str,
    fs_flag: &str,
    fs_value: &str,
) -> Result<(f64, f64)> {
    let out = Command::new(db)
        .args([
            "--kernel", kernel, "--initrd", initrd, "--vcpus", "2", "--mem", "512",
        ])
        .args([
            "--cmdline",
            "console=ttyS0 panic=-1 quiet test_init.mode=fsbench",
        ])
        .args([fs_flag, fs_value])
        .stdin(Stdio::null())
        .output()
        .context("running dragonball")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.contains("fsbench read_mib_s="))
        .with_context(|| {
            format!(
                "no fsbench figures from the guest:\n{text}\n{}",
                String::from_utf8_lossy(&out.stderr)
            )
        })?;
    let field = |k: &str| -> Result<f64> {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(k))
            .and_then(|v| v.parse().ok())
            .with_context(|| format!("no {k} in {line:?}"))
    };
    Ok((field("read_mib_s=")?, field("walk_ms=")?))
}

fn main() -> Result<()> {
    let (db, vfsd, kernel, initrd) = (
        arg("--dragonball")?,
        arg("--virtiofsd")?,
        arg("--kernel")?,
        arg("--initrd")?,
    );
    let dir = PathBuf::from(arg("--dir").unwrap_or_else(|_| "/tmp/fs-bench".into()));
    let shared = dir.join("shared");
    let _ = std::fs::remove_dir_all(&dir);
    prepare(&shared)?;
    let host = host_workload(&shared)?;
    let inline = guest_run(
        &db,
        &kernel,
        &initrd,
        "--fs",
        &format!("kataShared:{}", shared.display()),
    )?;
    let socket = dir.join("vfsd.sock");
    let mut daemon = Command::new(&vfsd)
        .arg(format!("--socket-path={}", socket.display()))
        .arg(format!("--shared-dir={}", shared.display()))
        .args(["--cache=auto", "--sandbox=none", "--seccomp=none"])
        .stderr(Stdio::null())
        .spawn()
        .context("starting virtiofsd")?;
    let start = Instant::now();
    while !socket.exists() && start.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let vhost = guest_run(
        &db,
        &kernel,
        &initrd,
        "--fs-vhost",
        &format!("kataShared:{}", socket.display()),
    );
    let _ = daemon.kill();
    let _ = daemon.wait();
    let vhost = vhost?;
    let _ = std::fs::remove_dir_all(&dir);
    println!(
        "fs-bench: {} MiB sequential read, stat walk of {} entries ({})",
        file_mib(),
        TREE_DIRS * (TREE_FILES_PER_DIR + 1),
        std::env::consts::ARCH
    );
    println!(
        "  {:<28} {:>12} {:>12} {:>14} {:>14}",
        "", "read MiB/s", "walk ms", "read vs host", "walk vs host"
    );
    println!(
        "  {:<28} {:>12.1} {:>12.1} {:>14} {:>14}",
        "host (the VMM's machine)", host.0, host.1, "1.00", "1.00"
    );
    for (name, (r, w)) in [
        ("guest, inline virtio-fs", inline),
        ("guest, virtio-fs+virtiofsd", vhost),
    ] {
        println!(
            "  {:<28} {:>12.1} {:>12.1} {:>14.2} {:>14.2}",
            name,
            r,
            w,
            r / host.0,
            w / host.1
        );
    }
    Ok(())
}
