//! The OCI image tarballs of `make images` are accepted by a real containerd (needs root,
//! containerd + runc from `make setup`, and `make images`): a private containerd imports
//! both architectures' busybox and pause images, and runc runs the native busybox.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kvm_host::artifacts;
use kvm_host::testing::kvm_required;

/// A containerd with its config, root, state and socket in a temp dir; stopped and
/// cleaned up on drop.
struct PrivateContainerd {
    dir: PathBuf,
    child: Child,
    socket: PathBuf,
}

impl PrivateContainerd {
    fn start() -> Self {
        let dir = std::env::temp_dir().join(format!("kata-rv-ctrd-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let socket = dir.join("containerd.sock");
        let config = format!(
            "version = 2\nroot = \"{d}/root\"\nstate = \"{d}/state\"\n\
             disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
             [grpc]\n  address = \"{s}\"\n[ttrpc]\n  address = \"{s}.ttrpc\"\n",
            d = dir.display(),
            s = socket.display()
        );
        std::fs::write(dir.join("config.toml"), config).unwrap();
        let log = std::fs::File::create(dir.join("containerd.log")).unwrap();
        let child = Command::new("containerd")
            .arg("--config")
            .arg(dir.join("config.toml"))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("starting containerd (run `make setup`)");
        let ctrd = PrivateContainerd { dir, child, socket };
        let start = Instant::now();
        while ctrd.ctr(&["version"]).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "containerd did not come up: {}",
                ctrd.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        ctrd
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("containerd.log")).unwrap_or_default()
    }

    fn ctr(&self, args: &[&str]) -> Result<String, String> {
        let out = Command::new("ctr")
            .arg("--address")
            .arg(&self.socket)
            .args(["--namespace", "kata-rv-test"])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| e.to_string())?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        if out.status.success() {
            Ok(text)
        } else {
            Err(text)
        }
    }
}

impl Drop for PrivateContainerd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Snapshot mounts of a killed containerd may remain: unmount before removing.
        if let Ok(mounts) = std::fs::read_to_string("/proc/self/mounts") {
            let prefix = self.dir.display().to_string();
            let mut targets: Vec<&str> = mounts
                .lines()
                .filter_map(|l| l.split_whitespace().nth(1))
                .filter(|t| t.starts_with(&prefix))
                .collect();
            targets.sort_by_key(|t| std::cmp::Reverse(t.len()));
            for t in targets {
                let _ = Command::new("umount").arg("-l").arg(t).status();
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn image(name: &str) -> Option<PathBuf> {
    let path = artifacts::project_root().join("out/images").join(name);
    path.is_file().then_some(path)
}

#[test]
fn containerd_imports_the_test_images_and_runc_runs_busybox() {
    let test = "containerd_imports_the_test_images_and_runc_runs_busybox";
    let names = [
        "busybox-riscv64.tar",
        "busybox-x86_64.tar",
        "pause-riscv64.tar",
        "pause-x86_64.tar",
    ];
    let images: Vec<Option<PathBuf>> = names.iter().map(|n| image(n)).collect();
    let root = nix::unistd::geteuid().is_root();
    let tools = Path::new("/usr/bin/containerd").exists() && Path::new("/usr/bin/ctr").exists();
    if images.iter().any(Option::is_none) || !root || !tools {
        let why = format!(
            "needs root, containerd/ctr (make setup) and out/images (make images); root={root} tools={tools}"
        );
        assert!(!kvm_required(), "{test}: {why}");
        eprintln!("SKIPPED {test}: {why}");
        return;
    }
    let ctrd = PrivateContainerd::start();
    for path in images.iter().flatten() {
        let p = path.display().to_string();
        ctrd.ctr(&["images", "import", "--all-platforms", &p])
            .unwrap_or_else(|e| panic!("ctr images import {p}: {e}"));
    }
    let list = ctrd.ctr(&["images", "ls"]).unwrap();
    for (name, platforms) in [
        (
            "docker.io/library/busybox:latest",
            ["linux/amd64", "linux/riscv64"],
        ),
        (
            "registry.k8s.io/pause:3.6",
            ["linux/amd64", "linux/riscv64"],
        ),
    ] {
        let line = list
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("{name} not imported:\n{list}"));
        // The second import of a name replaces the first; the last one imported wins.
        assert!(platforms.iter().any(|p| line.contains(p)), "{name}: {line}");
    }
    // Re-import the native busybox so the name points at it, unpack, and run it with runc.
    let native = images[1].as_ref().unwrap().display().to_string();
    ctrd.ctr(&["images", "import", &native]).unwrap();
    let out = ctrd
        .ctr(&[
            "run",
            "--rm",
            "docker.io/library/busybox:latest",
            "kata-rv-image-test",
            "sh",
            "-c",
            "echo hello-from-busybox; ls /bin | wc -l",
        ])
        .unwrap_or_else(|e| panic!("ctr run: {e}\ncontainerd log:\n{}", ctrd.log()));
    assert!(out.contains("hello-from-busybox"), "{out}");
    let applets: usize = out.lines().last().unwrap().trim().parse().unwrap();
    assert!(applets > 50, "busybox applet links in /bin: {applets}");
}
