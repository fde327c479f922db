//! The KVM smoke test that runs inside a test host: `/dev/kvm` opens, the in-kernel
//! irqchip exists, and a tiny vCPU runs to a console write and a clean stop, each seen as
//! a KVM exit. Every step appends a line to the report.

use std::ptr::NonNull;

#[cfg(target_arch = "riscv64")]
mod riscv64;
#[cfg(target_arch = "x86_64")]
mod x86_64;

/// Lines of the smoke report; each is printed as soon as it is known, so a hang shows
/// how far the test got.
#[derive(Debug, Default)]
pub struct Report {
    /// Every line so far.
    pub lines: Vec<String>,
}

impl Report {
    /// Records and prints one step.
    pub fn push(&mut self, line: impl Into<String>) {
        let line = line.into();
        println!("{line}");
        self.lines.push(line);
    }
}

/// Runs the smoke test for the architecture this binary was built for.
pub fn run(report: &mut Report) -> anyhow::Result<()> {
    #[cfg(target_arch = "riscv64")]
    return riscv64::run(report);
    #[cfg(target_arch = "x86_64")]
    return x86_64::run(report);
    #[cfg(not(any(target_arch = "riscv64", target_arch = "x86_64")))]
    {
        let _ = report;
        anyhow::bail!("no KVM smoke test for {}", std::env::consts::ARCH)
    }
}

/// Anonymous guest memory, unmapped on drop.
#[cfg_attr(
    not(any(target_arch = "riscv64", target_arch = "x86_64")),
    allow(dead_code)
)]
struct GuestRam {
    ptr: NonNull<u8>,
    len: usize,
}

#[cfg_attr(
    not(any(target_arch = "riscv64", target_arch = "x86_64")),
    allow(dead_code)
)]
impl GuestRam {
    fn new(len: usize) -> std::io::Result<Self> {
        // SAFETY: a fresh private anonymous mapping; the result is checked below.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        let ptr = NonNull::new(ptr.cast()).ok_or_else(std::io::Error::last_os_error)?;
        Ok(GuestRam { ptr, len })
    }

    fn host_addr(&self) -> u64 {
        self.ptr.as_ptr() as u64
    }

    fn write(&mut self, offset: usize, bytes: &[u8]) {
        assert!(offset + bytes.len() <= self.len, "smoke code does not fit");
        // SAFETY: the range was checked to lie inside our own mapping.
        unsafe {
            std::ptr::copy_nonoverlapping(
                bytes.as_ptr(),
                self.ptr.as_ptr().add(offset),
                bytes.len(),
            )
        }
    }
}

impl Drop for GuestRam {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly the mapping created in `new`.
        unsafe {
            libc::munmap(self.ptr.as_ptr().cast(), self.len);
        }
    }
}
