//! containerd 2.x's Sandbox API end to end, inside the KVM test host of this architecture:
//! the real shim binary is started as containerd 2.3+ starts it (BootstrapParams on stdin,
//! the runtime options in its extensions), then a test client drives it over its ttrpc
//! socket as containerd's shim sandboxer does: CreateSandbox → StartSandbox (a real
//! microVM) → SandboxStatus → a container joins through the Task API, runs and is deleted
//! (the VM stays) → StopSandbox → WaitSandbox → ShutdownSandbox, and then nothing of it
//! is left: no process, socket, mount or directory.

use std::io::Write;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use containerd_shim_protos::api::{CreateTaskRequest, DeleteRequest, StartRequest, WaitRequest};
use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::{CodedInputStream, CodedOutputStream, Message};
use containerd_shim_protos::sandbox_api::{
    CreateSandboxRequest, PlatformRequest, SandboxStatusRequest, ShutdownSandboxRequest,
    StartSandboxRequest, StopSandboxRequest, WaitSandboxRequest,
};
use containerd_shim_protos::sandbox_sync::SandboxClient;
use containerd_shim_protos::{Client, TaskClient};
use kvm_host::{Arch, artifacts};

const POD: &str = "pod-sbx";
const HOSTNAME: &str = "kata-sandbox-api";

fn arch() -> Arch {
    Arch::native().expect("riscv64 or x86_64")
}

fn context() -> ttrpc::context::Context {
    // Booting a VM inside an emulated test host takes a while.
    ttrpc::context::with_timeout(Duration::from_secs(600).as_nanos() as i64)
}

/// `runtimeoptions.v1.Options { config_path }` in an `Any`.
fn runtime_options(config: &Path) -> Any {
    let mut value = Vec::new();
    {
        let mut out = CodedOutputStream::vec(&mut value);
        out.write_string(2, &config.display().to_string()).unwrap();
        out.flush().unwrap();
    }
    Any {
        type_url: "runtimeoptions.v1.Options".into(),
        value,
        ..Default::default()
    }
}

/// containerd 2.3+'s BootstrapParams for `POD` in k8s.io.
fn bootstrap_params(dir: &Path, options: &Any) -> Vec<u8> {
    let mut bytes = Vec::new();
    {
        let mut out = CodedOutputStream::vec(&mut bytes);
        out.write_string(1, POD).unwrap();
        out.write_string(2, "k8s.io").unwrap();
        out.write_string(4, "2.3.4").unwrap();
        out.write_string(5, &dir.join("events.sock").display().to_string())
            .unwrap();
        out.write_string(6, &dir.join("containerd.sock").display().to_string())
            .unwrap();
        let mut extension = Vec::new();
        {
            let mut inner = CodedOutputStream::vec(&mut extension);
            inner
                .write_bytes(1, &options.write_to_bytes().unwrap())
                .unwrap();
            inner.flush().unwrap();
        }
        out.write_bytes(8, &extension).unwrap();
        out.write_string(9, &dir.join("s").display().to_string())
            .unwrap();
        out.flush().unwrap();
    }
    bytes
}

/// The address in a BootstrapResult.
fn result_address(bytes: &[u8]) -> String {
    let mut input = CodedInputStream::from_bytes(bytes);
    let mut address = String::new();
    while let Some(tag) = input.read_raw_tag_or_eof().unwrap() {
        match tag >> 3 {
            1 => {
                assert_eq!(input.read_int32().unwrap(), 2, "shim protocol version");
            }
            2 => address = input.read_string().unwrap(),
            _ => {
                input.read_string().unwrap();
            }
        }
    }
    address
}

/// A bundle whose rootfs holds the static busybox, running `args`.
/// A bundle whose namespaces are what containerd 2.x's CRI writes for a pod container
/// with the shim sandboxer: the sandbox's pid, ipc and uts (paths), a new mount one.
fn bundle(dir: &Path, name: &str, args: &[&str], annotations: &str) -> PathBuf {
    let bundle = dir.join(name);
    std::fs::create_dir_all(bundle.join("rootfs/bin")).unwrap();
    std::fs::copy(
        artifacts::out_dir(arch()).join("busybox"),
        bundle.join("rootfs/bin/busybox"),
    )
    .unwrap();
    let args: Vec<String> = args.iter().map(|a| format!("\"{a}\"")).collect();
    std::fs::write(
        bundle.join("config.json"),
        format!(
            r#"{{"ociVersion":"1.0.2","hostname":"{HOSTNAME}","process":{{"user":{{"uid":0,"gid":0}},"args":[{}],"cwd":"/","env":["PATH=/bin"]}},"root":{{"path":"rootfs"}},"linux":{{"namespaces":[{{"type":"mount"}},{{"type":"pid","path":"/proc/1/ns/pid"}},{{"type":"ipc","path":"/proc/1/ns/ipc"}},{{"type":"uts","path":"/proc/1/ns/uts"}}]}},"annotations":{{{annotations}}}}}"#,
            args.join(",")
        ),
    )
    .unwrap();
    bundle
}

fn kata_config(dir: &Path) -> PathBuf {
    let file = dir.join("kata.toml");
    std::fs::write(
        &file,
        format!(
            "[hypervisor.dragonball]\nkernel = \"{}\"\ninitrd = \"{}\"\ndefault_memory = 256\n\
             [agent.kata]\nreconnect_timeout_ms = 300000\n[runtime]\n",
            artifacts::kernel(arch()).display(),
            artifacts::out_dir(arch())
                .join("kata-containers-initrd.img")
                .display()
        ),
    )
    .unwrap();
    file
}

/// Waits until `check` holds, or fails naming `what`.
fn eventually(what: &str, check: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !check() {
        assert!(Instant::now() < deadline, "{what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn the_sandbox_api_drives_one_microvm_that_containers_join() {
    let dir = PathBuf::from(format!("/tmp/kata-sbx-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("s")).unwrap();
    // containerd's events service: accepts and never answers (events are not checked).
    let events = UnixListener::bind(dir.join("events.sock")).unwrap();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in events.incoming() {
            held.push(stream);
        }
    });
    let config = kata_config(&dir);
    let pod_bundle = bundle(&dir, "pod", &["/bin/busybox", "sleep", "3600"], "");
    let shim = artifacts::out_dir(arch()).join("containerd-shim-kata-v2");

    let mut start = Command::new(&shim)
        .args(["-namespace", "k8s.io", "-address"])
        .arg(dir.join("containerd.sock"))
        .args([
            "-publish-binary",
            "/usr/bin/containerd",
            "-id",
            POD,
            "start",
        ])
        .current_dir(&pod_bundle)
        .env_remove("TTRPC_ADDRESS")
        .env_remove("KATA_CONF_FILE")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let options = runtime_options(&config);
    start
        .stdin
        .take()
        .unwrap()
        .write_all(&bootstrap_params(&dir, &options))
        .unwrap();
    let out = start.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "start: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let address = result_address(&out.stdout);
    let socket = PathBuf::from(address.trim_start_matches("unix://"));
    let sandbox = SandboxClient::new(Client::connect(&address).expect("connecting"));
    let task = TaskClient::new(Client::connect(&address).expect("connecting"));

    sandbox
        .create_sandbox(
            context(),
            &CreateSandboxRequest {
                sandbox_id: POD.into(),
                bundle_path: pod_bundle.display().to_string(),
                options: Some(options).into(),
                ..Default::default()
            },
        )
        .expect("CreateSandbox");
    let status = sandbox
        .sandbox_status(context(), &sandbox_status(POD))
        .expect("SandboxStatus");
    assert_eq!(status.state, "SANDBOX_NOTREADY");
    let started = sandbox
        .start_sandbox(
            context(),
            &StartSandboxRequest {
                sandbox_id: POD.into(),
                ..Default::default()
            },
        )
        .expect("StartSandbox");
    let shim_pid = started.pid;
    assert!(Path::new(&format!("/proc/{shim_pid}")).exists());
    let status = sandbox
        .sandbox_status(context(), &sandbox_status(POD))
        .expect("SandboxStatus");
    assert_eq!(status.state, "SANDBOX_READY");
    let platform = sandbox
        .platform(
            context(),
            &PlatformRequest {
                sandbox_id: POD.into(),
                ..Default::default()
            },
        )
        .expect("Platform");
    let expected_arch = match arch() {
        Arch::X86_64 => "amd64",
        Arch::Riscv64 => "riscv64",
    };
    assert_eq!(platform.platform.architecture, expected_arch);

    // A container joins the running sandbox, prints the pod's hostname and exits.
    let annotations = format!(
        r#""io.kubernetes.cri.container-type":"container","io.kubernetes.cri.sandbox-id":"{POD}""#
    );
    let app = bundle(&dir, "app", &["/bin/busybox", "hostname"], &annotations);
    let output = dir.join("app.out");
    std::fs::write(&output, "").unwrap();
    task.create(
        context(),
        &CreateTaskRequest {
            id: "app".into(),
            bundle: app.display().to_string(),
            stdout: output.display().to_string(),
            ..Default::default()
        },
    )
    .expect("Task.Create of a container in the sandbox");
    task.start(
        context(),
        &StartRequest {
            id: "app".into(),
            ..Default::default()
        },
    )
    .expect("Task.Start");
    let waited = task
        .wait(
            context(),
            &WaitRequest {
                id: "app".into(),
                ..Default::default()
            },
        )
        .expect("Task.Wait");
    assert_eq!(waited.exit_status, 0);
    task.delete(
        context(),
        &DeleteRequest {
            id: "app".into(),
            ..Default::default()
        },
    )
    .expect("Task.Delete");
    eventually("the container's output reaches its stdout", || {
        std::fs::read_to_string(&output).unwrap_or_default().trim() == HOSTNAME
    });
    let status = sandbox
        .sandbox_status(context(), &sandbox_status(POD))
        .expect("SandboxStatus");
    assert_eq!(
        status.state, "SANDBOX_READY",
        "the VM outlives its containers"
    );

    sandbox
        .stop_sandbox(
            context(),
            &StopSandboxRequest {
                sandbox_id: POD.into(),
                ..Default::default()
            },
        )
        .expect("StopSandbox");
    let waited = sandbox
        .wait_sandbox(
            context(),
            &WaitSandboxRequest {
                sandbox_id: POD.into(),
                ..Default::default()
            },
        )
        .expect("WaitSandbox");
    assert_eq!(waited.exit_status, 0);
    assert!(waited.exited_at.is_some());
    // The shim exits as it answers: the reply may be lost with the connection.
    let _ = sandbox.shutdown_sandbox(
        context(),
        &ShutdownSandboxRequest {
            sandbox_id: POD.into(),
            ..Default::default()
        },
    );

    eventually("the shim exits", || {
        !Path::new(&format!("/proc/{shim_pid}")).exists()
    });
    eventually("its socket goes", || !socket.exists());
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let leaked: Vec<&str> = mounts.lines().filter(|l| l.contains("/run/kata")).collect();
    assert!(leaked.is_empty(), "mounts left: {leaked:?}");
    assert!(!Path::new("/run/kata").join(POD).exists());
    assert!(
        !Path::new("/run/kata-containers/shared/sandboxes")
            .join(POD)
            .exists()
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

fn sandbox_status(id: &str) -> SandboxStatusRequest {
    SandboxStatusRequest {
        sandbox_id: id.into(),
        ..Default::default()
    }
}
