//! The pod's network in Kata's `tcfilter` model. containerd's CNI puts a veth (with the
//! pod's address and routes) in the pod's network namespace; the VMM opens a tap there
//! for virtio-net; this module reads what CNI configured ([`scan`]), joins the tap and
//! the veth with tc mirred redirects both ways ([`connect`]), and removes them again
//! ([`disconnect`]). The guest's interface gets the veth's MAC, address and routes, so the
//! pod is reached at its CNI address. Every netlink call runs in a thread that entered the
//! namespace: the shim's own threads never change namespace.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use futures_util::TryStreamExt;
use rtnetlink::packet_route::address::AddressAttribute;
use rtnetlink::packet_route::link::{LinkAttribute, LinkLayerType, LinkMessage};
use rtnetlink::packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteProtocol, RouteScope,
};
use rtnetlink::packet_route::tc::TcHandle;
use rtnetlink::{Handle, LinkUnspec, RouteMessageBuilder};

/// The name of the tap the VMM opens in the pod's namespace (Kata's).
pub const TAP_NAME: &str = "tap0_kata";

/// ETH_P_ALL: the redirect filters match every protocol (tc takes it in network byte
/// order).
const ETH_P_ALL: u16 = 0x0003;

/// The pod interface CNI configured.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodInterface {
    /// Its name in the namespace (CNI's `eth0`).
    pub name: String,
    /// Its MAC, `aa:bb:cc:dd:ee:ff`: the guest's interface takes it.
    pub mac: String,
    /// Its MTU.
    pub mtu: u32,
    /// Its IPv4 addresses with their prefix lengths.
    pub addresses: Vec<(Ipv4Addr, u8)>,
}

/// An IPv4 route of the pod interface (routes the kernel derives from an address are
/// left out: the guest's kernel derives them too).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodRoute {
    /// Destination network; None for the default route.
    pub destination: Option<(Ipv4Addr, u8)>,
    /// Next hop.
    pub gateway: Option<Ipv4Addr>,
    /// Preferred source address.
    pub source: Option<Ipv4Addr>,
    /// Whether the destination is on the link (no gateway).
    pub on_link: bool,
}

/// A pod's network as the sandbox uses it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodNetwork {
    /// The namespace containerd created (`/var/run/netns/cni-…`).
    pub netns: PathBuf,
    /// Its interface.
    pub interface: PodInterface,
    /// Its routes.
    pub routes: Vec<PodRoute>,
    /// The tap the VMM opens.
    pub tap: String,
}

/// What went wrong with a pod's network.
#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    /// The namespace could not be entered.
    #[error("network namespace {netns}: entering it: {source}")]
    Enter {
        /// The namespace.
        netns: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A netlink request failed.
    #[error("network namespace {netns}: {what}: {source}")]
    Netlink {
        /// The namespace.
        netns: PathBuf,
        /// The request.
        what: String,
        /// Why.
        #[source]
        source: rtnetlink::Error,
    },
    /// The namespace holds something this runtime cannot give the VM.
    #[error("network namespace {netns}: {reason}")]
    Unsupported {
        /// The namespace.
        netns: PathBuf,
        /// What and why.
        reason: String,
    },
}

/// Opens `path` as a network namespace other than this process's own: without blocking
/// (a FIFO there must not hang the shim), refusing anything that is not a namespace
/// file, and the host's own namespace, whose interfaces are not the pod's to redirect.
pub fn open_netns(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    let invalid =
        |why: &str| std::io::Error::new(std::io::ErrorKind::InvalidInput, why.to_string());
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)?;
    let fs = nix::sys::statfs::fstatfs(&file)?;
    if fs.filesystem_type() != nix::sys::statfs::NSFS_MAGIC {
        return Err(invalid("not a namespace file (nsfs)"));
    }
    let own = std::fs::metadata("/proc/self/ns/net")?;
    let theirs = file.metadata()?;
    if (own.dev(), own.ino()) == (theirs.dev(), theirs.ino()) {
        return Err(invalid(
            "it is the host's own network namespace: a pod network is a namespace of its own",
        ));
    }
    Ok(file)
}

/// Runs `work` with a netlink handle inside network namespace `netns`, on a thread of its
/// own that entered it (and ends with the work).
async fn in_netns<T, F, Fut>(netns: &Path, work: F) -> Result<T, NetworkError>
where
    T: Send + 'static,
    F: FnOnce(Handle, PathBuf) -> Fut + Send + 'static,
    Fut: Future<Output = Result<T, NetworkError>>,
{
    let path = netns.to_path_buf();
    let enter = {
        let path = path.clone();
        move |source: std::io::Error| NetworkError::Enter {
            netns: path.clone(),
            source,
        }
    };
    let (reply, answer) = tokio::sync::oneshot::channel();
    let thread_enter = enter.clone();
    // From the launcher: setns and netlink stay outside the shim's filter.
    kata_launcher::spawn_thread("netns", move || {
        let result = (|| {
            let file = open_netns(&path).map_err(&thread_enter)?;
            nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
                .map_err(|e| thread_enter(e.into()))?;
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(&thread_enter)?;
            runtime.block_on(async {
                let (connection, handle, _) = rtnetlink::new_connection().map_err(&thread_enter)?;
                tokio::spawn(connection);
                work(handle, path.clone()).await
            })
        })();
        let _ = reply.send(result);
    })
    .map_err(&enter)?;
    answer
        .await
        .map_err(|_| enter(std::io::Error::other("the namespace thread ended early")))?
}

fn netlink(netns: &Path, what: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> NetworkError {
    let netns = netns.to_path_buf();
    let what = what.into();
    move |source| NetworkError::Netlink {
        netns,
        what,
        source,
    }
}

fn link_name(link: &LinkMessage) -> String {
    link.attributes
        .iter()
        .find_map(|a| match a {
            LinkAttribute::IfName(name) => Some(name.clone()),
            _ => None,
        })
        .unwrap_or_default()
}

fn format_mac(bytes: &[u8]) -> Option<String> {
    (bytes.len() == 6).then(|| {
        bytes
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(":")
    })
}

fn ipv4(address: &RouteAddress) -> Option<Ipv4Addr> {
    match address {
        RouteAddress::Inet(ip) => Some(*ip),
        _ => None,
    }
}

/// The pod interface among `links`: the Ethernet one that is not the VMM's tap (tunnel
/// devices a kernel puts in every namespace, like `sit0`, and loopback are not). None
/// when there is none (a namespace with loopback only).
fn pod_link<'a>(
    links: &'a [LinkMessage],
    netns: &Path,
) -> Result<Option<&'a LinkMessage>, NetworkError> {
    let candidates: Vec<&LinkMessage> = links
        .iter()
        .filter(|l| l.header.link_layer_type == LinkLayerType::Ether && link_name(l) != TAP_NAME)
        .collect();
    match candidates.as_slice() {
        [] => Ok(None),
        [one] => Ok(Some(one)),
        many => Err(NetworkError::Unsupported {
            netns: netns.to_path_buf(),
            reason: format!(
                "it has {} interfaces ({}): one pod interface is supported",
                many.len(),
                many.iter()
                    .map(|l| link_name(l))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }),
    }
}

/// Reads the pod interface, its IPv4 addresses and routes from `netns`. None when the
/// namespace has no interface besides loopback (nothing to give the VM).
pub async fn scan(netns: &Path) -> Result<Option<PodNetwork>, NetworkError> {
    in_netns(netns, |handle, netns| async move {
        let links: Vec<LinkMessage> = handle
            .link()
            .get()
            .execute()
            .try_collect()
            .await
            .map_err(netlink(&netns, "listing links"))?;
        let Some(link) = pod_link(&links, &netns)? else {
            return Ok(None);
        };
        let name = link_name(link);
        let index = link.header.index;
        let unsupported = |reason: String| NetworkError::Unsupported {
            netns: netns.clone(),
            reason,
        };
        let mac = link
            .attributes
            .iter()
            .find_map(|a| match a {
                LinkAttribute::Address(bytes) => format_mac(bytes),
                _ => None,
            })
            .ok_or_else(|| unsupported(format!("interface {name} has no Ethernet address")))?;
        let mtu = link
            .attributes
            .iter()
            .find_map(|a| match a {
                LinkAttribute::Mtu(mtu) => Some(*mtu),
                _ => None,
            })
            .unwrap_or(1500);
        let mut addresses = Vec::new();
        let mut listed = handle.address().get().execute();
        while let Some(message) = listed
            .try_next()
            .await
            .map_err(netlink(&netns, "listing addresses"))?
        {
            if message.header.index != index {
                continue;
            }
            for attribute in &message.attributes {
                if let AddressAttribute::Address(IpAddr::V4(ip)) = attribute {
                    addresses.push((*ip, message.header.prefix_len));
                }
            }
        }
        let mut routes = Vec::new();
        let mut listed = handle
            .route()
            .get(RouteMessageBuilder::<Ipv4Addr>::new().build())
            .execute();
        while let Some(message) = listed
            .try_next()
            .await
            .map_err(netlink(&netns, "listing routes"))?
        {
            let attributes = &message.attributes;
            let table = attributes
                .iter()
                .find_map(|a| match a {
                    RouteAttribute::Table(t) => Some(*t),
                    _ => None,
                })
                .unwrap_or(u32::from(message.header.table));
            let oif = attributes.iter().find_map(|a| match a {
                RouteAttribute::Oif(i) => Some(*i),
                _ => None,
            });
            if table != u32::from(RouteHeader::RT_TABLE_MAIN)
                || oif != Some(index)
                || message.header.protocol == RouteProtocol::Kernel
            {
                continue;
            }
            let destination = attributes.iter().find_map(|a| match a {
                RouteAttribute::Destination(d) => ipv4(d),
                _ => None,
            });
            let prefix = message.header.destination_prefix_length;
            routes.push(PodRoute {
                destination: destination.filter(|_| prefix > 0).map(|d| (d, prefix)),
                gateway: attributes.iter().find_map(|a| match a {
                    RouteAttribute::Gateway(g) => ipv4(g),
                    _ => None,
                }),
                source: attributes.iter().find_map(|a| match a {
                    RouteAttribute::PrefSource(s) => ipv4(s),
                    _ => None,
                }),
                on_link: message.header.scope == RouteScope::Link,
            });
        }
        Ok(Some(PodNetwork {
            netns: netns.clone(),
            interface: PodInterface {
                name,
                mac,
                mtu,
                addresses,
            },
            routes,
            tap: TAP_NAME.to_string(),
        }))
    })
    .await
}

async fn link_index(
    handle: &Handle,
    netns: &Path,
    name: &str,
) -> Result<Option<u32>, NetworkError> {
    let mut links = handle.link().get().match_name(name.to_string()).execute();
    match links.try_next().await {
        Ok(link) => Ok(link.map(|l| l.header.index)),
        // The kernel answers ENODEV for a name it does not know.
        Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::ENODEV => Ok(None),
        Err(e) => Err(netlink(netns, format!("looking up {name}"))(e)),
    }
}

/// Joins the VMM's tap (already open) and the pod interface: tap up with the interface's
/// MTU, then an ingress qdisc on each with a filter redirecting everything to the other.
pub async fn connect(network: &PodNetwork) -> Result<(), NetworkError> {
    let network = network.clone();
    in_netns(&network.netns.clone(), move |handle, netns| async move {
        let missing = |name: &str| NetworkError::Unsupported {
            netns: netns.clone(),
            reason: format!("interface {name} is not there"),
        };
        let veth = link_index(&handle, &netns, &network.interface.name)
            .await?
            .ok_or_else(|| missing(&network.interface.name))?;
        let tap = link_index(&handle, &netns, &network.tap)
            .await?
            .ok_or_else(|| missing(&network.tap))?;
        handle
            .link()
            .set(
                LinkUnspec::new_with_index(tap)
                    .mtu(network.interface.mtu)
                    .up()
                    .build(),
            )
            .execute()
            .await
            .map_err(netlink(&netns, format!("bringing {} up", network.tap)))?;
        for (from, to, name) in [
            (veth, tap, &network.interface.name),
            (tap, veth, &network.tap),
        ] {
            let index = i32::try_from(from).map_err(|_| missing(name))?;
            handle
                .qdisc()
                .add(index)
                .ingress()
                .execute()
                .await
                .map_err(netlink(
                    &netns,
                    format!("adding the ingress qdisc of {name}"),
                ))?;
            handle
                .traffic_filter(index)
                .add()
                .parent(u32::from(TcHandle::INGRESS))
                .protocol(ETH_P_ALL.to_be())
                .redirect(to)
                .map_err(netlink(&netns, format!("building the redirect of {name}")))?
                .execute()
                .await
                .map_err(netlink(&netns, format!("adding the redirect of {name}")))?;
        }
        Ok(())
    })
    .await
}

/// Undoes [`connect`] (and removes the tap if the VMM left it): the ingress qdiscs go
/// with their filters. A namespace or interface that is already gone is not an error.
pub async fn disconnect(netns: &Path, interface: &str) -> Result<(), NetworkError> {
    if !netns.exists() {
        return Ok(());
    }
    let interface = interface.to_string();
    in_netns(netns, move |handle, netns| async move {
        // Every removal is tried; the first failure is reported.
        let mut failure = None;
        match link_index(&handle, &netns, TAP_NAME).await {
            Ok(Some(tap)) => {
                if let Err(e) = handle.link().del(tap).execute().await {
                    failure.get_or_insert(netlink(&netns, format!("deleting {TAP_NAME}"))(e));
                }
            }
            Ok(None) => {}
            Err(e) => {
                failure.get_or_insert(e);
            }
        }
        if let Some(veth) = link_index(&handle, &netns, &interface).await? {
            let index = i32::try_from(veth).unwrap_or(0);
            let mut request = handle.qdisc().del(index);
            request.message_mut().header.parent = TcHandle::INGRESS;
            request.message_mut().header.handle = TcHandle::from(0xffff_0000);
            match request.execute().await {
                Ok(()) => {}
                // No ingress qdisc: nothing was connected.
                Err(rtnetlink::Error::NetlinkError(e))
                    if e.raw_code() == -libc::EINVAL || e.raw_code() == -libc::ENOENT => {}
                Err(e) => {
                    failure.get_or_insert(netlink(
                        &netns,
                        format!("removing the ingress qdisc of {interface}"),
                    )(e));
                }
            }
        }
        failure.map_or(Ok(()), Err)
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(name: &str, kind: LinkLayerType) -> LinkMessage {
        let mut message = LinkMessage::default();
        message.header.link_layer_type = kind;
        message.attributes.push(LinkAttribute::IfName(name.into()));
        message
    }

    #[test]
    fn the_pod_link_is_the_one_besides_loopback_and_the_tap() {
        let netns = Path::new("/var/run/netns/cni-1");
        let links = [
            link("lo", LinkLayerType::Loopback),
            link("sit0", LinkLayerType::Sit),
            link(TAP_NAME, LinkLayerType::Ether),
            link("eth0", LinkLayerType::Ether),
        ];
        let found = pod_link(&links, netns).unwrap().unwrap();
        assert_eq!(link_name(found), "eth0");
        assert!(pod_link(&links[..3], netns).unwrap().is_none());
        let two = [
            link("eth0", LinkLayerType::Ether),
            link("eth1", LinkLayerType::Ether),
        ];
        let err = pod_link(&two, netns).unwrap_err().to_string();
        assert!(err.contains("cni-1") && err.contains("eth0, eth1"), "{err}");
    }

    #[test]
    fn macs_are_six_bytes() {
        assert_eq!(
            format_mac(&[0x0a, 0x58, 0x0a, 0x58, 0, 0x05]).as_deref(),
            Some("0a:58:0a:58:00:05")
        );
        assert_eq!(format_mac(&[1, 2, 3]), None);
    }

    #[tokio::test]
    async fn what_is_not_a_pod_namespace_is_refused() {
        let own = scan(Path::new("/proc/self/ns/net"))
            .await
            .unwrap_err()
            .to_string();
        assert!(own.contains("host's own network namespace"), "{own}");
        let dir = std::env::temp_dir().join(format!("netns-fifo-{}", std::process::id()));
        nix::unistd::mkfifo(&dir, nix::sys::stat::Mode::S_IRWXU).unwrap();
        let fifo = scan(&dir).await.unwrap_err().to_string();
        std::fs::remove_file(&dir).unwrap();
        assert!(fifo.contains("not a namespace file"), "{fifo}");
    }

    #[tokio::test]
    async fn a_missing_namespace_is_named() {
        let err = scan(Path::new("/nonexistent/netns")).await.unwrap_err();
        assert!(err.to_string().contains("/nonexistent/netns"), "{err}");
        disconnect(Path::new("/nonexistent/netns"), "eth0")
            .await
            .expect("nothing to undo");
    }
}
