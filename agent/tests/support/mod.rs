//! Shared pieces of the agent integration tests: a busybox rootfs, OCI specs, and the
//! lifecycle scenarios, run against a host-mode agent and against the agent as PID 1 of
//! a Dragonball VM.

#![allow(dead_code)]

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::time::Duration;

use agent_client::{AgentClient, context};
use kata_agent_protocols::agent as api;
use kata_agent_protocols::oci;

/// Timeout for RPCs that should answer promptly.
pub const RPC: Duration = Duration::from_secs(30);
/// No timeout, as Kata uses for wait/read/write.
pub const FOREVER: Duration = Duration::ZERO;

/// Builds a busybox rootfs at `dir` from `busybox` and its `.links` list.
pub fn busybox_rootfs(dir: &Path, busybox: &Path) {
    for sub in [
        "bin", "sbin", "usr/bin", "usr/sbin", "proc", "sys", "dev", "tmp", "etc", "root",
    ] {
        std::fs::create_dir_all(dir.join(sub)).unwrap();
    }
    std::fs::copy(busybox, dir.join("bin/busybox")).unwrap();
    let links = std::fs::read_to_string(busybox.with_extension("links"))
        .or_else(|_| std::fs::read_to_string(format!("{}.links", busybox.display())))
        .expect("busybox.links next to busybox (make busybox)");
    for link in links.lines().filter(|l| l.starts_with('/')) {
        let path = dir.join(link.trim_start_matches('/'));
        if path != dir.join("bin/busybox") && !path.exists() {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            let _ = symlink("/bin/busybox", &path);
        }
    }
    std::fs::write(
        dir.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000::/tmp:/bin/sh\n",
    )
    .unwrap();
    std::fs::write(dir.join("etc/group"), "root:x:0:\nuser:x:1000:\n").unwrap();
}

fn mount(destination: &str, kind: &str, source: &str, options: &[&str]) -> oci::Mount {
    oci::Mount {
        destination: destination.into(),
        type_: kind.into(),
        source: source.into(),
        options: options.iter().map(|o| o.to_string()).collect(),
        ..Default::default()
    }
}

/// The capabilities containerd gives a default container.
pub const DEFAULT_CAPS: [&str; 14] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// A process running `args` as root in `/` with a PATH.
pub fn process(args: &[&str], terminal: bool) -> oci::Process {
    let caps: Vec<String> = DEFAULT_CAPS.iter().map(|c| c.to_string()).collect();
    oci::Process {
        Terminal: terminal,
        Args: args.iter().map(|a| a.to_string()).collect(),
        Env: vec![
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
            "HOME=/root".into(),
        ],
        Cwd: "/".into(),
        User: Some(oci::User::default()).into(),
        Capabilities: Some(oci::LinuxCapabilities {
            Bounding: caps.clone(),
            Effective: caps.clone(),
            Permitted: caps,
            ..Default::default()
        })
        .into(),
        NoNewPrivileges: true,
        ..Default::default()
    }
}

/// A spec like containerd's default: new pid/ipc/uts/mount namespaces and the usual mounts.
pub fn spec(rootfs: &str, process: oci::Process) -> oci::Spec {
    let namespaces = ["pid", "ipc", "uts", "mount"]
        .iter()
        .map(|kind| oci::LinuxNamespace {
            Type: kind.to_string(),
            ..Default::default()
        })
        .collect();
    oci::Spec {
        Version: "1.1.0".into(),
        Process: Some(process).into(),
        Root: Some(oci::Root {
            Path: rootfs.into(),
            Readonly: false,
            ..Default::default()
        })
        .into(),
        Hostname: "ctr".into(),
        Mounts: vec![
            mount("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"]),
            mount(
                "/dev",
                "tmpfs",
                "tmpfs",
                &["nosuid", "strictatime", "mode=755", "size=65536k"],
            ),
            mount(
                "/dev/pts",
                "devpts",
                "devpts",
                &[
                    "nosuid",
                    "noexec",
                    "newinstance",
                    "ptmxmode=0666",
                    "mode=0620",
                ],
            ),
            mount(
                "/dev/shm",
                "tmpfs",
                "shm",
                &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
            ),
            mount(
                "/dev/mqueue",
                "mqueue",
                "mqueue",
                &["nosuid", "noexec", "nodev"],
            ),
            mount(
                "/sys",
                "sysfs",
                "sysfs",
                &["nosuid", "noexec", "nodev", "ro"],
            ),
        ],
        Linux: Some(oci::Linux {
            Namespaces: namespaces,
            MaskedPaths: vec![
                "/proc/kcore".into(),
                "/proc/keys".into(),
                "/proc/acpi".into(),
            ],
            ReadonlyPaths: vec!["/proc/sys".into(), "/proc/sysrq-trigger".into()],
            ..Default::default()
        })
        .into(),
        ..Default::default()
    }
}

/// CreateContainer.
pub async fn create(client: &AgentClient, id: &str, spec: oci::Spec) -> ttrpc::Result<()> {
    let request = api::CreateContainerRequest {
        container_id: id.into(),
        exec_id: id.into(),
        OCI: Some(spec).into(),
        ..Default::default()
    };
    client
        .agent
        .create_container(context(RPC), &request)
        .await
        .map(drop)
}

/// StartContainer.
pub async fn start(client: &AgentClient, id: &str) -> ttrpc::Result<()> {
    let request = api::StartContainerRequest {
        container_id: id.into(),
        ..Default::default()
    };
    client
        .agent
        .start_container(context(RPC), &request)
        .await
        .map(drop)
}

/// Reads a stream to its end.
pub async fn read_all(client: &AgentClient, id: &str, exec: &str, stderr: bool) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let request = api::ReadStreamRequest {
            container_id: id.into(),
            exec_id: exec.into(),
            len: 64 * 1024,
            ..Default::default()
        };
        let reply = if stderr {
            client.agent.read_stderr(context(FOREVER), &request).await
        } else {
            client.agent.read_stdout(context(FOREVER), &request).await
        };
        match reply {
            Ok(reply) if !reply.data.is_empty() => out.extend_from_slice(&reply.data),
            _ => return out,
        }
    }
}

/// WaitProcess.
pub async fn wait(client: &AgentClient, id: &str, exec: &str) -> i32 {
    let request = api::WaitProcessRequest {
        container_id: id.into(),
        exec_id: exec.into(),
        ..Default::default()
    };
    client
        .agent
        .wait_process(context(FOREVER), &request)
        .await
        .expect("WaitProcess")
        .status
}

/// SignalProcess.
pub async fn signal(client: &AgentClient, id: &str, exec: &str, signal: u32) -> ttrpc::Result<()> {
    let request = api::SignalProcessRequest {
        container_id: id.into(),
        exec_id: exec.into(),
        signal,
        ..Default::default()
    };
    client
        .agent
        .signal_process(context(RPC), &request)
        .await
        .map(drop)
}

/// RemoveContainer.
pub async fn remove(client: &AgentClient, id: &str) -> ttrpc::Result<()> {
    let request = api::RemoveContainerRequest {
        container_id: id.into(),
        timeout: 20,
        ..Default::default()
    };
    client
        .agent
        .remove_container(context(RPC), &request)
        .await
        .map(drop)
}

/// Writes to stdin; empty data closes it.
pub async fn write_stdin(client: &AgentClient, id: &str, exec: &str, data: &[u8]) {
    let request = api::WriteStreamRequest {
        container_id: id.into(),
        exec_id: exec.into(),
        data: data.to_vec(),
        ..Default::default()
    };
    client
        .agent
        .write_stdin(context(FOREVER), &request)
        .await
        .expect("WriteStdin");
}

/// Runs a container to its end: (status, stdout, stderr). Removes it afterwards.
pub async fn run(client: &AgentClient, id: &str, spec: oci::Spec) -> (i32, Vec<u8>, Vec<u8>) {
    create(client, id, spec)
        .await
        .unwrap_or_else(|e| panic!("CreateContainer {id}: {e}"));
    start(client, id)
        .await
        .unwrap_or_else(|e| panic!("StartContainer {id}: {e}"));
    let (out, err, status) = tokio::join!(
        read_all(client, id, "", false),
        read_all(client, id, "", true),
        wait(client, id, "")
    );
    remove(client, id)
        .await
        .unwrap_or_else(|e| panic!("RemoveContainer {id}: {e}"));
    (status, out, err)
}

/// The status code of a ttrpc error.
pub fn code(result: ttrpc::Result<()>) -> ttrpc::Code {
    match result {
        Err(ttrpc::Error::RpcStatus(status)) => status.code(),
        other => panic!("expected an RPC status, got {other:?}"),
    }
}

/// The status code and message of a ttrpc error.
pub fn refusal(result: ttrpc::Result<()>) -> (ttrpc::Code, String) {
    match result {
        Err(ttrpc::Error::RpcStatus(status)) => (status.code(), status.message),
        other => panic!("expected an RPC status, got {other:?}"),
    }
}

/// The message of a ttrpc error.
pub fn message(result: ttrpc::Result<()>) -> String {
    match result {
        Err(ttrpc::Error::RpcStatus(status)) => status.message,
        other => panic!("expected an RPC status, got {other:?}"),
    }
}

/// A seccomp profile that allows everything but `names`, which fail with EPERM.
pub fn seccomp_denying(names: &[&str]) -> oci::LinuxSeccomp {
    oci::LinuxSeccomp {
        DefaultAction: "SCMP_ACT_ALLOW".into(),
        Syscalls: vec![oci::LinuxSyscall {
            Names: names.iter().map(|n| n.to_string()).collect(),
            Action: "SCMP_ACT_ERRNO".into(),
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// Where one run keeps its rootfs, as seen by the test and by the agent.
pub struct Rootfs {
    /// The directory the agent sees as root.path.
    pub agent_path: String,
}

/// Every scenario that needs no cgroup v2, in order. Each checks the agent still serves.
pub async fn lifecycle_scenarios(client: &AgentClient, rootfs: &Rootfs) {
    let root = rootfs.agent_path.as_str();

    // Output and exit codes.
    let (status, out, err) = run(
        client,
        "hello",
        spec(root, process(&["echo", "hello"], false)),
    )
    .await;
    assert_eq!(
        (status, out.as_slice(), err.as_slice()),
        (0, &b"hello\n"[..], &b""[..])
    );
    let (status, _, err) = run(
        client,
        "three",
        spec(root, process(&["sh", "-c", "echo oops >&2; exit 3"], false)),
    )
    .await;
    assert_eq!((status, err.as_slice()), (3, &b"oops\n"[..]));

    // Pod sysctls (a namespaced one) are written although /proc/sys is read-only.
    let mut tuned = spec(
        root,
        process(&["cat", "/proc/sys/kernel/shm_rmid_forced"], false),
    );
    if let Some(linux) = tuned.Linux.as_mut() {
        linux
            .Sysctl
            .insert("kernel.shm_rmid_forced".into(), "1".into());
    }
    let (status, out, err) = run(client, "sysctl", tuned).await;
    assert_eq!(
        (status, out.as_slice()),
        (0, &b"1\n"[..]),
        "sysctl: {}",
        String::from_utf8_lossy(&err)
    );

    // A bidirectional mount's rshared root propagation: pivot_root needs the rootfs's
    // parent mount private first; the container's "/" ends up shared.
    let mut shared = spec(
        root,
        process(&["awk", "$5 == \"/\"", "/proc/self/mountinfo"], false),
    );
    if let Some(linux) = shared.Linux.as_mut() {
        linux.RootfsPropagation = "rshared".into();
    }
    let (status, out, err) = run(client, "rshared", shared).await;
    let out = String::from_utf8_lossy(&out);
    assert!(
        status == 0 && out.contains("shared:"),
        "rshared: status {status}, root mount '{out}', {}",
        String::from_utf8_lossy(&err)
    );

    // A seccomp profile (deny-list: mkdir and mkdirat fail with EPERM) is installed,
    // before the credentials drop and, with noNewPrivileges, right before execve.
    for no_new_privs in [false, true] {
        let mut confined = spec(
            root,
            process(&["sh", "-c", "mkdir /tmp/denied; echo rc=$?"], false),
        );
        confined.Process.as_mut().unwrap().NoNewPrivileges = no_new_privs;
        confined.Linux.as_mut().unwrap().Seccomp =
            Some(seccomp_denying(&["mkdir", "mkdirat"])).into();
        let (status, out, err) = run(client, "seccomp", confined).await;
        let err = String::from_utf8_lossy(&err);
        assert_eq!(
            (status, out.as_slice()),
            (0, &b"rc=1\n"[..]),
            "seccomp (noNewPrivileges {no_new_privs}): {err}"
        );
        assert!(err.contains("Operation not permitted"), "seccomp: {err}");
    }
    // A profile the agent cannot install is refused, naming the field.
    let mut notify = spec(root, process(&["true"], false));
    let mut profile = seccomp_denying(&["mkdir"]);
    profile.Syscalls[0].Action = "SCMP_ACT_NOTIFY".into();
    notify.Linux.as_mut().unwrap().Seccomp = Some(profile).into();
    let (refused, said) = refusal(create(client, "seccomp-notify", notify).await);
    assert_eq!(refused, ttrpc::Code::INVALID_ARGUMENT, "{said}");
    assert!(said.contains("linux.seccomp.syscalls[0].action"), "{said}");

    // SIGKILL → 137, and killing again is fine.
    create(
        client,
        "sleeper",
        spec(root, process(&["sleep", "1000"], false)),
    )
    .await
    .unwrap();
    start(client, "sleeper").await.unwrap();
    signal(client, "sleeper", "", 9).await.unwrap();
    assert_eq!(wait(client, "sleeper", "").await, 137);
    signal(client, "sleeper", "", 9).await.unwrap();
    remove(client, "sleeper").await.unwrap();

    // stdin → stdout.
    create(client, "cat", spec(root, process(&["cat"], false)))
        .await
        .unwrap();
    start(client, "cat").await.unwrap();
    write_stdin(client, "cat", "", b"ping over stdin\n").await;
    write_stdin(client, "cat", "", b"").await;
    assert_eq!(
        read_all(client, "cat", "", false).await,
        b"ping over stdin\n"
    );
    assert_eq!(wait(client, "cat", "").await, 0);
    remove(client, "cat").await.unwrap();

    // A terminal: the process sees a pty of the size asked for.
    let mut tty = process(&["sh", "-c", "tty; stty size"], true);
    tty.ConsoleSize = Some(oci::Box {
        Height: 33,
        Width: 101,
        ..Default::default()
    })
    .into();
    let (status, out, _) = run(client, "tty", spec(root, tty)).await;
    let text = String::from_utf8_lossy(&out);
    assert_eq!(status, 0, "{text}");
    assert!(
        text.contains("/dev/pts/0") && text.contains("33 101"),
        "{text}"
    );

    // env, cwd, user and groups, hostname.
    let mut who = process(
        &["sh", "-c", "echo $FOO; pwd; id -u; id -g; id -G; hostname"],
        false,
    );
    who.Env.push("FOO=bar".into());
    who.Cwd = "/tmp/work".into();
    who.User = Some(oci::User {
        UID: 1000,
        GID: 1000,
        AdditionalGids: vec![1000, 10],
        ..Default::default()
    })
    .into();
    let (status, out, err) = run(client, "who", spec(root, who)).await;
    assert_eq!(status, 0, "{}", String::from_utf8_lossy(&err));
    assert_eq!(
        String::from_utf8_lossy(&out),
        "bar\n/tmp/work\n1000\n1000\n1000 10\nctr\n"
    );

    // A read-only rootfs.
    let mut ro = spec(
        root,
        process(
            &[
                "sh",
                "-c",
                "touch /x 2>/dev/null && echo writable || echo read-only",
            ],
            false,
        ),
    );
    ro.Root.as_mut().unwrap().Readonly = true;
    let (_, out, _) = run(client, "ro", ro).await;
    assert_eq!(out, b"read-only\n");

    // Exec into a running container, then into a stopped one.
    // (A PID-namespace init only gets signals it handles: hence the trap.)
    let base = process(
        &[
            "sh",
            "-c",
            "trap 'exit 7' TERM; while true; do sleep 0.1; done",
        ],
        false,
    );
    create(client, "base", spec(root, base)).await.unwrap();
    start(client, "base").await.unwrap();
    let exec = api::ExecProcessRequest {
        container_id: "base".into(),
        exec_id: "e1".into(),
        process: Some(process(
            &["sh", "-c", "echo exec-ok; cat /proc/1/comm; exit 5"],
            false,
        ))
        .into(),
        ..Default::default()
    };
    client
        .agent
        .exec_process(context(RPC), &exec)
        .await
        .expect("ExecProcess");
    let (out, status) = tokio::join!(
        read_all(client, "base", "e1", false),
        wait(client, "base", "e1")
    );
    assert_eq!(
        (status, String::from_utf8_lossy(&out).as_ref()),
        (5, "exec-ok\nsh\n")
    );
    signal(client, "base", "", 15).await.unwrap();
    assert_eq!(wait(client, "base", "").await, 7);
    let late = api::ExecProcessRequest {
        exec_id: "e2".into(),
        ..exec.clone()
    };
    let result = client
        .agent
        .exec_process(context(RPC), &late)
        .await
        .map(drop);
    assert_eq!(code(result), ttrpc::Code::FAILED_PRECONDITION);
    remove(client, "base").await.unwrap();

    // 10 MiB of stdout, byte for byte.
    let big = process(
        &["sh", "-c", "yes 0123456789abcdef | head -c 10485760"],
        false,
    );
    let (status, out, _) = run(client, "big", spec(root, big)).await;
    assert_eq!(status, 0);
    assert_eq!(out.len(), 10 << 20);
    assert!(
        out.chunks(17)
            .all(|line| line == &b"0123456789abcdef\n"[..line.len()])
    );

    bad_input(client, root).await;
}

/// Runs `args` in container `id` as exec `exec_id`: (status, stdout).
pub async fn exec_output(
    client: &AgentClient,
    id: &str,
    exec_id: &str,
    args: &[&str],
) -> (i32, String) {
    let request = api::ExecProcessRequest {
        container_id: id.into(),
        exec_id: exec_id.into(),
        process: Some(process(args, false)).into(),
        ..Default::default()
    };
    client
        .agent
        .exec_process(context(RPC), &request)
        .await
        .unwrap_or_else(|e| panic!("ExecProcess {exec_id} in {id}: {e}"));
    let (out, status) = tokio::join!(
        read_all(client, id, exec_id, false),
        wait(client, id, exec_id)
    );
    (status, String::from_utf8_lossy(&out).into_owned())
}

/// A CRI pod container of sandbox `sandbox_id` whose ipc, uts and pid entries carry
/// (host) paths, as containerd writes them for a pod sharing its PID namespace.
pub fn pod_member_spec(root: &str, process: oci::Process, sandbox_id: &str) -> oci::Spec {
    let mut spec = spec(root, process);
    spec.Hostname = "member".into();
    for ns in &mut spec.Linux.as_mut().unwrap().Namespaces {
        if ["ipc", "uts", "pid"].contains(&ns.Type.as_str()) {
            ns.Path = format!("/proc/4242/ns/{}", ns.Type);
        }
    }
    spec.Annotations.extend([
        (
            "io.kubernetes.cri.container-type".to_string(),
            "container".to_string(),
        ),
        (
            "io.kubernetes.cri.sandbox-id".to_string(),
            sandbox_id.to_string(),
        ),
    ]);
    spec
}

/// Prints the ipc, uts and pid namespaces of the shell, one per line.
const PRINT_NAMESPACES: &str = "for ns in ipc uts pid; do readlink /proc/self/ns/$ns; done";

/// A CRI pod: a sandbox container with new namespaces, and a pod container that shares
/// its ipc, uts and pid namespaces (so not its hostname, and its init is not PID 1), as
/// does an exec into it; then the refusals.
pub async fn pod_scenarios(client: &AgentClient, rootfs: &Rootfs) {
    let root = rootfs.agent_path.as_str();
    let mut sandbox = spec(root, process(&["sleep", "1000"], false));
    sandbox.Hostname = "pod".into();
    sandbox.Annotations.extend([
        (
            "io.kubernetes.cri.container-type".to_string(),
            "sandbox".to_string(),
        ),
        (
            "io.kubernetes.cri.sandbox-id".to_string(),
            "pod-sandbox".to_string(),
        ),
    ]);
    create(client, "pod-sandbox", sandbox).await.unwrap();
    start(client, "pod-sandbox").await.unwrap();
    let script = format!("{PRINT_NAMESPACES}; hostname");
    let (status, sandbox_view) =
        exec_output(client, "pod-sandbox", "ns", &["sh", "-c", &script]).await;
    assert_eq!(status, 0, "{sandbox_view}");
    let lines: Vec<&str> = sandbox_view.lines().collect();
    assert!(
        lines.len() == 4
            && lines[0].starts_with("ipc:[")
            && lines[1].starts_with("uts:[")
            && lines[2].starts_with("pid:[")
            && lines[3] == "pod",
        "{sandbox_view}"
    );
    let (_, apart, _) = run(
        client,
        "pod-apart",
        spec(root, process(&["sh", "-c", PRINT_NAMESPACES], false)),
    )
    .await;
    let apart = String::from_utf8_lossy(&apart).into_owned();
    assert_eq!(apart.lines().count(), 3, "{apart}");
    for (own, sandbox) in apart.lines().zip(sandbox_view.lines()) {
        assert_ne!(
            own, sandbox,
            "a plain container shares the sandbox's namespace"
        );
    }

    let member =
        format!("{PRINT_NAMESPACES}; hostname; [ $$ != 1 ] && echo not-pid-1; exec sleep 1000");
    let member_spec = pod_member_spec(root, process(&["sh", "-c", &member], false), "pod-sandbox");
    create(client, "pod-member", member_spec).await.unwrap();
    start(client, "pod-member").await.unwrap();
    let exec_script = format!("{PRINT_NAMESPACES}; hostname; cat /proc/1/comm");
    let (status, exec_view) =
        exec_output(client, "pod-member", "ns", &["sh", "-c", &exec_script]).await;
    assert_eq!(status, 0, "{exec_view}");
    assert_eq!(exec_view, format!("{sandbox_view}sleep\n"));
    // Not PID 1 of a namespace of its own, the init dies of an unhandled SIGTERM.
    signal(client, "pod-member", "", 15).await.unwrap();
    assert_eq!(wait(client, "pod-member", "").await, 143);
    let init_view = read_all(client, "pod-member", "", false).await;
    assert_eq!(
        String::from_utf8_lossy(&init_view),
        format!("{sandbox_view}not-pid-1\n")
    );
    remove(client, "pod-member").await.unwrap();

    pod_refusals(client, root).await;
    signal(client, "pod-sandbox", "", 9).await.unwrap();
    assert_eq!(wait(client, "pod-sandbox", "").await, 137);
    let late = pod_member_spec(root, process(&["true"], false), "pod-sandbox");
    let (code, text) = refusal(create(client, "pod-late", late).await);
    assert_eq!(code, ttrpc::Code::FAILED_PRECONDITION, "{text}");
    assert!(text.contains("pod sandbox 'pod-sandbox'"), "{text}");
    remove(client, "pod-sandbox").await.unwrap();
}

async fn pod_refusals(client: &AgentClient, root: &str) {
    let mut orphan = pod_member_spec(root, process(&["true"], false), "pod-sandbox");
    orphan.Annotations.remove("io.kubernetes.cri.sandbox-id");
    let (code, text) = refusal(create(client, "pod-orphan", orphan).await);
    assert_eq!(code, ttrpc::Code::INVALID_ARGUMENT, "{text}");
    assert!(
        text.contains(
            "linux.namespaces[0] (pid): path '/proc/4242/ns/pid' given but the container \
             names no pod sandbox"
        ),
        "{text}"
    );
    let lost = pod_member_spec(root, process(&["true"], false), "no-such-sandbox");
    let (code, text) = refusal(create(client, "pod-lost", lost).await);
    assert_eq!(code, ttrpc::Code::FAILED_PRECONDITION, "{text}");
    assert!(
        text.contains(
            "pod sandbox 'no-such-sandbox' (annotation io.kubernetes.cri.sandbox-id) is not \
             a container"
        ),
        "{text}"
    );
    assert_eq!(
        refusal(start(client, "pod-lost").await).0,
        ttrpc::Code::NOT_FOUND
    );
}

async fn bad_input(client: &AgentClient, root: &str) {
    // A spec without a process.
    let mut no_process = spec(root, process(&["true"], false));
    no_process.Process = None.into();
    let result = create(client, "bad1", no_process).await;
    assert!(message(result).contains("no process"));
    // A missing rootfs.
    let result = create(
        client,
        "bad2",
        spec("/no/such/rootfs", process(&["true"], false)),
    )
    .await;
    let text = message(result);
    assert!(text.contains("root.path '/no/such/rootfs'"), "{text}");
    // A mount escaping the root, a bad capability, a missing executable.
    let mut escape = spec(root, process(&["true"], false));
    escape
        .Mounts
        .push(mount("/../../etc", "tmpfs", "tmpfs", &[]));
    assert!(message(create(client, "bad3", escape).await).contains("mounts[6].destination"));
    let mut caps = process(&["true"], false);
    caps.Capabilities
        .as_mut()
        .unwrap()
        .Effective
        .push("CAP_TELEPORT".into());
    assert!(message(create(client, "bad4", spec(root, caps)).await).contains("CAP_TELEPORT"));
    // As with runc, a program that cannot be run fails Create (not Start), and leaves no
    // container behind; so does a directory.
    for (id, program) in [
        ("bad5", "/no/such/binary"),
        ("bad6", "/bin"),
        ("bad7", "nosuchprog"),
    ] {
        let text = message(create(client, id, spec(root, process(&[program], false))).await);
        assert!(text.contains(&format!("'{program}'")), "{text}");
        assert_eq!(code(start(client, id).await), ttrpc::Code::NOT_FOUND);
    }
    // Unknown and duplicate ids.
    assert_eq!(code(start(client, "nope").await), ttrpc::Code::NOT_FOUND);
    assert_eq!(
        code(signal(client, "nope", "", 9).await),
        ttrpc::Code::NOT_FOUND
    );
    assert_eq!(
        code(create(client, "../evil", spec(root, process(&["true"], false))).await),
        ttrpc::Code::INVALID_ARGUMENT
    );
    create(client, "dup", spec(root, process(&["true"], false)))
        .await
        .unwrap();
    assert_eq!(
        code(create(client, "dup", spec(root, process(&["true"], false))).await),
        ttrpc::Code::ALREADY_EXISTS
    );
    remove(client, "dup").await.unwrap();
    assert_eq!(
        code(signal(client, "dup", "", 9).await),
        ttrpc::Code::NOT_FOUND
    );
    client
        .check(RPC)
        .await
        .expect("the agent still serves after bad input");
}

/// Sends a ttrpc frame with a garbage payload and then raw garbage on `stream`; the agent
/// must keep serving other connections.
pub async fn garbage_frames(mut stream: tokio::net::UnixStream) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let payload = b"\xff\xff\xff\xff garbage that is not protobuf";
    let mut frame = Vec::new();
    frame.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    frame.extend_from_slice(&1u32.to_be_bytes());
    frame.extend_from_slice(&[1, 0]);
    frame.extend_from_slice(payload);
    stream.write_all(&frame).await.unwrap();
    let mut header = [0u8; 10];
    // Either an error response or a closed connection is acceptable; a hang is not.
    let answered = tokio::time::timeout(Duration::from_secs(20), stream.read(&mut header)).await;
    assert!(
        answered.is_ok(),
        "the agent neither answered nor closed a garbage request"
    );
    let _ = stream.write_all(&[0xde; 4096]).await;
}

/// A scratch directory removed on drop.
pub struct Scratch(pub PathBuf);

impl Scratch {
    /// Creates `/tmp/<name>-<pid>` (or under `base`).
    pub fn new(base: &Path, name: &str) -> Self {
        let dir = base.join(format!("{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
