//! `containerd-shim-kata-v2 … start` for a CRI pod container: no new shim, the address
//! of its sandbox's shim (the one containerd gets from the sandbox's own `start`), also
//! written to the bundle's `address` file. Needs no VM, no root.

use std::path::PathBuf;
use std::process::Command;

const SHIM: &str = env!("CARGO_BIN_EXE_containerd-shim-kata-v2");

struct Bundle(PathBuf);

impl Bundle {
    fn new(name: &str, annotations: &str) -> Self {
        let dir =
            std::env::temp_dir().join(format!("kata-shim-start-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("rootfs")).unwrap();
        let spec = format!(
            r#"{{"ociVersion":"1.0.2","process":{{"user":{{"uid":0,"gid":0}},"args":["true"],"cwd":"/"}},"root":{{"path":"rootfs"}},"annotations":{{{annotations}}}}}"#
        );
        std::fs::write(dir.join("config.json"), spec).unwrap();
        Bundle(dir)
    }

    fn start(&self, id: &str) -> std::process::Output {
        Command::new(SHIM)
            .args([
                "-namespace",
                "k8s.io",
                "-address",
                "/run/containerd/containerd.sock",
            ])
            .args(["-publish-binary", "/usr/bin/containerd", "-id", id, "start"])
            .current_dir(&self.0)
            .env("TTRPC_ADDRESS", "/run/containerd/containerd.sock.ttrpc")
            .output()
            .expect("running the shim")
    }
}

impl Drop for Bundle {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn a_pod_container_gets_its_sandboxs_address_and_spawns_nothing() {
    let bundle = Bundle::new(
        "pod-container",
        r#""io.kubernetes.cri.container-type":"container","io.kubernetes.cri.sandbox-id":"sandbox-1""#,
    );
    let out = bundle.start("app-1");
    assert!(
        out.status.success(),
        "start: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let expected =
        containerd_shim::socket_address("/run/containerd/containerd.sock", "k8s.io", "sandbox-1");
    assert_eq!(String::from_utf8_lossy(&out.stdout), expected);
    assert_eq!(
        std::fs::read_to_string(bundle.0.join("address")).unwrap(),
        expected
    );
    // The pod container's own id names no socket: no server was started for it.
    let own = containerd_shim::socket_address("/run/containerd/containerd.sock", "k8s.io", "app-1");
    let own_path = own.trim_start_matches("unix://");
    assert!(
        !std::path::Path::new(own_path).exists(),
        "{own_path} exists"
    );
}
