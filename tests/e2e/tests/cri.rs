//! Kubernetes pods through containerd's CRI plugin, driven the way kubelet drives it (a
//! CRI client over gRPC), with runtime class `kata` and, in the same run, `runc` as the
//! baseline. A private containerd (CRI on, CNI bridge + host-local + loopback) runs inside
//! the KVM test host of this architecture; every kata pod is a real microVM joined to its
//! CNI veth by tc redirects. After each pod nothing of it may remain on the host: no shim,
//! no virtiofsd, no mount under /run/kata*, no sandbox dir, no netns, no veth.

use std::collections::{BTreeSet, HashMap};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use hyper_util::rt::TokioIo;
use k8s_cri::v1 as cri;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use kata_rv_e2e::memory_cgroup_dir;
use kvm_host::{Arch, artifacts};
use tonic::transport::{Channel, Endpoint, Uri};

fn arch() -> Arch {
    Arch::native().expect("riscv64 or x86_64")
}

fn out_dir() -> PathBuf {
    artifacts::out_dir(arch())
}

/// The pod subnet of the test's CNI bridge.
const SUBNET: &str = "10.99.0.0/24";
/// The bridge CNI creates on the host (its gateway address is the host's).
const BRIDGE: &str = "kata-cri0";
/// The host's address on [`BRIDGE`].
const GATEWAY: &str = "10.99.0.1";
/// The pause image containerd 1.6 uses by default (`make images` builds it locally).
const PAUSE_IMAGE: &str = "registry.k8s.io/pause:3.6";
const BUSYBOX: &str = "docker.io/library/busybox:latest";

/// The private containerd of this run, CRI on.
struct Containerd {
    dir: PathBuf,
    child: Child,
}

impl Containerd {
    fn socket(&self) -> PathBuf {
        self.dir.join("containerd.sock")
    }

    /// Stops containerd and removes its directory (the instance is a static: no Drop).
    fn stop(&self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let _ = nix::sys::wait::waitpid(pid, None);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn tool(name: &str) -> PathBuf {
    let built = out_dir().join(name);
    if built.exists() {
        built
    } else {
        PathBuf::from(name)
    }
}

/// Where the CNI plugins are: the cross-built ones (riscv64), else Debian's.
fn cni_bin_dir() -> PathBuf {
    let built = out_dir().join("cni");
    if built.join("bridge").exists() {
        built
    } else {
        PathBuf::from("/usr/lib/cni")
    }
}

fn write_configs(dir: &Path) {
    let kata = dir.join("kata.toml");
    std::fs::write(
        &kata,
        format!(
            "[hypervisor.dragonball]\nkernel = \"{}\"\ninitrd = \"{}\"\ndefault_memory = 256\n\
             enable_annotations = [\"default_vcpus\", \"default_memory\"]\n\
             [agent.kata]\nreconnect_timeout_ms = 300000\n[runtime]\n",
            artifacts::kernel(arch()).display(),
            out_dir().join("kata-containers-initrd.img").display()
        ),
    )
    .unwrap();
    let cni_conf = dir.join("cni");
    std::fs::create_dir_all(&cni_conf).unwrap();
    // portmap (hostPort) only where the test host has iptables.
    let portmap = if iptables_dir(dir).is_some() {
        r#", {"type": "portmap", "capabilities": {"portMappings": true}}"#
    } else {
        ""
    };
    std::fs::write(
        cni_conf.join("10-kata-e2e.conflist"),
        format!(
            r#"{{"cniVersion": "1.0.0", "name": "kata-e2e", "plugins": [
                {{"type": "bridge", "bridge": "{BRIDGE}", "isGateway": true, "ipMasq": false,
                  "ipam": {{"type": "host-local", "ranges": [[{{"subnet": "{SUBNET}"}}]],
                           "routes": [{{"dst": "0.0.0.0/0"}}]}}}}{portmap}]}}"#
        ),
    )
    .unwrap();
    let cri = r#"plugins."io.containerd.grpc.v1.cri""#;
    let config = format!(
        "version = 2\nroot = \"{d}/root\"\nstate = \"{d}/state\"\n\
         [grpc]\n  address = \"{d}/containerd.sock\"\n[ttrpc]\n  address = \"{d}/containerd.sock.ttrpc\"\n\
         [{cri}]\n  sandbox_image = \"{PAUSE_IMAGE}\"\n  disable_apparmor = true\n\
         [{cri}.cni]\n  bin_dir = \"{bin}\"\n  conf_dir = \"{d}/cni\"\n\
         [{cri}.containerd]\n  default_runtime_name = \"runc\"\n  snapshotter = \"overlayfs\"\n\
         [{cri}.containerd.runtimes.runc]\n  runtime_type = \"io.containerd.runc.v2\"\n\
         [{cri}.containerd.runtimes.runc.options]\n  NoPivotRoot = {no_pivot}\n\
         [{cri}.containerd.runtimes.kata]\n  runtime_type = \"io.containerd.kata.v2\"\n\
           pod_annotations = [\"io.katacontainers.*\"]\n\
         [{cri}.containerd.runtimes.kata.options]\n  ConfigPath = \"{kata}\"\n",
        d = dir.display(),
        bin = cni_bin_dir().display(),
        kata = kata.display(),
        no_pivot = root_is_initramfs(),
    );
    std::fs::write(dir.join("config.toml"), config).unwrap();
}

/// Debian's legacy iptables, which CNI's portmap drives (the test hosts' kernels have
/// iptables but no nftables compat layer); x86_64's test host has it, riscv64's not.
const IPTABLES_LEGACY: &str = "/usr/sbin/xtables-legacy-multi";

/// A directory, first on containerd's PATH, whose `iptables` tools are the legacy ones;
/// None where the test host has no iptables.
fn iptables_dir(dir: &Path) -> Option<PathBuf> {
    if !Path::new(IPTABLES_LEGACY).exists() {
        return None;
    }
    let bin = dir.join("iptables-bin");
    if !bin.exists() {
        std::fs::create_dir_all(&bin).unwrap();
        for tool in ["iptables", "iptables-save", "iptables-restore", "ip6tables"] {
            std::os::unix::fs::symlink(IPTABLES_LEGACY, bin.join(tool)).unwrap();
        }
    }
    Some(bin)
}

/// The host's per-pod NAT rules (portmap's `CNI-DN-…` chains and the jumps to them, which
/// it adds for a hostPort and removes with the pod), without counters; empty where the
/// host has no iptables. portmap's shared chains (`CNI-HOSTPORT-…`) stay by design.
fn nat_rules() -> Vec<String> {
    let Some(bin) = iptables_dir(&containerd().dir) else {
        return Vec::new();
    };
    let out = Command::new(bin.join("iptables-save"))
        .args(["-t", "nat"])
        .output()
        .expect("iptables-save");
    assert!(out.status.success(), "iptables-save: {}", text(&out.stderr));
    text(&out.stdout)
        .lines()
        .filter(|l| l.contains("CNI-DN-") || l.contains("CNI-SN-"))
        .map(|l| l.split(" [").next().unwrap_or(l).to_string())
        .collect()
}

/// Whether this host runs from its initramfs (the riscv64 test host), where runc cannot
/// pivot_root and must be told so.
fn root_is_initramfs() -> bool {
    nix::sys::statfs::statfs("/").is_ok_and(|fs| {
        // ramfs (no nix constant) or tmpfs.
        fs.filesystem_type().0 == 0x8584_58f6
            || fs.filesystem_type() == nix::sys::statfs::TMPFS_MAGIC
    })
}

fn containerd() -> &'static Containerd {
    static INSTANCE: OnceLock<Containerd> = OnceLock::new();
    INSTANCE.get_or_init(|| {
        let dir = PathBuf::from(format!("/tmp/kata-cri-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        write_configs(&dir);
        let log = std::fs::File::create(dir.join("containerd.log")).unwrap();
        // containerd finds `containerd-shim-kata-v2` (and, on riscv64, the runc shim and
        // runc) by name on its PATH.
        let iptables = iptables_dir(&dir)
            .map(|d| format!("{}:", d.display()))
            .unwrap_or_default();
        let path = format!(
            "{iptables}{}:{}",
            out_dir().display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let mut child = Command::new(tool("containerd"))
            .arg("--config")
            .arg(dir.join("config.toml"))
            .env("PATH", path)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("starting containerd");
        // Serving once `ctr version` answers.
        let started = Instant::now();
        loop {
            let log = || std::fs::read_to_string(dir.join("containerd.log")).unwrap_or_default();
            if let Some(status) = child.try_wait().unwrap() {
                panic!("containerd exited ({status}):\n{}", log());
            }
            let answered = Command::new(tool("ctr"))
                .arg("-a")
                .arg(dir.join("containerd.sock"))
                .arg("version")
                .output()
                .is_ok_and(|o| o.status.success());
            if answered {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "containerd did not start:\n{}",
                log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        let images = out_dir().parent().unwrap().join("images");
        for image in ["busybox", "pause"] {
            let tar = images.join(format!("{image}-{}.tar", arch().name()));
            let out = Command::new(tool("ctr"))
                .arg("-a")
                .arg(dir.join("containerd.sock"))
                .args(["-n", "k8s.io", "images", "import", "--all-platforms"])
                .arg(&tar)
                .output()
                .expect("ctr");
            assert!(
                out.status.success(),
                "import {}: {}",
                tar.display(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Containerd { dir, child }
    })
}

fn containerd_log_tail() -> String {
    let log = std::fs::read_to_string(containerd().dir.join("containerd.log")).unwrap_or_default();
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(60)..].join("\n")
}

/// The kubelet side: CRI runtime and image services over containerd's socket.
struct Kubelet {
    runtime: RuntimeServiceClient<Channel>,
    images: ImageServiceClient<Channel>,
}

async fn kubelet() -> Kubelet {
    let socket = containerd().socket();
    let channel = Endpoint::try_from("http://[::]:50051")
        .unwrap()
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let socket = socket.clone();
            async move {
                Ok::<_, std::io::Error>(TokioIo::new(
                    tokio::net::UnixStream::connect(socket).await?,
                ))
            }
        }))
        .await
        .expect("connecting to containerd's CRI");
    Kubelet {
        runtime: RuntimeServiceClient::new(channel.clone()),
        images: ImageServiceClient::new(channel),
    }
}

/// What a pod needs of the host and its handler.
struct PodSpec {
    name: String,
    handler: &'static str,
    log_dir: PathBuf,
    annotations: HashMap<String, String>,
    port_mappings: Vec<cri::PortMapping>,
}

impl PodSpec {
    fn new(name: &str, handler: &'static str) -> Self {
        let log_dir = containerd().dir.join("logs").join(name);
        std::fs::create_dir_all(&log_dir).unwrap();
        Self {
            name: name.into(),
            handler,
            log_dir,
            annotations: HashMap::new(),
            port_mappings: Vec::new(),
        }
    }

    fn config(&self) -> cri::PodSandboxConfig {
        cri::PodSandboxConfig {
            metadata: Some(cri::PodSandboxMetadata {
                name: self.name.clone(),
                uid: format!("uid-{}", self.name),
                namespace: "e2e".into(),
                attempt: 0,
            }),
            hostname: self.name.clone(),
            log_directory: self.log_dir.to_string_lossy().into_owned(),
            annotations: self.annotations.clone(),
            port_mappings: self.port_mappings.clone(),
            linux: Some(cri::LinuxPodSandboxConfig {
                // kubelet's pod cgroup (cgroupfs driver); the sandbox's is below it.
                cgroup_parent: pod_cgroup(&self.name),
                security_context: Some(cri::LinuxSandboxSecurityContext {
                    namespace_options: Some(cri::NamespaceOption {
                        network: cri::NamespaceMode::Pod as i32,
                        pid: if self.handler == "runc" {
                            cri::NamespaceMode::Container as i32
                        } else {
                            cri::NamespaceMode::Pod as i32
                        },
                        ipc: cri::NamespaceMode::Pod as i32,
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }
}

impl Kubelet {
    async fn run_pod(&mut self, pod: &PodSpec) -> Result<String, tonic::Status> {
        let reply = self
            .runtime
            .run_pod_sandbox(cri::RunPodSandboxRequest {
                config: Some(pod.config()),
                runtime_handler: pod.handler.into(),
            })
            .await?;
        Ok(reply.into_inner().pod_sandbox_id)
    }

    async fn create_container(
        &mut self,
        pod_id: &str,
        pod: &PodSpec,
        name: &str,
        command: &[&str],
    ) -> String {
        self.create_container_with(pod_id, pod, container_config(name, command))
            .await
    }

    /// Creates (CreateContainer only, no task yet) a container of `config`; its id.
    async fn create_only(
        &mut self,
        pod_id: &str,
        pod: &PodSpec,
        config: cri::ContainerConfig,
    ) -> String {
        let name = config.metadata.as_ref().unwrap().name.clone();
        self.runtime
            .create_container(cri::CreateContainerRequest {
                pod_sandbox_id: pod_id.into(),
                config: Some(config),
                sandbox_config: Some(pod.config()),
            })
            .await
            .unwrap_or_else(|e| panic!("CreateContainer {name}: {e}\n{}", containerd_log_tail()))
            .into_inner()
            .container_id
    }

    /// Creates and starts a container of `config`.
    async fn create_container_with(
        &mut self,
        pod_id: &str,
        pod: &PodSpec,
        config: cri::ContainerConfig,
    ) -> String {
        let name = config.metadata.as_ref().unwrap().name.clone();
        let id = self.create_only(pod_id, pod, config).await;
        self.runtime
            .start_container(cri::StartContainerRequest {
                container_id: id.clone(),
            })
            .await
            .unwrap_or_else(|e| panic!("StartContainer {name}: {e}\n{}", containerd_log_tail()));
        id
    }

    async fn exec_sync(&mut self, container: &str, cmd: &[&str]) -> cri::ExecSyncResponse {
        self.runtime
            .exec_sync(cri::ExecSyncRequest {
                container_id: container.into(),
                cmd: cmd.iter().map(|s| s.to_string()).collect(),
                timeout: 60,
            })
            .await
            .unwrap_or_else(|e| panic!("ExecSync {cmd:?}: {e}"))
            .into_inner()
    }

    /// ExecSync that must succeed; its stdout.
    async fn output(&mut self, container: &str, cmd: &[&str]) -> String {
        let reply = self.exec_sync(container, cmd).await;
        assert_eq!(
            reply.exit_code,
            0,
            "{cmd:?}: stdout {} stderr {}",
            text(&reply.stdout),
            text(&reply.stderr)
        );
        text(&reply.stdout)
    }

    async fn pod_ip(&mut self, pod_id: &str) -> String {
        self.runtime
            .pod_sandbox_status(cri::PodSandboxStatusRequest {
                pod_sandbox_id: pod_id.into(),
                verbose: false,
            })
            .await
            .expect("PodSandboxStatus")
            .into_inner()
            .status
            .and_then(|s| s.network)
            .map(|n| n.ip)
            .unwrap_or_default()
    }

    async fn stop_and_remove_container(&mut self, id: &str) {
        self.runtime
            .stop_container(cri::StopContainerRequest {
                container_id: id.into(),
                timeout: 10,
            })
            .await
            .expect("StopContainer");
        self.runtime
            .remove_container(cri::RemoveContainerRequest {
                container_id: id.into(),
            })
            .await
            .expect("RemoveContainer");
    }

    async fn stop_and_remove_pod(&mut self, pod_id: &str) {
        self.runtime
            .stop_pod_sandbox(cri::StopPodSandboxRequest {
                pod_sandbox_id: pod_id.into(),
            })
            .await
            .unwrap_or_else(|e| panic!("StopPodSandbox: {e}\n{}", containerd_log_tail()));
        self.runtime
            .remove_pod_sandbox(cri::RemovePodSandboxRequest {
                pod_sandbox_id: pod_id.into(),
            })
            .await
            .unwrap_or_else(|e| panic!("RemovePodSandbox: {e}\n{}", containerd_log_tail()));
    }
}

/// A busybox container named `name` running `command`.
fn container_config(name: &str, command: &[&str]) -> cri::ContainerConfig {
    cri::ContainerConfig {
        metadata: Some(cri::ContainerMetadata {
            name: name.into(),
            attempt: 0,
        }),
        image: Some(cri::ImageSpec {
            image: BUSYBOX.into(),
            ..Default::default()
        }),
        command: command.iter().map(|s| s.to_string()).collect(),
        log_path: format!("{name}.log"),
        linux: Some(cri::LinuxContainerConfig::default()),
        ..Default::default()
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// An HTTP GET of `/` from this host (the test host) to `ip:port`: the response body.
fn http_get(ip: &str, port: u16) -> String {
    let address = format!("{ip}:{port}");
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut stream = loop {
        match std::net::TcpStream::connect_timeout(
            &address.parse().unwrap(),
            Duration::from_secs(5),
        ) {
            Ok(stream) => break stream,
            Err(e) if Instant::now() < deadline => {
                eprintln!("connecting to {address}: {e}; retrying");
                std::thread::sleep(Duration::from_millis(500));
            }
            Err(e) => panic!("the host cannot reach the pod at {address}: {e}"),
        }
    };
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    write!(stream, "GET / HTTP/1.0\r\nHost: {ip}\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
        .unwrap_or(response)
}

/// What a streaming exec said: stdout, stderr and the final status (channel 3, JSON).
struct Streamed {
    stdout: String,
    stderr: String,
    status: String,
}

/// Runs a streaming exec at `url` (what the CRI Exec call returned) the way kubectl does
/// over WebSocket (protocol v4.channel.k8s.io: binary frames, the first byte names the
/// stream).
fn stream_exec(url: &str) -> Streamed {
    use tungstenite::client::IntoClientRequest;
    let url = url.replacen("http://", "ws://", 1);
    let host = url
        .trim_start_matches("ws://")
        .split('/')
        .next()
        .unwrap_or_default()
        .to_string();
    let tcp = std::net::TcpStream::connect(&host).unwrap_or_else(|e| panic!("{host}: {e}"));
    tcp.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut request = url.as_str().into_client_request().unwrap();
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        "v4.channel.k8s.io".parse().unwrap(),
    );
    let (mut socket, _) = tungstenite::client(request, tcp).expect("WebSocket handshake");
    let mut streamed = Streamed {
        stdout: String::new(),
        stderr: String::new(),
        status: String::new(),
    };
    loop {
        let frame = match socket.read() {
            Ok(tungstenite::Message::Binary(data)) => data,
            Ok(tungstenite::Message::Close(_)) => break,
            Ok(_) => continue,
            Err(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed) => break,
            Err(tungstenite::Error::Protocol(_)) => break,
            Err(e) => panic!("streaming exec: {e}"),
        };
        let Some((channel, data)) = frame.split_first() else {
            continue;
        };
        let data = text(data);
        match channel {
            1 => streamed.stdout.push_str(&data),
            2 => streamed.stderr.push_str(&data),
            3 => streamed.status.push_str(&data),
            _ => {}
        }
    }
    streamed
}

/// Host state a pod may leave behind.
#[derive(Debug, PartialEq, Eq)]
struct HostState {
    processes: Vec<String>,
    kata_mounts: Vec<String>,
    netns: BTreeSet<String>,
    veths: BTreeSet<String>,
    sandbox_dirs: BTreeSet<String>,
    nat_rules: Vec<String>,
}

fn entries(dir: &str) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn processes_named(names: &[&str]) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmdline = text(&cmdline).replace('\0', " ");
        let program = cmdline.split(' ').next().unwrap_or_default();
        if names.iter().any(|n| program.ends_with(n)) {
            found.push(format!(
                "{}: {cmdline}",
                entry.file_name().to_string_lossy()
            ));
        }
    }
    found
}

fn host_state() -> HostState {
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    HostState {
        processes: processes_named(&["containerd-shim-kata-v2", "virtiofsd"]),
        kata_mounts: mounts
            .lines()
            .filter(|l| l.contains("/run/kata"))
            .map(str::to_string)
            .collect(),
        netns: entries("/var/run/netns"),
        veths: entries("/sys/class/net")
            .into_iter()
            .filter(|n| n.starts_with("veth"))
            .collect(),
        sandbox_dirs: entries("/run/kata")
            .into_iter()
            .chain(entries("/run/kata-containers/shared/sandboxes"))
            .collect(),
        nat_rules: nat_rules(),
    }
}

/// Waits until the host is back to `before` (a pod's teardown is asynchronous in places).
fn assert_host_back_to(before: &HostState, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let now = host_state();
        if now == *before {
            return;
        }
        if Instant::now() >= deadline {
            panic!(
                "{what} left something behind:\nbefore {before:#?}\nafter {now:#?}\ncontainerd log tail:\n{}",
                containerd_log_tail()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The cgroup a pod's sandbox and containers go under, as kubelet's `pod<uid>`.
fn pod_cgroup(name: &str) -> String {
    format!("/kata-rv-e2e/{name}")
}

/// The child cgroups of `dir`.
fn child_cgroups(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .filter(|e| e.path().is_dir())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// kubelet's part after a pod is gone: its runtime left nothing in the pod cgroup, which
/// is then removed (an rmdir fails while a cgroup or process is left in it).
fn remove_pod_cgroup(name: &str, handler: &str) {
    let dir = memory_cgroup_dir(&pod_cgroup(name));
    let deadline = Instant::now() + Duration::from_secs(30);
    while !child_cgroups(&dir).is_empty() {
        assert!(
            Instant::now() < deadline,
            "{handler}: cgroups left in {}: {:?}",
            dir.display(),
            child_cgroups(&dir)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    if dir.exists() {
        std::fs::remove_dir(&dir)
            .unwrap_or_else(|e| panic!("{handler}: rmdir {}: {e}", dir.display()));
    }
}

fn require_kvm() -> bool {
    if Path::new("/dev/kvm").exists() {
        return true;
    }
    assert!(
        !kvm_host::testing::kvm_required(),
        "KATA_TEST_REQUIRE_KVM=1 but /dev/kvm is missing"
    );
    eprintln!("SKIPPED CRI e2e: no /dev/kvm");
    false
}

/// The web page the pod's server container serves.
const PAGE: &str = "hello from the pod";

/// The server container: writes the page, serves it on 8080.
const SERVER: &str = "mkdir -p /www && echo 'hello from the pod' > /www/index.html && \
                      exec httpd -f -p 8080 -h /www";

/// The client container: fetches the page over the pod's loopback (into its log), says
/// so on both streams, then stays.
const CLIENT: &str = "until wget -q -O - http://127.0.0.1:8080/ 2>/dev/null; do sleep 0.5; done; \
                      echo client-started; echo to-stderr >&2; exec sleep 3600";

/// A two-container pod: `web` serves HTTP on 8080, `client` fetches it over 127.0.0.1;
/// logs; the host reaches the pod IP; (kata) what the containers see from inside; stats.
/// Returns (RunPodSandbox ms, ms to both containers running).
async fn two_container_pod(k: &mut Kubelet, name: &str, handler: &'static str) -> (u128, u128) {
    let before = host_state();
    let mut pod = PodSpec::new(name, handler);
    // A hostPort (CNI portmap), where the test host has iptables.
    let host_port = iptables_dir(&containerd().dir).map(|_| {
        let port = if handler == "kata" { 30081 } else { 30080 };
        pod.port_mappings.push(cri::PortMapping {
            protocol: cri::Protocol::Tcp as i32,
            container_port: 8080,
            host_port: port,
            host_ip: String::new(),
        });
        port
    });
    let started = Instant::now();
    let pod_id = k
        .run_pod(&pod)
        .await
        .unwrap_or_else(|e| panic!("RunPodSandbox {name}: {e}\n{}", containerd_log_tail()));
    let run_pod_ms = started.elapsed().as_millis();
    let web = k
        .create_container(&pod_id, &pod, "web", &["sh", "-c", SERVER])
        .await;
    let client = k
        .create_container(&pod_id, &pod, "client", &["sh", "-c", CLIENT])
        .await;
    let running_ms = started.elapsed().as_millis();
    println!("{handler}: RunPodSandbox {run_pod_ms} ms, two containers running {running_ms} ms");

    // The client reached the server over the pod's loopback: its log says so, in CRI's
    // format, stdout and stderr apart.
    let log_file = pod.log_dir.join("client.log");
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let log = std::fs::read_to_string(&log_file).unwrap_or_default();
        if log.contains(&format!(" stdout F {PAGE}"))
            && log.contains(" stdout F client-started")
            && log.contains(" stderr F to-stderr")
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{handler}: {} holds: {log}",
            log_file.display()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // The host reaches the pod at its CNI address.
    let ip = k.pod_ip(&pod_id).await;
    assert!(ip.starts_with("10.99.0."), "{handler}: pod IP '{ip}'");
    assert_eq!(
        http_get(&ip, 8080).trim(),
        PAGE,
        "{handler}: GET http://{ip}:8080/"
    );
    // And through its hostPort on the host's own address (the bridge's gateway).
    match host_port {
        Some(port) => {
            assert_eq!(
                http_get(GATEWAY, port as u16).trim(),
                PAGE,
                "{handler}: GET http://{GATEWAY}:{port}/ (hostPort → 8080)"
            );
            // The per-pod rules the leak check below watches for exist while it runs.
            let rules = nat_rules();
            assert!(
                rules.iter().any(|r| r.contains(&format!("--dport {port}"))),
                "{handler}: no NAT rule for hostPort {port} in {rules:#?}"
            );
        }
        None => println!(
            "{handler}: hostPort not checked: this test host has no iptables ({IPTABLES_LEGACY})"
        ),
    }

    if handler == "kata" {
        exec_checks(k, name, &ip, &web, &client).await;
    } else {
        println!(
            "{handler}: exec checks not run: in the KVM test hosts a runc exec does not see the \
             container root (`stat /bin/sh: no such file or directory`)"
        );
    }

    // Stats: what kubelet reads.
    let stats = k
        .runtime
        .container_stats(cri::ContainerStatsRequest {
            container_id: web.clone(),
        })
        .await
        .expect("ContainerStats")
        .into_inner()
        .stats
        .expect("stats");
    let memory = stats
        .memory
        .and_then(|m| m.working_set_bytes)
        .map(|v| v.value)
        .unwrap_or(0);
    let cpu = stats
        .cpu
        .and_then(|c| c.usage_core_nano_seconds)
        .map(|v| v.value)
        .unwrap_or(0);
    assert!(
        memory > 0 && cpu > 0,
        "{handler}: stats memory {memory} cpu {cpu}"
    );
    let listed = k
        .runtime
        .list_container_stats(cri::ListContainerStatsRequest { filter: None })
        .await
        .expect("ListContainerStats")
        .into_inner()
        .stats;
    let ours = listed
        .iter()
        .filter(|s| {
            s.attributes
                .as_ref()
                .is_some_and(|a| a.id == web || a.id == client)
        })
        .count();
    assert_eq!(ours, 2, "{handler}: ListContainerStats: {listed:?}");
    pod_stats(k, &pod_id, name, handler).await;
    update_resources(k, &web, handler).await;

    // Containers first, then the pod.
    k.stop_and_remove_container(&client).await;
    k.stop_and_remove_container(&web).await;
    k.stop_and_remove_pod(&pod_id).await;
    assert_host_back_to(&before, &format!("{handler} pod {name}"));
    remove_pod_cgroup(name, handler);
    (run_pod_ms, running_ms)
}

/// PodSandboxStats, which containerd reads from the pod's host cgroup: the sandbox's
/// cgroup is in it (for kata the shim and its VMM), with CPU and memory used, the pod
/// interface's traffic and its two containers.
async fn pod_stats(k: &mut Kubelet, pod_id: &str, name: &str, handler: &str) {
    let sandbox_cgroup = memory_cgroup_dir(&format!("{}/{pod_id}", pod_cgroup(name)));
    let procs = std::fs::read_to_string(sandbox_cgroup.join("cgroup.procs")).unwrap_or_default();
    let pids: Vec<&str> = procs.split_whitespace().collect();
    assert!(
        !pids.is_empty(),
        "{handler}: no process in {}",
        sandbox_cgroup.display()
    );
    if handler == "kata" {
        let shims = processes_named(&["containerd-shim-kata-v2"]);
        assert!(
            pids.iter()
                .any(|pid| shims.iter().any(|s| s.starts_with(&format!("{pid}: ")))),
            "the kata shim is not in {} ({pids:?}; shims {shims:?})",
            sandbox_cgroup.display()
        );
    }
    let stats = k
        .runtime
        .pod_sandbox_stats(cri::PodSandboxStatsRequest {
            pod_sandbox_id: pod_id.into(),
        })
        .await
        .unwrap_or_else(|e| panic!("{handler}: PodSandboxStats: {e}\n{}", containerd_log_tail()))
        .into_inner()
        .stats
        .and_then(|s| s.linux)
        .expect("linux pod stats");
    let memory = stats
        .memory
        .and_then(|m| m.working_set_bytes)
        .map_or(0, |v| v.value);
    let cpu = stats
        .cpu
        .and_then(|c| c.usage_core_nano_seconds)
        .map_or(0, |v| v.value);
    let received = stats
        .network
        .and_then(|n| n.default_interface)
        .and_then(|i| i.rx_bytes)
        .map_or(0, |v| v.value);
    println!("{handler}: PodSandboxStats memory {memory} B, cpu {cpu} ns, eth0 rx {received} B");
    assert!(
        memory > 0 && cpu > 0,
        "{handler}: pod stats memory {memory} cpu {cpu}"
    );
    assert!(
        received > 0,
        "{handler}: the pod interface received nothing"
    );
    assert_eq!(stats.containers.len(), 2, "{handler}: pod stats containers");
}

/// UpdateContainerResources, as kubelet's in-place resize sends it: accepted, and (kata)
/// the new limits are the container's cgroup limits in the guest.
async fn update_resources(k: &mut Kubelet, container: &str, handler: &str) {
    let memory = 100u64 << 20;
    k.runtime
        .update_container_resources(cri::UpdateContainerResourcesRequest {
            container_id: container.into(),
            linux: Some(cri::LinuxContainerResources {
                cpu_period: 100_000,
                cpu_quota: 50_000,
                cpu_shares: 512,
                memory_limit_in_bytes: memory as i64,
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| {
            panic!(
                "{handler}: UpdateContainerResources: {e}\n{}",
                containerd_log_tail()
            )
        });
    if handler == "kata" {
        let limits = k
            .output(
                container,
                &["cat", "/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/cpu.max"],
            )
            .await;
        assert_eq!(
            limits,
            format!("{memory}\n50000 100000\n"),
            "limits in the guest"
        );
    }
}

/// What a kata pod's containers show from inside: the guest interface has the pod IP;
/// ExecSync output and exit code; a streaming exec; the pod's hostname; the IPC, UTS and
/// PID namespaces they share.
async fn exec_checks(k: &mut Kubelet, name: &str, ip: &str, web: &str, client: &str) {
    let eth0 = k
        .output(client, &["ip", "-4", "-o", "addr", "show", "eth0"])
        .await;
    assert!(
        eth0.contains(&format!("{ip}/24")),
        "eth0 in the pod: {eth0}"
    );

    let reply = k
        .exec_sync(client, &["sh", "-c", "echo out; echo err >&2; exit 3"])
        .await;
    assert_eq!(
        (
            text(&reply.stdout).as_str(),
            text(&reply.stderr).as_str(),
            reply.exit_code
        ),
        ("out\n", "err\n", 3),
        "ExecSync"
    );

    let url = k
        .runtime
        .exec(cri::ExecRequest {
            container_id: client.into(),
            cmd: ["sh", "-c", "echo streamed; echo streamed-err >&2; exit 7"]
                .iter()
                .map(|s| s.to_string())
                .collect(),
            stdout: true,
            stderr: true,
            ..Default::default()
        })
        .await
        .expect("Exec")
        .into_inner()
        .url;
    let streamed = tokio::task::spawn_blocking(move || stream_exec(&url))
        .await
        .unwrap();
    assert_eq!(
        (streamed.stdout.as_str(), streamed.stderr.as_str()),
        ("streamed\n", "streamed-err\n"),
        "streaming exec"
    );
    assert!(
        streamed.status.contains("NonZeroExitCode") && streamed.status.contains("\"7\""),
        "streaming exec status: {}",
        streamed.status
    );

    assert_eq!(k.output(client, &["hostname"]).await.trim(), name);
    for kind in ["ipc", "uts", "pid"] {
        let link = format!("/proc/self/ns/{kind}");
        let in_web = k.output(web, &["readlink", &link]).await;
        let in_client = k.output(client, &["readlink", &link]).await;
        assert_eq!(in_web, in_client, "the {kind} namespace is not shared");
    }
    let processes = k.output(client, &["ps"]).await;
    assert!(
        processes.contains("httpd"),
        "the pod's PID namespace is not shared: {processes}"
    );
}

/// A host directory with a tmpfs mounted beneath it, as critest's read-only volume cases
/// build it; unmounted and removed on drop.
struct VolumeWithSubmount {
    dir: PathBuf,
}

impl VolumeWithSubmount {
    fn new(name: &str) -> Self {
        let dir = containerd().dir.join("volumes").join(name);
        std::fs::create_dir_all(dir.join("tmpfs")).unwrap();
        run_ok(
            Command::new("mount")
                .args(["-t", "tmpfs", "none"])
                .arg(dir.join("tmpfs")),
        );
        Self { dir }
    }
}

impl Drop for VolumeWithSubmount {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.join("tmpfs"))
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn run_ok(command: &mut Command) {
    let status = command.status().unwrap();
    assert!(status.success(), "{command:?}: {status}");
}

/// What kubelet's security context and volume options ask of a kata container, as
/// critest checks them: linux.maskedPaths and readonlyPaths, a read-only volume that is
/// not recursive (a mount beneath it stays writable), an ExecSync past its timeout leaves
/// no process, and Bidirectional propagation is refused with a clear error.
async fn security_context_and_volumes(k: &mut Kubelet) {
    let before = host_state();
    let pod = PodSpec::new("kata-secctx", "kata");
    let pod_id = k
        .run_pod(&pod)
        .await
        .unwrap_or_else(|e| panic!("RunPodSandbox kata-secctx: {e}\n{}", containerd_log_tail()));
    let volume = VolumeWithSubmount::new("kata-secctx");
    let mut config = container_config("guarded", &["sleep", "3600"]);
    config.mounts = vec![cri::Mount {
        host_path: volume.dir.to_string_lossy().into_owned(),
        container_path: "/mnt".into(),
        readonly: true,
        ..Default::default()
    }];
    config.linux = Some(cri::LinuxContainerConfig {
        security_context: Some(cri::LinuxContainerSecurityContext {
            masked_paths: vec!["/bin/ls".into()],
            readonly_paths: vec!["/tmp".into()],
            ..Default::default()
        }),
        ..Default::default()
    });
    let guarded = k.create_container_with(&pod_id, &pod, config).await;

    // The mask is /dev/null bound over the file. (critest runs `sh -c ls` and wants
    // "Permission denied"; Debian's busybox-static shell runs its own `ls` applet without
    // exec, so the image decides that one, not the runtime.)
    assert_eq!(
        k.output(
            &guarded,
            &["sh", "-c", "test -c /bin/ls && wc -c < /bin/ls"]
        )
        .await
        .trim(),
        "0"
    );
    let exec_masked = k
        .runtime
        .exec_sync(cri::ExecSyncRequest {
            container_id: guarded.clone(),
            cmd: vec!["/bin/ls".into()],
            timeout: 60,
        })
        .await;
    if let Ok(reply) = exec_masked {
        assert_ne!(reply.get_ref().exit_code, 0, "a masked /bin/ls ran");
    }
    let touch_tmp = k.exec_sync(&guarded, &["touch", "/tmp/test"]).await;
    assert_ne!(touch_tmp.exit_code, 0, "readonlyPaths /tmp was writable");

    k.output(&guarded, &["touch", "/mnt/tmpfs/file"]).await;
    assert!(
        volume.dir.join("tmpfs/file").exists(),
        "the write did not reach the host"
    );
    let top = k.exec_sync(&guarded, &["touch", "/mnt/top"]).await;
    assert!(
        top.exit_code != 0 && text(&top.stderr).contains("Read-only file system"),
        "the read-only volume's top was writable: {}",
        text(&top.stderr)
    );
    assert!(!volume.dir.join("top").exists());

    let timed_out = tokio::time::timeout(
        Duration::from_secs(60),
        k.runtime.exec_sync(cri::ExecSyncRequest {
            container_id: guarded.clone(),
            cmd: vec!["sleep".into(), "4321".into()],
            timeout: 1,
        }),
    )
    .await
    .expect("ExecSync with a 1 s timeout did not return within 60 s");
    assert!(
        timed_out.is_err(),
        "ExecSync past its timeout: {timed_out:?}"
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let cmdlines = k
            .output(&guarded, &["sh", "-c", "cat /proc/[0-9]*/cmdline; true"])
            .await;
        if !cmdlines.contains("sleep\u{0}4321") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the timed-out exec still runs: {cmdlines:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // containerd wants a Bidirectional source on a shared mount; the shim then refuses it.
    let shared = containerd().dir.join("volumes").join("kata-secctx-shared");
    std::fs::create_dir_all(&shared).unwrap();
    run_ok(
        Command::new("mount")
            .arg("--bind")
            .arg(&shared)
            .arg(&shared),
    );
    run_ok(Command::new("mount").arg("--make-rshared").arg(&shared));
    let mut config = container_config("bidirectional", &["true"]);
    config.mounts = vec![cri::Mount {
        host_path: shared.to_string_lossy().into_owned(),
        container_path: "/shared".into(),
        propagation: cri::MountPropagation::PropagationBidirectional as i32,
        ..Default::default()
    }];
    let id = k.create_only(&pod_id, &pod, config).await;
    // The task (and so the shim's check) comes with StartContainer.
    let refused = k
        .runtime
        .start_container(cri::StartContainerRequest {
            container_id: id.clone(),
        })
        .await;
    k.runtime
        .remove_container(cri::RemoveContainerRequest { container_id: id })
        .await
        .expect("RemoveContainer of the refused container");
    run_ok(Command::new("umount").arg(&shared));
    let err = refused.expect_err("a Bidirectional volume was accepted");
    assert!(
        err.message().contains("Bidirectional mount propagation"),
        "the error does not say why: {}",
        err.message()
    );

    k.stop_and_remove_pod(&pod_id).await;
    drop(volume);
    assert_host_back_to(&before, "the security-context pod");
    remove_pod_cgroup(&pod.name, "kata");
}

/// A pod sized by Kata's annotations: the guest has those vCPUs and that memory.
async fn pod_sized_by_annotations(k: &mut Kubelet) {
    let before = host_state();
    let mut pod = PodSpec::new("kata-sized", "kata");
    for (key, value) in [("default_vcpus", "2"), ("default_memory", "512")] {
        pod.annotations.insert(
            format!("io.katacontainers.config.hypervisor.{key}"),
            value.into(),
        );
    }
    let pod_id = k
        .run_pod(&pod)
        .await
        .unwrap_or_else(|e| panic!("RunPodSandbox kata-sized: {e}\n{}", containerd_log_tail()));
    let probe = k
        .create_container(&pod_id, &pod, "probe", &["sleep", "3600"])
        .await;
    assert_eq!(k.output(&probe, &["nproc"]).await.trim(), "2");
    let meminfo = k.output(&probe, &["cat", "/proc/meminfo"]).await;
    let total_kib: u64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no MemTotal in {meminfo}"));
    // The kernel keeps some of the 512 MiB for itself; 256 MiB (the default) would be
    // well below 400.
    assert!(
        (400 << 10..=512 << 10).contains(&total_kib),
        "MemTotal {total_kib} kB for a 512 MiB pod"
    );
    // The host cgroup holding the shim and VMM is sized from the VM: 512 MiB plus the
    // 128 MiB overhead.
    let sandbox_cgroup = memory_cgroup_dir(&format!("{}/{pod_id}", pod_cgroup(&pod.name)));
    let limit = ["memory.max", "memory.limit_in_bytes"]
        .iter()
        .find_map(|f| std::fs::read_to_string(sandbox_cgroup.join(f)).ok())
        .unwrap_or_default();
    assert_eq!(
        limit.trim(),
        ((512u64 + 128) << 20).to_string(),
        "{}",
        sandbox_cgroup.display()
    );
    k.stop_and_remove_pod(&pod_id).await;
    assert_host_back_to(&before, "the annotation-sized pod");
    remove_pod_cgroup(&pod.name, "kata");
}

/// A pod stopped and removed while its container still runs (kubelet's other order).
async fn pod_removed_first(k: &mut Kubelet, handler: &'static str) {
    let before = host_state();
    let pod = PodSpec::new(&format!("{handler}-pod-first"), handler);
    let pod_id = k.run_pod(&pod).await.expect("RunPodSandbox");
    k.create_container(
        &pod_id,
        &pod,
        "sleeper",
        &["sh", "-c", "echo alive; exec sleep 3600"],
    )
    .await;
    let log_file = pod.log_dir.join("sleeper.log");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !std::fs::read_to_string(&log_file)
        .unwrap_or_default()
        .contains(" stdout F alive")
    {
        assert!(
            Instant::now() < deadline,
            "{handler}: the sleeper never ran"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    k.stop_and_remove_pod(&pod_id).await;
    assert_host_back_to(
        &before,
        &format!("{handler}: pod removed before its container"),
    );
    remove_pod_cgroup(&pod.name, handler);
}

/// Host namespaces a VM cannot share are refused with a clear error, leaving nothing.
async fn host_network_is_refused(k: &mut Kubelet) {
    let before = host_state();
    let pod = PodSpec::new("kata-host-network", "kata");
    let mut config = pod.config();
    if let Some(options) = config
        .linux
        .as_mut()
        .and_then(|l| l.security_context.as_mut())
        .and_then(|s| s.namespace_options.as_mut())
    {
        options.network = cri::NamespaceMode::Node as i32;
    }
    let err = k
        .runtime
        .run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(config),
            runtime_handler: "kata".into(),
        })
        .await
        .expect_err("a kata pod with hostNetwork was accepted");
    assert!(
        err.message().contains("hostNetwork"),
        "the error does not name hostNetwork: {}",
        err.message()
    );
    assert_host_back_to(&before, "a refused hostNetwork pod");
    remove_pod_cgroup(&pod.name, "kata");
}

#[tokio::test]
async fn kubernetes_pods_run_in_microvms_through_cri() {
    if !require_kvm() {
        return;
    }
    let mut k = kubelet().await;
    let version = k
        .runtime
        .version(cri::VersionRequest::default())
        .await
        .expect("CRI Version")
        .into_inner();
    println!(
        "CRI runtime {} {}",
        version.runtime_name, version.runtime_version
    );
    let images = k
        .images
        .list_images(cri::ListImagesRequest::default())
        .await
        .expect("ListImages")
        .into_inner()
        .images;
    assert!(
        images
            .iter()
            .any(|i| i.repo_tags.iter().any(|t| t == PAUSE_IMAGE)),
        "the pause image is not in containerd's k8s.io namespace: {images:?}"
    );

    let runc = runc_available();
    if runc {
        let (run, ready) = two_container_pod(&mut k, "runc-pod", "runc").await;
        println!("baseline runc: RunPodSandbox {run} ms, running {ready} ms");
    } else {
        println!("BASELINE NOT RUN: no runc in this test host");
    }
    let (run, ready) = two_container_pod(&mut k, "kata-pod", "kata").await;
    println!("kata: RunPodSandbox {run} ms, running {ready} ms");
    pod_removed_first(&mut k, "kata").await;
    pod_sized_by_annotations(&mut k).await;
    security_context_and_volumes(&mut k).await;
    if runc {
        pod_removed_first(&mut k, "runc").await;
    }
    host_network_is_refused(&mut k).await;
    containerd().stop();
}

/// The median of `values` (sorted here).
fn median(values: &mut [u128]) -> u128 {
    values.sort_unstable();
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2
    }
}

/// `make bench BENCH=cri` (bench/cri.sh), not part of `make test`: RunPodSandbox and the
/// time to a running container for runc and kata, alternating, `KATA_RV_BENCH_RUNS`
/// times; prints medians, spread and ratios, and writes them as JSON to
/// `out/bench/cri-<arch>.json`.
#[tokio::test]
#[ignore = "a benchmark: run by bench/cri.sh"]
async fn bench_pod_start() {
    assert!(require_kvm(), "the CRI bench needs KVM");
    let runs: usize = std::env::var("KATA_RV_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let mut k = kubelet().await;
    let handlers: Vec<&'static str> = if runc_available() {
        vec!["runc", "kata"]
    } else {
        vec!["kata"]
    };
    let mut samples: HashMap<&str, (Vec<u128>, Vec<u128>)> = HashMap::new();
    for run in 0..runs {
        for &handler in &handlers {
            let name = format!("bench-{handler}-{run}");
            let pod = PodSpec::new(&name, handler);
            let started = Instant::now();
            let pod_id = k
                .run_pod(&pod)
                .await
                .unwrap_or_else(|e| panic!("RunPodSandbox {name}: {e}\n{}", containerd_log_tail()));
            let sandbox_ms = started.elapsed().as_millis();
            let container = k
                .create_container(&pod_id, &pod, "c", &["sleep", "3600"])
                .await;
            let running_ms = started.elapsed().as_millis();
            let entry = samples.entry(handler).or_default();
            entry.0.push(sandbox_ms);
            entry.1.push(running_ms);
            k.stop_and_remove_container(&container).await;
            k.stop_and_remove_pod(&pod_id).await;
            remove_pod_cgroup(&name, handler);
        }
    }
    let mut json = Vec::new();
    let mut medians = HashMap::new();
    for &handler in &handlers {
        let (sandbox, running) = samples.get_mut(handler).unwrap();
        let spread = |v: &[u128]| (*v.iter().min().unwrap(), *v.iter().max().unwrap());
        let (s_min, s_max) = spread(sandbox);
        let (r_min, r_max) = spread(running);
        let (s_med, r_med) = (median(sandbox), median(running));
        println!(
            "bench cri {}: {handler}: RunPodSandbox median {s_med} ms ({s_min}..{s_max}), \
             container running median {r_med} ms ({r_min}..{r_max}) over {runs} runs",
            arch().name()
        );
        medians.insert(handler, (s_med, r_med));
        json.push(format!(
            r#""{handler}": {{"run_pod_sandbox_ms": {{"median": {s_med}, "min": {s_min}, "max": {s_max}}}, "container_running_ms": {{"median": {r_med}, "min": {r_min}, "max": {r_max}}}}}"#
        ));
    }
    if let (Some(kata), Some(runc)) = (medians.get("kata"), medians.get("runc")) {
        println!(
            "bench cri {}: ratio kata/runc: RunPodSandbox {:.2}, container running {:.2}",
            arch().name(),
            kata.0 as f64 / runc.0 as f64,
            kata.1 as f64 / runc.1 as f64
        );
    } else {
        println!(
            "bench cri {}: no runc in this test host: no baseline",
            arch().name()
        );
    }
    let dir = out_dir().parent().unwrap().join("bench");
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join(format!("cri-{}.json", arch().name()));
    std::fs::write(
        &file,
        format!("{{\"runs\": {runs}, {}}}\n", json.join(", ")),
    )
    .unwrap();
    println!("bench cri: wrote {}", file.display());
    containerd().stop();
}

/// runc (and its shim) on the PATH containerd gets.
fn runc_available() -> bool {
    let path = format!(
        "{}:{}",
        out_dir().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    ["runc", "containerd-shim-runc-v2"].iter().all(|name| {
        path.split(':')
            .any(|dir| Path::new(dir).join(name).exists())
    })
}
