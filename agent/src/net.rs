//! The network RPCs: interfaces, IPv4 routes and ARP entries (the VM is the pod's network
//! namespace). IPv6 configuration is refused with a clear error.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use kata_agent_protocols::agent::Routes;
use kata_agent_protocols::types::{ARPNeighbor, IPAddress, IPFamily, Interface, Route};
use kata_netcfg as netcfg;

use crate::error::{AgentError, AgentResult};

fn sysfs(name: &str, file: &str) -> String {
    std::fs::read_to_string(format!("/sys/class/net/{name}/{file}"))
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// Every interface with its addresses, MTU, MAC and flags.
pub fn list_interfaces() -> AgentResult<Vec<Interface>> {
    let mut by_name: BTreeMap<String, Interface> = BTreeMap::new();
    let names = std::fs::read_dir("/sys/class/net")
        .map_err(|e| AgentError::internal(format!("listing /sys/class/net: {e}")))?;
    for entry in names.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let flags =
            u32::from_str_radix(sysfs(&name, "flags").trim_start_matches("0x"), 16).unwrap_or(0);
        by_name.insert(
            name.clone(),
            Interface {
                device: name.clone(),
                name: name.clone(),
                mtu: sysfs(&name, "mtu").parse().unwrap_or(0),
                hwAddr: sysfs(&name, "address"),
                raw_flags: flags,
                ..Default::default()
            },
        );
    }
    let addresses =
        nix::ifaddrs::getifaddrs().map_err(|e| AgentError::internal(format!("getifaddrs: {e}")))?;
    for address in addresses {
        let Some(interface) = by_name.get_mut(&address.interface_name) else {
            continue;
        };
        let (Some(addr), Some(mask)) = (address.address, address.netmask) else {
            continue;
        };
        if let (Some(ip), Some(mask)) = (addr.as_sockaddr_in(), mask.as_sockaddr_in()) {
            interface.IPAddresses.push(IPAddress {
                family: IPFamily::v4.into(),
                address: ip.ip().to_string(),
                mask: mask.ip().to_bits().count_ones().to_string(),
                ..Default::default()
            });
        } else if let (Some(ip), Some(mask)) = (addr.as_sockaddr_in6(), mask.as_sockaddr_in6()) {
            interface.IPAddresses.push(IPAddress {
                family: IPFamily::v6.into(),
                address: ip.ip().to_string(),
                mask: mask.ip().to_bits().count_ones().to_string(),
                ..Default::default()
            });
        }
    }
    Ok(by_name.into_values().collect())
}

fn ipv4(field: &str, text: &str) -> AgentResult<[u8; 4]> {
    text.parse::<Ipv4Addr>().map(|ip| ip.octets()).map_err(|_| {
        AgentError::invalid(format!(
            "{field} '{text}' is not an IPv4 address (IPv6 is not supported)"
        ))
    })
}

fn prefix(field: &str, text: &str) -> AgentResult<u8> {
    text.parse::<u8>().ok().filter(|p| *p <= 32).ok_or_else(|| {
        AgentError::invalid(format!("{field} '{text}' is not a prefix length 0..32"))
    })
}

/// Brings the loopback interface up (the kernel gives it 127.0.0.1): a pod's containers
/// talk to each other over it.
pub fn loopback_up() -> AgentResult<()> {
    netcfg::link_up("lo").map_err(|e| AgentError::internal(format!("bringing lo up: {e}")))
}

/// Configures the interface whose MAC (or name) matches: IPv4 address, MTU, link up.
pub fn update_interface(wanted: &Interface) -> AgentResult<Interface> {
    let current = list_interfaces()?;
    let found = current
        .iter()
        .find(|i| !wanted.hwAddr.is_empty() && i.hwAddr.eq_ignore_ascii_case(&wanted.hwAddr))
        .or_else(|| current.iter().find(|i| i.name == wanted.name))
        .ok_or_else(|| {
            AgentError::not_found(format!(
                "no interface with MAC '{}' or name '{}'",
                wanted.hwAddr, wanted.name
            ))
        })?;
    let name = found.name.clone();
    let io = |what: &str, e: std::io::Error| AgentError::internal(format!("{what} on {name}: {e}"));
    if wanted.IPAddresses.len() > 1 {
        return Err(AgentError::invalid(format!(
            "interface {name}: only one IPv4 address is supported"
        )));
    }
    for address in &wanted.IPAddresses {
        let ip = ipv4("IPAddresses.address", &address.address)?;
        let len = prefix("IPAddresses.mask", &address.mask)?;
        netcfg::configure_ipv4(&name, ip, len).map_err(|e| io("setting the address", e))?;
    }
    if wanted.mtu > 0 {
        let mtu = u32::try_from(wanted.mtu)
            .map_err(|_| AgentError::invalid(format!("mtu {} is too large", wanted.mtu)))?;
        netcfg::set_mtu(&name, mtu).map_err(|e| io("setting the MTU", e))?;
    }
    netcfg::link_up(&name).map_err(|e| io("bringing the link up", e))?;
    list_interfaces()?
        .into_iter()
        .find(|i| i.name == name)
        .ok_or_else(|| AgentError::internal(format!("interface {name} vanished")))
}

fn to_route(route: &netcfg::Route4) -> Route {
    let dest = if route.prefix == 0 && route.dest == [0; 4] {
        String::new()
    } else {
        format!("{}/{}", Ipv4Addr::from(route.dest), route.prefix)
    };
    Route {
        dest,
        gateway: route
            .gateway
            .map(|g| Ipv4Addr::from(g).to_string())
            .unwrap_or_default(),
        device: route.device.clone().unwrap_or_default(),
        family: IPFamily::v4.into(),
        ..Default::default()
    }
}

/// The IPv4 routing table.
pub fn list_routes() -> AgentResult<Vec<Route>> {
    let routes = netcfg::list_routes()
        .map_err(|e| AgentError::internal(format!("reading /proc/net/route: {e}")))?;
    Ok(routes.iter().map(to_route).collect())
}

/// Adds every route (device routes before gateway routes) and returns the table.
pub fn update_routes(routes: &[Route]) -> AgentResult<Routes> {
    let mut ordered: Vec<&Route> = routes.iter().collect();
    ordered.sort_by_key(|r| !r.gateway.is_empty());
    for route in ordered {
        let (dest, len) = match route.dest.as_str() {
            "" | "default" => ([0; 4], 0),
            text => match text.split_once('/') {
                Some((ip, len)) => (ipv4("route dest", ip)?, prefix("route dest", len)?),
                None => (ipv4("route dest", text)?, 32),
            },
        };
        let gateway = (!route.gateway.is_empty())
            .then(|| ipv4("route gateway", &route.gateway))
            .transpose()?;
        let spec = netcfg::Route4 {
            dest,
            prefix: len,
            gateway,
            device: (!route.device.is_empty()).then(|| route.device.clone()),
        };
        netcfg::add_route(&spec).map_err(|e| {
            AgentError::internal(format!(
                "adding route '{}' via '{}': {e}",
                route.dest, route.gateway
            ))
        })?;
    }
    Ok(Routes {
        Routes: list_routes()?,
        ..Default::default()
    })
}

/// Adds permanent ARP entries.
pub fn add_arp_neighbors(neighbors: &[ARPNeighbor]) -> AgentResult<()> {
    for neighbor in neighbors {
        let ip = neighbor
            .toIPAddress
            .as_ref()
            .ok_or_else(|| AgentError::invalid("ARP neighbor without toIPAddress"))?;
        let address = ipv4("toIPAddress", &ip.address)?;
        let mac = netcfg::parse_mac(&neighbor.lladdr).ok_or_else(|| {
            AgentError::invalid(format!("lladdr '{}' is not a MAC address", neighbor.lladdr))
        })?;
        netcfg::add_arp(&neighbor.device, address, mac).map_err(|e| {
            AgentError::internal(format!(
                "ARP entry {} on {}: {e}",
                ip.address, neighbor.device
            ))
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_is_listed() {
        let interfaces = list_interfaces().unwrap();
        let lo = interfaces.iter().find(|i| i.name == "lo").expect("lo");
        // A test host may leave lo unconfigured; where it has an IPv4 address it is 127/8.
        for address in lo
            .IPAddresses
            .iter()
            .filter(|a| a.family.enum_value() == Ok(IPFamily::v4))
        {
            assert_eq!(
                (address.address.as_str(), address.mask.as_str()),
                ("127.0.0.1", "8")
            );
        }
    }

    #[test]
    fn bad_routes_and_neighbors_are_named() {
        let route = Route {
            dest: "fe80::/64".into(),
            ..Default::default()
        };
        let err = update_routes(&[route]).unwrap_err();
        assert!(err.message.contains("route dest"), "{err}");
        let neighbor = ARPNeighbor {
            toIPAddress: Some(IPAddress {
                address: "10.0.0.1".into(),
                ..Default::default()
            })
            .into(),
            lladdr: "zz".into(),
            ..Default::default()
        };
        assert!(
            add_arp_neighbors(&[neighbor])
                .unwrap_err()
                .message
                .contains("lladdr 'zz'")
        );
        assert_eq!(
            to_route(&netcfg::Route4 {
                dest: [0; 4],
                prefix: 0,
                gateway: Some([10, 0, 0, 1]),
                device: None
            })
            .gateway,
            "10.0.0.1"
        );
    }
}
