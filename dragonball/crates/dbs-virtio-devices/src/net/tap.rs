//! A tap device opened through /dev/net/tun (IFF_TAP | IFF_NO_PI), non-blocking.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;

const IFF_TAP: libc::c_short = 0x0002;
const IFF_NO_PI: libc::c_short = 0x1000;
const IFNAMSIZ: usize = 16;

#[repr(C)]
struct IfReq {
    name: [u8; IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

vmm_sys_util::ioctl_iow_nr!(TUNSETIFF, 0x54, 202, libc::c_int);

/// An open tap interface.
pub struct Tap {
    /// The queue fd.
    pub file: File,
    /// The interface name the kernel assigned or accepted.
    pub name: String,
}

impl Tap {
    /// Opens (or creates) tap interface `name` in the caller's network namespace.
    pub fn open(name: &str) -> io::Result<Tap> {
        if name.is_empty() || name.len() >= IFNAMSIZ || name.contains('\0') {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("tap name '{name}' must be 1 to 15 bytes"),
            ));
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open("/dev/net/tun")?;
        let mut req = IfReq {
            name: [0; IFNAMSIZ],
            flags: IFF_TAP | IFF_NO_PI,
            _pad: [0; 22],
        };
        req.name[..name.len()].copy_from_slice(name.as_bytes());
        // SAFETY: TUNSETIFF reads and writes one ifreq, which `req` is (same layout and
        // size as the kernel's struct ifreq).
        let ret = unsafe { vmm_sys_util::ioctl::ioctl_with_mut_ref(&file, TUNSETIFF(), &mut req) };
        if ret < 0 {
            return Err(io::Error::last_os_error());
        }
        let end = req.name.iter().position(|b| *b == 0).unwrap_or(IFNAMSIZ);
        let name = String::from_utf8_lossy(&req.name[..end]).into_owned();
        Ok(Tap { file, name })
    }

    /// The raw fd (for epoll).
    pub fn fd(&self) -> i32 {
        self.file.as_raw_fd()
    }
}
