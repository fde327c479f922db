//! The real shim binary's `start` and `-info`, fed byte for byte what containerd 1.6–2.2
//! and 2.3+ write on stdin, and answered as containerd would read it: each start prints
//! an address that serves the task API, hands the configuration path of the runtime
//! options to the server, and a start that fails leaves no process, socket or file.
//! Needs no VM; the starts that use containerd's default socket directory need root.

use std::io::Write;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::{CodedInputStream, CodedOutputStream, Message};
use containerd_shim_protos::shim::shim::{ConnectRequest, ShutdownRequest};
use containerd_shim_protos::shim_sync::{Client, TaskClient};
use containerd_shim_protos::types::introspection::RuntimeInfo;

const SHIM: &str = env!("CARGO_BIN_EXE_containerd-shim-kata-v2");
const START_CONFIG_ENV: &str = "KATA_RV_START_CONFIG_PATH";

/// A scratch world: a bundle, a configuration, containerd's ttrpc socket (accepting,
/// never answering: the shim only connects to publish), a socket directory.
struct World {
    dir: PathBuf,
    config: PathBuf,
    _events: UnixListener,
}

impl World {
    fn new(name: &str) -> Self {
        // Short: the socket path (dir/s/<64 hex>) must fit a sockaddr_un.
        let dir = std::env::temp_dir().join(format!("ksb-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("bundle/rootfs")).unwrap();
        std::fs::create_dir_all(dir.join("s")).unwrap();
        std::fs::write(
            dir.join("bundle/config.json"),
            r#"{"ociVersion":"1.0.2","process":{"user":{"uid":0,"gid":0},"args":["true"],"cwd":"/"},"root":{"path":"rootfs"}}"#,
        )
        .unwrap();
        let config = dir.join("configuration.toml");
        std::fs::write(
            &config,
            "[hypervisor.dragonball]\nkernel = \"/k\"\ninitrd = \"/i\"\n[agent.kata]\n[runtime]\n",
        )
        .unwrap();
        let events = UnixListener::bind(dir.join("containerd.sock.ttrpc")).unwrap();
        Self {
            dir,
            config,
            _events: events,
        }
    }

    fn ttrpc(&self) -> String {
        self.dir.join("containerd.sock.ttrpc").display().to_string()
    }

    /// containerd's gRPC address: unique per world, so the socket hash is too.
    fn grpc(&self) -> String {
        self.dir.join("containerd.sock").display().to_string()
    }

    fn bundle(&self) -> PathBuf {
        self.dir.join("bundle")
    }

    /// `… -namespace ns -id id start` with `stdin`.
    fn start(&self, namespace: &str, id: &str, stdin: &[u8]) -> std::process::Output {
        let mut child = Command::new(SHIM)
            .args(["-namespace", namespace, "-address", &self.grpc()])
            .args(["-publish-binary", "/usr/bin/containerd", "-id", id, "start"])
            .current_dir(self.bundle())
            .env("TTRPC_ADDRESS", self.ttrpc())
            .env_remove("KATA_CONF_FILE")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(stdin).unwrap();
        child.wait_with_output().unwrap()
    }

    /// Shim processes started for this world (their -address names it).
    fn shim_processes(&self) -> Vec<u32> {
        let needle = self.grpc();
        std::fs::read_dir("/proc")
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
            .filter(|pid| {
                std::fs::read(format!("/proc/{pid}/cmdline"))
                    .map(|c| String::from_utf8_lossy(&c).contains(&needle))
                    .unwrap_or(false)
            })
            .collect()
    }
}

impl Drop for World {
    fn drop(&mut self) {
        for pid in self.shim_processes() {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn needs_root(test: &str) -> bool {
    if nix::unistd::geteuid().is_root() {
        return false;
    }
    assert!(
        std::env::var("KATA_TEST_REQUIRE_KVM").as_deref() != Ok("1"),
        "{test} needs root"
    );
    eprintln!("SKIPPED {test}: needs root (containerd's socket directory)");
    true
}

/// `runtimeoptions.v1.Options { config_path = 2 }` in an `Any`, as containerd sends it.
fn runtime_options(config_path: &Path) -> Any {
    let mut value = Vec::new();
    {
        let mut out = CodedOutputStream::vec(&mut value);
        out.write_string(2, &config_path.display().to_string())
            .unwrap();
        out.flush().unwrap();
    }
    Any {
        type_url: "runtimeoptions.v1.Options".into(),
        value,
        ..Default::default()
    }
}

/// containerd 2.3+'s `BootstrapParams`, field by field.
fn bootstrap_params(world: &World, namespace: &str, id: &str, options: Option<&Any>) -> Vec<u8> {
    let mut bytes = Vec::new();
    {
        let mut out = CodedOutputStream::vec(&mut bytes);
        out.write_string(1, id).unwrap();
        out.write_string(2, namespace).unwrap();
        out.write_int32(3, -4).unwrap();
        out.write_string(4, "2.3.4").unwrap();
        out.write_string(5, &world.ttrpc()).unwrap();
        out.write_string(6, &world.grpc()).unwrap();
        out.write_string(7, "/usr/bin/containerd").unwrap();
        if let Some(any) = options {
            let mut extension = Vec::new();
            {
                let mut inner = CodedOutputStream::vec(&mut extension);
                inner
                    .write_bytes(1, &any.write_to_bytes().unwrap())
                    .unwrap();
                inner.flush().unwrap();
            }
            out.write_bytes(8, &extension).unwrap();
        }
        out.write_string(9, &world.dir.join("s").display().to_string())
            .unwrap();
        out.flush().unwrap();
    }
    bytes
}

/// `BootstrapResult` as containerd decodes it: (version, address, protocol).
fn decode_result(bytes: &[u8]) -> (i32, String, String) {
    let mut input = CodedInputStream::from_bytes(bytes);
    let (mut version, mut address, mut protocol) = (0, String::new(), String::new());
    while let Some(tag) = input.read_raw_tag_or_eof().unwrap() {
        match tag >> 3 {
            1 => version = input.read_int32().unwrap(),
            2 => address = input.read_string().unwrap(),
            3 => protocol = input.read_string().unwrap(),
            other => panic!("unexpected field {other}"),
        }
    }
    (version, address, protocol)
}

/// Connects to `address`, checks the task API answers, returns the server's pid, and
/// shuts it down (no container: it exits and removes its socket).
fn serve_then_shutdown(address: &str) -> u32 {
    let client = Client::connect(address).expect("connecting to the printed address");
    let task = TaskClient::new(client);
    let context = || {
        containerd_shim_protos::ttrpc::context::with_timeout(
            Duration::from_secs(10).as_nanos() as i64
        )
    };
    let connected = task
        .connect(context(), &ConnectRequest::new())
        .expect("Task.Connect");
    let pid = connected.shim_pid;
    assert!(pid > 0);
    let _ = task.shutdown(context(), &ShutdownRequest::new());
    pid
}

fn server_env(pid: u32, name: &str) -> Option<String> {
    let environ = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
    environ
        .split(|b| *b == 0)
        .filter_map(|kv| std::str::from_utf8(kv).ok())
        .find_map(|kv| kv.strip_prefix(&format!("{name}=")).map(str::to_string))
}

fn wait_gone(world: &World, socket: &str) {
    for _ in 0..200 {
        if world.shim_processes().is_empty() && !Path::new(socket).exists() {
            return;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    panic!(
        "left behind: processes {:?}, socket {socket} exists: {}",
        world.shim_processes(),
        Path::new(socket).exists()
    );
}

/// Checks one successful start; returns the server's START_CONFIG_ENV.
fn check_started(world: &World, out: &std::process::Output, bootstrap: bool) -> Option<String> {
    assert!(
        out.status.success(),
        "start failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let address = if bootstrap {
        let (version, address, protocol) = decode_result(&out.stdout);
        assert_eq!((version, protocol.as_str()), (2, "ttrpc"));
        let in_dir = format!("unix://{}/", world.dir.join("s").display());
        assert!(address.starts_with(&in_dir), "{address} not in {in_dir}");
        address
    } else {
        let address = String::from_utf8(out.stdout.clone()).unwrap();
        assert!(
            address.starts_with("unix:///run/containerd/s/"),
            "{address}"
        );
        address
    };
    assert_eq!(
        std::fs::read_to_string(world.bundle().join("address")).unwrap(),
        address
    );
    let servers = world.shim_processes();
    assert_eq!(servers.len(), 1, "one server process: {servers:?}");
    let config = server_env(servers[0], START_CONFIG_ENV);
    assert_eq!(serve_then_shutdown(&address), servers[0]);
    wait_gone(world, address.trim_start_matches("unix://"));
    config
}

#[test]
fn containerd_1_6_to_2_2_with_nothing_on_stdin() {
    if needs_root("containerd_1_6_to_2_2_with_nothing_on_stdin") {
        return;
    }
    let world = World::new("empty");
    let out = world.start("default", "c1", b"");
    assert_eq!(check_started(&world, &out, false), None);
}

#[test]
fn containerd_1_6_to_2_2_with_runtime_options() {
    if needs_root("containerd_1_6_to_2_2_with_runtime_options") {
        return;
    }
    let world = World::new("opts");
    let any = runtime_options(&world.config);
    let out = world.start("default", "c1", &any.write_to_bytes().unwrap());
    assert_eq!(
        check_started(&world, &out, false),
        Some(world.config.display().to_string())
    );
}

#[test]
fn containerd_2_3_bootstrap_params_in_default() {
    let world = World::new("bdef");
    let out = world.start(
        "default",
        "c1",
        &bootstrap_params(&world, "default", "c1", None),
    );
    assert_eq!(check_started(&world, &out, true), None);
}

#[test]
fn containerd_2_3_bootstrap_params_in_k8s_io_with_options() {
    let world = World::new("bk8s");
    let any = runtime_options(&world.config);
    let out = world.start(
        "k8s.io",
        "pod-1",
        &bootstrap_params(&world, "k8s.io", "pod-1", Some(&any)),
    );
    assert_eq!(
        check_started(&world, &out, true),
        Some(world.config.display().to_string())
    );
}

#[test]
fn a_failed_start_names_the_culprit_and_leaves_nothing() {
    let world = World::new("bbad");
    let missing = world.dir.join("no-such-configuration.toml");
    let any = runtime_options(&missing);
    let params = bootstrap_params(&world, "k8s.io", "pod-2", Some(&any));
    let out = world.start("k8s.io", "pod-2", &params);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&missing.display().to_string()), "{stderr}");
    // Garbage on stdin is refused too.
    let out = world.start("k8s.io", "pod-2", &[0xff, 0xff, 0x01]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("k8s.io/pod-2"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(world.shim_processes().is_empty());
    assert!(!world.bundle().join("address").exists());
    assert_eq!(std::fs::read_dir(world.dir.join("s")).unwrap().count(), 0);
}

#[test]
fn info_answers_without_a_ttrpc_address() {
    let world = World::new("info");
    for stdin in [
        Vec::new(),
        runtime_options(&world.config).write_to_bytes().unwrap(),
    ] {
        let mut child = Command::new(SHIM)
            .arg("-info")
            .env_remove("TTRPC_ADDRESS")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(&stdin).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let info = RuntimeInfo::parse_from_bytes(&out.stdout).expect("RuntimeInfo");
        assert_eq!(info.name, "io.containerd.kata.v2");
        assert!(!info.version.version.is_empty());
        assert_eq!(info.options.is_some(), !stdin.is_empty());
        assert_eq!(
            info.features.type_url,
            "types.containerd.io/opencontainers/runtime-spec/1/features/Features"
        );
        let features: serde_json::Value = serde_json::from_slice(&info.features.value).unwrap();
        let namespaces = features["linux"]["namespaces"].as_array().unwrap();
        assert!(!namespaces.iter().any(|n| n == "network" || n == "user"));
    }
}
