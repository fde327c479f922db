//! Minimal IPv4 interface configuration with ioctls (no `ip` binary needed): used by the
//! test init inside guests and by tests that set up taps in their own network namespace.

use std::io;

#[repr(C)]
struct IfReqAddr {
    name: [u8; 16],
    addr: libc::sockaddr_in,
    _pad: [u8; 8],
}

#[repr(C)]
struct IfReqFlags {
    name: [u8; 16],
    flags: libc::c_short,
    _pad: [u8; 22],
}

fn name_bytes(ifname: &str) -> io::Result<[u8; 16]> {
    if ifname.is_empty() || ifname.len() > 15 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("bad interface name '{ifname}'"),
        ));
    }
    let mut n = [0u8; 16];
    n[..ifname.len()].copy_from_slice(ifname.as_bytes());
    Ok(n)
}

fn sockaddr(ip: [u8; 4]) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes(ip),
        },
        sin_zero: [0; 8],
    }
}

fn ioctl<T>(request: libc::c_ulong, arg: &mut T) -> io::Result<()> {
    // SAFETY: a plain datagram socket, closed below.
    let sock = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if sock < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `arg` is an ifreq-shaped struct the request reads/writes.
    let ret = unsafe { libc::ioctl(sock, request as _, arg as *mut T) };
    let err = io::Error::last_os_error();
    // SAFETY: closing the socket opened above.
    unsafe { libc::close(sock) };
    if ret < 0 { Err(err) } else { Ok(()) }
}

/// Sets `ifname`'s IPv4 address and prefix length, and brings it up.
pub fn configure_ipv4(ifname: &str, ip: [u8; 4], prefix: u8) -> io::Result<()> {
    let name = name_bytes(ifname)?;
    let mut req = IfReqAddr {
        name,
        addr: sockaddr(ip),
        _pad: [0; 8],
    };
    ioctl(libc::SIOCSIFADDR, &mut req)?;
    let mask = if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix.min(32)))
    };
    req.addr = sockaddr(mask.to_be_bytes());
    ioctl(libc::SIOCSIFNETMASK, &mut req)?;
    link_up(ifname)
}

/// Brings `ifname` up.
pub fn link_up(ifname: &str) -> io::Result<()> {
    let mut req = IfReqFlags {
        name: name_bytes(ifname)?,
        flags: 0,
        _pad: [0; 22],
    };
    ioctl(libc::SIOCGIFFLAGS, &mut req)?;
    req.flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
    ioctl(libc::SIOCSIFFLAGS, &mut req)
}

/// Parses "10.0.2.2/24".
pub fn parse_cidr(s: &str) -> Option<([u8; 4], u8)> {
    let (ip, prefix) = s.split_once('/')?;
    let ip: std::net::Ipv4Addr = ip.parse().ok()?;
    let prefix: u8 = prefix.parse().ok().filter(|p| *p <= 32)?;
    Some((ip.octets(), prefix))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs_parse() {
        assert_eq!(parse_cidr("10.0.2.2/24"), Some(([10, 0, 2, 2], 24)));
        assert_eq!(parse_cidr("10.0.2.2/33"), None);
        assert_eq!(parse_cidr("10.0.2/24"), None);
        assert!(configure_ipv4("this-name-is-too-long", [1, 2, 3, 4], 8).is_err());
    }
}
