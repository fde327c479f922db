//! The pod network against a real kernel (root): a network namespace set up the way CNI's
//! bridge plugin leaves it (a veth with an address and a default route), a tap standing
//! in for the VMM's, then scan, connect and disconnect, checked with `ip` and `tc`.

mod support;

use std::process::Command;

use support::has_root;

use kata_resource::network::{self, TAP_NAME};

fn run(args: &[&str]) -> String {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A namespace removed on drop.
struct Netns(String);

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

#[tokio::test]
async fn a_cni_namespace_is_scanned_joined_to_the_tap_and_released() {
    if !has_root() {
        return;
    }
    let name = format!("kata-net-test-{}", std::process::id());
    run(&["ip", "netns", "add", &name]);
    let ns = Netns(name.clone());
    let ip = |args: &[&str]| {
        let mut all = vec!["ip", "-n", ns.0.as_str()];
        all.extend_from_slice(args);
        run(&all)
    };
    ip(&[
        "link", "add", "eth0", "type", "veth", "peer", "name", "peer0",
    ]);
    ip(&[
        "link",
        "set",
        "eth0",
        "address",
        "0a:58:0a:58:00:05",
        "mtu",
        "1450",
        "up",
    ]);
    ip(&["link", "set", "peer0", "up"]);
    ip(&["addr", "add", "10.88.0.5/16", "dev", "eth0"]);
    ip(&["route", "add", "default", "via", "10.88.0.1", "dev", "eth0"]);
    let path = std::path::PathBuf::from(format!("/var/run/netns/{name}"));

    // Two interfaces besides loopback: refused by name.
    let err = network::scan(&path).await.unwrap_err().to_string();
    assert!(err.contains("eth0") && err.contains("peer0"), "{err}");
    ip(&["link", "set", "peer0", "netns", "1"]);
    let _peer = scopeguard(|| {
        let _ = Command::new("ip").args(["link", "del", "peer0"]).status();
    });

    let pod = network::scan(&path)
        .await
        .unwrap()
        .expect("the CNI interface");
    assert_eq!(pod.interface.name, "eth0");
    assert_eq!(pod.interface.mac, "0a:58:0a:58:00:05");
    assert_eq!(pod.interface.mtu, 1450);
    assert_eq!(
        pod.interface.addresses,
        vec![("10.88.0.5".parse().unwrap(), 16)]
    );
    assert_eq!(pod.routes.len(), 1, "{:?}", pod.routes);
    assert_eq!(pod.routes[0].destination, None);
    assert_eq!(pod.routes[0].gateway, Some("10.88.0.1".parse().unwrap()));

    // The VMM's tap: the test makes a persistent one in its place.
    ip(&["tuntap", "add", "mode", "tap", TAP_NAME]);
    network::connect(&pod).await.unwrap();
    let tap = ip(&["link", "show", TAP_NAME]);
    assert!(tap.contains("mtu 1450") && tap.contains(",UP"), "{tap}");
    for (from, to) in [("eth0", TAP_NAME), (TAP_NAME, "eth0")] {
        let filters = run(&[
            "ip", "netns", "exec", &name, "tc", "filter", "show", "dev", from, "ingress",
        ]);
        assert!(
            filters.contains("protocol all")
                && filters.contains("mirred")
                && filters.contains(&format!("Redirect to device {to}")),
            "{from}: {filters}"
        );
    }

    network::disconnect(&path, "eth0").await.unwrap();
    let links = ip(&["link", "show"]);
    assert!(!links.contains(TAP_NAME), "{links}");
    let qdiscs = run(&[
        "ip", "netns", "exec", &name, "tc", "qdisc", "show", "dev", "eth0",
    ]);
    assert!(!qdiscs.contains("ingress"), "{qdiscs}");
    // Again, and on a namespace that is gone: nothing to do.
    network::disconnect(&path, "eth0").await.unwrap();
    drop(ns);
    network::disconnect(&path, "eth0").await.unwrap();
}

/// Runs `f` on drop.
fn scopeguard(f: impl FnOnce()) -> impl Drop {
    struct Guard<F: FnOnce()>(Option<F>);
    impl<F: FnOnce()> Drop for Guard<F> {
        fn drop(&mut self) {
            if let Some(f) = self.0.take() {
                f();
            }
        }
    }
    Guard(Some(f))
}
