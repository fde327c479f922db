//! Minimal IPv4 network configuration with ioctls (no netlink, no `ip` binary): interface
//! addresses, MTU, links, routes and ARP entries. Used by the agent's network RPCs, the
//! test init inside guests, and tests that set up taps in their own network namespace.

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

#[repr(C)]
struct IfReqInt {
    name: [u8; 16],
    value: libc::c_int,
    _pad: [u8; 20],
}

/// Sets `ifname`'s MTU.
pub fn set_mtu(ifname: &str, mtu: u32) -> io::Result<()> {
    let value = libc::c_int::try_from(mtu).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("MTU {mtu} is too large"),
        )
    })?;
    let mut req = IfReqInt {
        name: name_bytes(ifname)?,
        value,
        _pad: [0; 20],
    };
    ioctl(libc::SIOCSIFMTU, &mut req)
}

fn sockaddr_generic(ip: [u8; 4]) -> libc::sockaddr {
    let inet = sockaddr(ip);
    // SAFETY: sockaddr_in and sockaddr have the same size; every bit pattern is valid.
    unsafe { std::mem::transmute::<libc::sockaddr_in, libc::sockaddr>(inet) }
}

/// The netmask of a prefix length.
pub fn prefix_mask(prefix: u8) -> [u8; 4] {
    let mask = if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix.min(32)))
    };
    mask.to_be_bytes()
}

/// An IPv4 route: destination/prefix via an optional gateway on an optional device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route4 {
    /// Destination network.
    pub dest: [u8; 4],
    /// Destination prefix length (0 = default route).
    pub prefix: u8,
    /// Next hop, if any.
    pub gateway: Option<[u8; 4]>,
    /// Output device, if named.
    pub device: Option<String>,
}

/// Adds `route` (an existing identical route is not an error).
pub fn add_route(route: &Route4) -> io::Result<()> {
    // SAFETY: rtentry is a plain C struct; all-zero is its empty value.
    let mut entry: libc::rtentry = unsafe { std::mem::zeroed() };
    entry.rt_dst = sockaddr_generic(route.dest);
    entry.rt_genmask = sockaddr_generic(prefix_mask(route.prefix));
    entry.rt_flags = libc::RTF_UP;
    if let Some(gateway) = route.gateway {
        entry.rt_gateway = sockaddr_generic(gateway);
        entry.rt_flags |= libc::RTF_GATEWAY;
    }
    if route.prefix == 32 {
        entry.rt_flags |= libc::RTF_HOST;
    }
    let device = route
        .device
        .as_deref()
        .map(|d| {
            std::ffi::CString::new(d).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
        })
        .transpose()?;
    if let Some(device) = &device {
        entry.rt_dev = device.as_ptr().cast_mut();
    }
    match ioctl(libc::SIOCADDRT, &mut entry) {
        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => Ok(()),
        other => other,
    }
}

/// Parses /proc/net/route into routes.
pub fn parse_proc_routes(text: &str) -> Vec<Route4> {
    let hex = |field: &str| u32::from_str_radix(field, 16).ok();
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() < 8 {
                return None;
            }
            let dest = hex(fields[1])?.to_ne_bytes();
            let gateway = hex(fields[2])?.to_ne_bytes();
            let mask = u32::from_be_bytes(hex(fields[7])?.to_ne_bytes());
            Some(Route4 {
                dest,
                prefix: mask.count_ones() as u8,
                gateway: (gateway != [0; 4]).then_some(gateway),
                device: Some(fields[0].to_string()),
            })
        })
        .collect()
}

/// The kernel's IPv4 routes.
pub fn list_routes() -> io::Result<Vec<Route4>> {
    Ok(parse_proc_routes(&std::fs::read_to_string(
        "/proc/net/route",
    )?))
}

/// Adds a permanent ARP entry: `ip` is at `mac` on `ifname`.
pub fn add_arp(ifname: &str, ip: [u8; 4], mac: [u8; 6]) -> io::Result<()> {
    // SAFETY: arpreq is a plain C struct; all-zero is its empty value.
    let mut req: libc::arpreq = unsafe { std::mem::zeroed() };
    req.arp_pa = sockaddr_generic(ip);
    req.arp_ha.sa_family = libc::ARPHRD_ETHER;
    for (slot, byte) in req.arp_ha.sa_data.iter_mut().zip(mac) {
        *slot = byte as libc::c_char;
    }
    req.arp_flags = libc::ATF_COM | libc::ATF_PERM;
    let name = name_bytes(ifname)?;
    for (slot, byte) in req.arp_dev.iter_mut().zip(name) {
        *slot = byte as libc::c_char;
    }
    ioctl(libc::SIOCSARP, &mut req)
}

/// Parses "aa:bb:cc:dd:ee:ff".
pub fn parse_mac(text: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = text.split(':');
    for byte in &mut mac {
        *byte = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
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
    fn proc_routes_parse() {
        let text = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
                    eth0\t00000000\t0102000A\t0003\t0\t0\t0\t00000000\t0\t0\t0\n\
                    eth0\t0002000A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n";
        let routes = parse_proc_routes(text);
        assert_eq!(routes.len(), 2);
        assert_eq!(routes[0].prefix, 0);
        assert_eq!(routes[0].gateway, Some([10, 0, 2, 1]));
        assert_eq!(routes[1].dest, [10, 0, 2, 0]);
        assert_eq!(routes[1].prefix, 24);
        assert_eq!(routes[1].device.as_deref(), Some("eth0"));
    }

    #[test]
    fn macs_and_masks_parse() {
        assert_eq!(parse_mac("02:00:0a:00:02:0f"), Some([2, 0, 10, 0, 2, 15]));
        assert_eq!(parse_mac("02:00:0a"), None);
        assert_eq!(parse_mac("02:00:0a:00:02:0f:01"), None);
        assert_eq!(prefix_mask(24), [255, 255, 255, 0]);
        assert_eq!(prefix_mask(0), [0, 0, 0, 0]);
    }

    #[test]
    fn cidrs_parse() {
        assert_eq!(parse_cidr("10.0.2.2/24"), Some(([10, 0, 2, 2], 24)));
        assert_eq!(parse_cidr("10.0.2.2/33"), None);
        assert_eq!(parse_cidr("10.0.2/24"), None);
        assert!(configure_ipv4("this-name-is-too-long", [1, 2, 3, 4], 8).is_err());
    }
}
