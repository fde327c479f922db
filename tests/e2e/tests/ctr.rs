//! `ctr run --runtime containerd-shim-kata-v2` end to end, against a private containerd
//! (config and state in a temp dir) inside the KVM test host of this architecture: every
//! case runs a real microVM. After every case nothing of it may remain: no shim process,
//! no mounts under /run/kata*, no shim socket of this run, no /run/kata/<id>.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use kata_rv_e2e::memory_cgroup_dir;
use kvm_host::{Arch, artifacts};

fn arch() -> Arch {
    Arch::native().expect("riscv64 or x86_64")
}

/// The private containerd of this test run.
struct Containerd {
    dir: PathBuf,
    /// The daemon; a fault case replaces it when it kills and restarts containerd.
    child: Mutex<Child>,
}

impl Containerd {
    /// Stops containerd and removes its directory (the instance is a static: no Drop).
    fn stop(&self) {
        let pid = nix::unistd::Pid::from_raw(self.pid());
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let _ = nix::sys::wait::waitpid(pid, None);
        let _ = std::fs::remove_dir_all(&self.dir);
    }

    /// The daemon's pid.
    fn pid(&self) -> i32 {
        self.child.lock().unwrap().id() as i32
    }

    /// Starts containerd on the config in `dir` (its output appended to
    /// `containerd.log`) and waits until it answers.
    fn spawn(dir: &Path) -> Child {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("containerd.log"))
            .unwrap();
        let mut child = Command::new(tool("containerd"))
            .arg("--config")
            .arg(dir.join("config.toml"))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("starting containerd");
        let started = Instant::now();
        loop {
            // A socket left by a killed containerd exists before the new one listens.
            let answered = Command::new(tool("ctr"))
                .arg("-a")
                .arg(dir.join("containerd.sock"))
                .arg("version")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if answered {
                return child;
            }
            if let Some(status) = child.try_wait().unwrap() {
                panic!(
                    "containerd exited at start ({status}); see {}",
                    dir.join("containerd.log").display()
                );
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "containerd did not answer in 60 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// SIGKILLs containerd (a crash) and starts it again on the same root and state.
    fn kill_and_restart(&self) {
        let mut child = self.child.lock().unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
        *child = Containerd::spawn(&self.dir);
    }
}

fn tool(name: &str) -> PathBuf {
    // riscv64 test hosts carry the cross-built containerd/ctr in out/riscv64.
    let built = artifacts::out_dir(arch()).join(name);
    if built.exists() {
        built
    } else {
        PathBuf::from(name)
    }
}

fn shim() -> PathBuf {
    artifacts::out_dir(arch()).join("containerd-shim-kata-v2")
}

/// How long the shim waits for the agent. Five VMs booting at once inside an emulated
/// single-vCPU x86_64 test host on a busy machine have taken over 30 s (the default).
const AGENT_WAIT: &str = "reconnect_timeout_ms = 300000";

fn kata_config(dir: &Path, name: &str, kernel: &Path, extra: &str) -> PathBuf {
    let file = dir.join(format!("{name}.toml"));
    let text = format!(
        "[hypervisor.dragonball]\nkernel = \"{}\"\ninitrd = \"{}\"\ndefault_memory = 256\n{extra}\n[agent.kata]\n{AGENT_WAIT}\n[runtime]\n",
        kernel.display(),
        artifacts::out_dir(arch())
            .join("kata-containers-initrd.img")
            .display()
    );
    std::fs::write(&file, text).unwrap();
    file
}

fn containerd() -> &'static Containerd {
    static INSTANCE: OnceLock<Containerd> = OnceLock::new();
    INSTANCE.get_or_init(|| {
        let dir = PathBuf::from(format!("/tmp/kata-e2e-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let config = format!(
            "version = 2\nroot = \"{d}/root\"\nstate = \"{d}/state\"\ndisabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
             [grpc]\n  address = \"{d}/containerd.sock\"\n[ttrpc]\n  address = \"{d}/containerd.sock.ttrpc\"\n",
            d = dir.display()
        );
        std::fs::write(dir.join("config.toml"), config).unwrap();
        kata_config(&dir, "kata", &artifacts::kernel(arch()), "");
        let _ = std::fs::remove_file(dir.join("containerd.log"));
        let child = Mutex::new(Containerd::spawn(&dir));
        let image = artifacts::out_dir(arch()).parent().unwrap().join(format!("images/busybox-{}.tar", arch().name()));
        let this = Containerd { dir, child };
        let out = this.ctr(&["images", "import", "--all-platforms", image.to_str().unwrap()]);
        assert!(out.status.success(), "import: {}", String::from_utf8_lossy(&out.stderr));
        this
    })
}

impl Containerd {
    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(tool("ctr"));
        command
            .arg("-a")
            .arg(self.dir.join("containerd.sock"))
            .args(args);
        command
    }

    fn ctr(&self, args: &[&str]) -> Output {
        self.command(args)
            .stdin(Stdio::null())
            .output()
            .expect("running ctr")
    }

    /// `--runtime <shim> --runtime-config-path <this run's configuration>`.
    fn runtime(&self) -> Vec<String> {
        vec![
            "--runtime".into(),
            shim().to_string_lossy().into_owned(),
            "--runtime-config-path".into(),
            self.dir.join("kata.toml").to_string_lossy().into_owned(),
        ]
    }

    /// `ctr run --rm <runtime> [flags] busybox <id> <cmd…>`; flags may name another
    /// `--runtime-config-path`, which then wins.
    fn run(&self, id: &str, flags: &[&str], cmd: &[&str]) -> Output {
        let runtime = self.runtime();
        let mut args: Vec<&str> = vec!["run", "--rm"];
        if flags.contains(&"--runtime-config-path") {
            args.extend(runtime[..2].iter().map(String::as_str));
        } else {
            args.extend(runtime.iter().map(String::as_str));
        }
        args.extend_from_slice(flags);
        args.push("docker.io/library/busybox:latest");
        args.push(id);
        args.extend_from_slice(cmd);
        self.ctr(&args)
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The last `n` lines of this run's containerd log (the shims' logs included).
fn containerd_log_tail(ctrd: &Containerd, n: usize) -> String {
    let log = std::fs::read_to_string(ctrd.dir.join("containerd.log")).unwrap_or_default();
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Nothing of container `id` remains on the host.
fn assert_nothing_left(id: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let shims = shim_pids().join(" ");
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let leaked_mounts: Vec<&str> = mounts.lines().filter(|l| l.contains("/run/kata")).collect();
        let run_dir = Path::new("/run/kata").join(id).exists();
        let share = Path::new("/run/kata-containers/shared/sandboxes")
            .join(id)
            .exists();
        let cgroup = memory_cgroup_dir(&ctr_cgroup(id)).exists();
        if shims.trim().is_empty() && leaked_mounts.is_empty() && !run_dir && !share && !cgroup {
            return;
        }
        if Instant::now() >= deadline {
            let log = std::fs::read_to_string(containerd().dir.join("containerd.log"))
                .unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            panic!(
                "{id} left behind: shims [{}] mounts {leaked_mounts:?} /run/kata/{id}: {run_dir} share: {share} cgroup: {cgroup}\ncontainerd log tail:\n{}",
                shims.trim(),
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The host cgroup ctr gives container `id`: `/<namespace>/<id>`.
fn ctr_cgroup(id: &str) -> String {
    format!("/default/{id}")
}

/// The shim of sandbox `id` (and so its VMM) runs in the cgroup ctr named, limited to the
/// VM's memory (default_memory = 256) plus the 128 MiB overhead.
fn assert_in_sandbox_cgroup(id: &str) {
    let shims = shim_pids();
    let shim = shims
        .iter()
        .find(|s| s.contains(&format!("-id {id} ")) || s.ends_with(&format!("-id {id}")))
        .unwrap_or_else(|| panic!("no shim for {id} in {shims:?}"));
    let pid = shim.split(':').next().unwrap();
    let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let expected = ctr_cgroup(id);
    assert!(
        cgroups.lines().any(|l| l.ends_with(&format!(":{expected}"))
            && (l.starts_with("0::") || l.contains("memory"))),
        "shim {pid} is not in {expected}: {cgroups}"
    );
    let dir = memory_cgroup_dir(&expected);
    let limit = ["memory.max", "memory.limit_in_bytes"]
        .iter()
        .find_map(|f| std::fs::read_to_string(dir.join(f)).ok())
        .unwrap_or_else(|| panic!("no memory limit in {}", dir.display()));
    assert_eq!(
        limit.trim(),
        ((256u64 + 128) << 20).to_string(),
        "{}",
        dir.display()
    );
}

/// Pids of running shim processes (from /proc: no pgrep in every test host).
fn shim_pids() -> Vec<String> {
    processes_named("containerd-shim-kata-v2")
}

/// "pid: cmdline" of every process whose program path ends with `name`.
fn processes_named(name: &str) -> Vec<String> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|entry| {
            entry
                .file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
        })
        .filter_map(|entry| {
            let cmdline =
                text(&std::fs::read(entry.path().join("cmdline")).ok()?).replace('\0', " ");
            // The shim itself, not a ctr naming it with --runtime.
            let program = cmdline.split(' ').next()?.to_string();
            program
                .ends_with(name)
                .then(|| format!("{}: {cmdline}", entry.file_name().to_string_lossy()))
        })
        .collect()
}

fn sockets_of_this_run() -> usize {
    // Shim sockets are named by a hash of (containerd address, namespace, id); ours are the
    // only shims running, so after a case the directory must hold none of them.
    std::fs::read_dir("/run/containerd/s")
        .map(|d| d.count())
        .unwrap_or(0)
}

#[test]
fn ctr_runs_containers_in_microvms_and_leaves_nothing_behind() {
    if !Path::new("/dev/kvm").exists() {
        assert!(
            !kvm_host::testing::kvm_required(),
            "KATA_TEST_REQUIRE_KVM=1 but /dev/kvm is missing"
        );
        eprintln!("SKIPPED ctr e2e: no /dev/kvm");
        return;
    }
    let ctrd = containerd();
    let sockets_before = sockets_of_this_run();

    // echo hello, and the guest kernel/arch.
    let started = Instant::now();
    let out = ctrd.run("hello", &[], &["sh", "-c", "echo hello; uname -m"]);
    println!("ctr run echo hello: {} ms", started.elapsed().as_millis());
    let expected_arch = if arch() == Arch::X86_64 {
        "x86_64"
    } else {
        "riscv64"
    };
    assert_eq!(
        text(&out.stdout),
        format!("hello\n{expected_arch}\n"),
        "stderr: {}",
        text(&out.stderr)
    );
    assert!(out.status.success());
    assert_nothing_left("hello");

    // What pods commonly expect of the guest kernel: inotify and fanotify (their sysctls
    // exist only when built in) and keyrings (/proc/keys).
    let out = ctrd.run(
        "kernel-features",
        &[],
        &[
            "sh",
            "-c",
            "cat /proc/sys/fs/inotify/max_user_watches /proc/sys/fs/fanotify/max_user_marks && test -e /proc/keys && echo keys",
        ],
    );
    let said = text(&out.stdout);
    assert!(
        out.status.success() && said.ends_with("keys\n") && said.lines().count() == 3,
        "stdout: {said} stderr: {}",
        text(&out.stderr)
    );
    assert_nothing_left("kernel-features");

    // The external virtiofsd backend (shared_fs = "virtio-fs"), sandboxed: chrooted into
    // the share, under its seccomp filter. (Its default namespace sandbox pivot_roots,
    // which the test hosts' initramfs root does not allow.) It goes with the sandbox.
    let extra = virtiofsd_config();
    let config = kata_config(&ctrd.dir, "virtiofsd", &artifacts::kernel(arch()), &extra);
    let out = ctrd.run(
        "vfsd",
        &["--runtime-config-path", config.to_str().unwrap()],
        &["echo", "via-virtiofsd"],
    );
    assert_eq!(
        text(&out.stdout),
        "via-virtiofsd\n",
        "stderr: {}",
        text(&out.stderr)
    );
    assert_nothing_left("vfsd");
    assert!(
        processes_named("virtiofsd").is_empty(),
        "virtiofsd left behind"
    );

    // Exit code 42 propagates.
    let out = ctrd.run("exit42", &[], &["sh", "-c", "exit 42"]);
    assert_eq!(out.status.code(), Some(42), "stderr: {}", text(&out.stderr));
    assert_nothing_left("exit42");

    // stdin piped into the container.
    let runtime = ctrd.runtime();
    let mut args: Vec<&str> = vec!["run", "--rm"];
    args.extend(runtime.iter().map(String::as_str));
    args.extend(["docker.io/library/busybox:latest", "stdin", "cat"]);
    let mut child = ctrd
        .command(&args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"piped through\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        text(&out.stdout),
        "piped through\n",
        "{:?}, stderr: {}\ncontainerd log tail:\n{}",
        out.status,
        text(&out.stderr),
        containerd_log_tail(ctrd, 60)
    );
    assert_nothing_left("stdin");

    // env and cwd from flags; the image's PATH.
    let out = ctrd.run(
        "env",
        &["--env", "FOO=bar", "--cwd", "/tmp"],
        &["sh", "-c", "echo $FOO; pwd; echo $PATH"],
    );
    let lines = text(&out.stdout);
    assert!(
        lines.starts_with("bar\n/tmp\n") && lines.contains("/bin"),
        "{lines} / {}",
        text(&out.stderr)
    );
    assert_nothing_left("env");

    // A read-only rootfs.
    let out = ctrd.run(
        "ro",
        &["--read-only"],
        &[
            "sh",
            "-c",
            "touch /x 2>/dev/null && echo writable || echo read-only",
        ],
    );
    assert_eq!(
        text(&out.stdout),
        "read-only\n",
        "stderr: {}",
        text(&out.stderr)
    );
    assert_nothing_left("ro");

    // A bind mount from the host, read-only.
    let data = ctrd.dir.join("bind-src");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("hello.txt"), "from the host\n").unwrap();
    let mount = format!(
        "type=bind,src={},dst=/data,options=rbind:ro",
        data.display()
    );
    let out = ctrd.run(
        "bind",
        &["--mount", &mount],
        &[
            "sh",
            "-c",
            "cat /data/hello.txt; touch /data/x 2>/dev/null || echo ro",
        ],
    );
    assert_eq!(
        text(&out.stdout),
        "from the host\nro\n",
        "stderr: {}",
        text(&out.stderr)
    );
    assert_nothing_left("bind");

    // 1 MiB of output intact.
    let out = ctrd.run(
        "big",
        &[],
        &["sh", "-c", "yes 0123456789abcdef | head -c 1048576"],
    );
    assert_eq!(out.stdout.len(), 1 << 20, "stderr: {}", text(&out.stderr));
    assert!(
        out.stdout
            .chunks(17)
            .all(|line| line == &b"0123456789abcdef\n"[..line.len()])
    );
    assert_nothing_left("big");

    // A terminal.
    let out = run_with_pty(ctrd, "tty", &["sh", "-c", "tty; stty size"]);
    assert!(out.contains("/dev/pts/0"), "{out}");
    assert_nothing_left("tty");

    // Detached, exec, ps, kill -s TERM, rm.
    detached_lifecycle(ctrd);
    assert_nothing_left("bg");

    // A memory limit: the hog is OOM-killed and containerd publishes /tasks/oom.
    oom_event(ctrd);
    assert_nothing_left("oom");

    // Five containers in parallel.
    let handles: Vec<_> = (0..5)
        .map(|i| {
            std::thread::spawn(move || {
                let id = format!("par{i}");
                let out = containerd().run(&id, &[], &["echo", &id]);
                (id, out)
            })
        })
        .collect();
    for handle in handles {
        let (id, out) = handle.join().unwrap();
        assert_eq!(
            text(&out.stdout),
            format!("{id}\n"),
            "stderr: {}",
            text(&out.stderr)
        );
        assert_nothing_left(&id);
    }

    bad_input(ctrd);
    regressions(ctrd);
    seccomp_profiles(ctrd);
    guest_root_writes_the_share_root(ctrd);
    virtiofsd_killed_mid_run(ctrd);
    shim_killed(ctrd);
    other_faults(ctrd);
    soak(ctrd, soak_cycles());
    assert_eq!(
        sockets_of_this_run(),
        sockets_before,
        "shim sockets left in /run/containerd/s"
    );
    ctrd.stop();
}

fn run_with_pty(ctrd: &Containerd, id: &str, cmd: &[&str]) -> String {
    let pty = nix::pty::openpty(None, None).unwrap();
    let slave = || Stdio::from(pty.slave.try_clone().unwrap());
    let runtime = ctrd.runtime();
    let mut args: Vec<&str> = vec!["run", "--rm", "-t"];
    args.extend(runtime.iter().map(String::as_str));
    args.extend(["docker.io/library/busybox:latest", id]);
    args.extend_from_slice(cmd);
    let mut child = ctrd
        .command(&args)
        .stdin(slave())
        .stdout(slave())
        .stderr(slave())
        .spawn()
        .unwrap();
    drop(pty.slave);
    let status = child.wait().unwrap();
    let mut master = std::fs::File::from(pty.master);
    let flags = nix::fcntl::OFlag::from_bits_truncate(
        nix::fcntl::fcntl(&master, nix::fcntl::FcntlArg::F_GETFL).unwrap(),
    );
    nix::fcntl::fcntl(
        &master,
        nix::fcntl::FcntlArg::F_SETFL(flags | nix::fcntl::OFlag::O_NONBLOCK),
    )
    .unwrap();
    let mut out = Vec::new();
    let mut chunk = [0u8; 4096];
    while let Ok(n) = master.read(&mut chunk) {
        if n == 0 {
            break;
        }
        out.extend_from_slice(&chunk[..n]);
    }
    assert!(status.success(), "ctr -t: {status:?} {}", text(&out));
    text(&out)
}

fn detached_lifecycle(ctrd: &Containerd) {
    let runtime = ctrd.runtime();
    let mut args: Vec<&str> = vec!["run", "-d"];
    args.extend(runtime.iter().map(String::as_str));
    args.extend([
        "docker.io/library/busybox:latest",
        "bg",
        "sh",
        "-c",
        "trap 'exit 0' TERM; while true; do sleep 0.2; done",
    ]);
    let out = ctrd.ctr(&args);
    assert!(out.status.success(), "run -d: {}", text(&out.stderr));
    assert_in_sandbox_cgroup("bg");
    let out = ctrd.ctr(&[
        "task",
        "exec",
        "--exec-id",
        "e1",
        "bg",
        "sh",
        "-c",
        "echo exec-ok; cat /proc/1/comm",
    ]);
    assert_eq!(
        text(&out.stdout),
        "exec-ok\nsh\n",
        "exec: {}",
        text(&out.stderr)
    );
    let out = ctrd.ctr(&["task", "ps", "bg"]);
    assert!(
        out.status.success() && text(&out.stdout).contains("PID"),
        "ps: {}",
        text(&out.stderr)
    );
    // Update reaches the guest cgroup and Stats reports it (ctr's cgroups v1 table).
    update_memory_limit(ctrd, "bg", 67108864);
    let out = ctrd.ctr(&["task", "metrics", "bg"]);
    let metrics = text(&out.stdout);
    let value = |name: &str| {
        metrics.lines().find_map(|l| {
            let mut f = l.split_whitespace();
            (f.next() == Some(name)).then(|| f.next().unwrap_or("").to_string())
        })
    };
    assert_eq!(
        value("memory.limit_in_bytes").as_deref(),
        Some("67108864"),
        "metrics: {metrics} {}",
        text(&out.stderr)
    );
    let usage: u64 = value("memory.usage_in_bytes")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    assert!(usage > 0, "memory usage in {metrics}");
    // Pause and resume.
    for (verb, status) in [("pause", "PAUSED"), ("resume", "RUNNING")] {
        let out = ctrd.ctr(&["task", verb, "bg"]);
        assert!(out.status.success(), "{verb}: {}", text(&out.stderr));
        let out = ctrd.ctr(&["task", "ls"]);
        assert!(
            text(&out.stdout)
                .lines()
                .any(|l| l.starts_with("bg") && l.contains(status)),
            "after {verb}: {}",
            text(&out.stdout)
        );
    }
    let out = ctrd.ctr(&["task", "kill", "-s", "TERM", "bg"]);
    assert!(out.status.success(), "kill: {}", text(&out.stderr));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = ctrd.ctr(&["task", "ls"]);
        if text(&out.stdout)
            .lines()
            .any(|l| l.starts_with("bg") && l.contains("STOPPED"))
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "bg did not stop: {}",
            text(&out.stdout)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let out = ctrd.ctr(&["task", "rm", "bg"]);
    assert!(out.status.success(), "task rm: {}", text(&out.stderr));
    let out = ctrd.ctr(&["containers", "rm", "bg"]);
    assert!(out.status.success(), "containers rm: {}", text(&out.stderr));
}

/// Task.Update straight to the shim of task `id` (ctr 1.6 has no `task update`; CRI
/// sends the same request), with a memory limit as OCI LinuxResources JSON.
fn update_memory_limit(ctrd: &Containerd, id: &str, bytes: u64) {
    use containerd_shim_protos::api::UpdateTaskRequest;
    use containerd_shim_protos::{Client, TaskClient};
    let address_file = ctrd
        .dir
        .join("state/io.containerd.runtime.v2.task/default")
        .join(id)
        .join("address");
    let address = std::fs::read_to_string(&address_file)
        .unwrap_or_else(|e| panic!("{}: {e}", address_file.display()));
    let client = TaskClient::new(Client::connect(address.trim()).expect("connecting to the shim"));
    let resources = protobuf::well_known_types::any::Any {
        type_url: "types.containerd.io/opencontainers/runtime-spec/1/LinuxResources".into(),
        value: format!("{{\"memory\":{{\"limit\":{bytes}}}}}").into_bytes(),
        ..Default::default()
    };
    let request = UpdateTaskRequest {
        id: id.into(),
        resources: Some(resources).into(),
        ..Default::default()
    };
    client
        .update(ttrpc::context::with_timeout(10_000_000_000), &request)
        .expect("Task.Update");
}

fn oom_event(ctrd: &Containerd) {
    let mut events = ctrd
        .command(&["events"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("ctr events");
    let out = ctrd.run(
        "oom",
        &["--memory-limit", "33554432"],
        &[
            "sh",
            "-c",
            "exec awk 'BEGIN { s = \"x\"; while (1) s = s s }'",
        ],
    );
    assert_eq!(
        out.status.code(),
        Some(137),
        "stderr: {}",
        text(&out.stderr)
    );
    // Events reach `ctr events` asynchronously: wait for the oom one.
    let (lines, received) = std::sync::mpsc::channel();
    let stdout = events.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seen = Vec::new();
    let found = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match received.recv_timeout(left) {
            Ok(line) => {
                let hit = line.contains("/tasks/oom") && line.contains("\"oom\"");
                seen.push(line);
                if hit {
                    break true;
                }
            }
            Err(_) => break false,
        }
    };
    let _ = events.kill();
    let _ = events.wait();
    let _ = reader.join();
    assert!(
        found,
        "no /tasks/oom for oom within 30 s; events:\n{}",
        seen.join("\n")
    );
}

fn bad_input(ctrd: &Containerd) {
    // A configuration naming a kernel that does not exist.
    let missing = kata_config(
        &ctrd.dir,
        "missing-kernel",
        Path::new("/no/such/kernel"),
        "",
    );
    let out = ctrd.run(
        "badkernel",
        &["--runtime-config-path", missing.to_str().unwrap()],
        &["true"],
    );
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("hypervisor.dragonball.kernel") && err.contains("/no/such/kernel"),
        "{err}"
    );
    assert_nothing_left("badkernel");
    let _ = ctrd.ctr(&["containers", "rm", "badkernel"]);

    // A configuration with an unknown key.
    let broken = kata_config(
        &ctrd.dir,
        "unknown-key",
        &artifacts::kernel(arch()),
        "kernel_parms = \"x\"",
    );
    let out = ctrd.run(
        "badconfig",
        &["--runtime-config-path", broken.to_str().unwrap()],
        &["true"],
    );
    let err = text(&out.stderr);
    assert!(
        !out.status.success()
            && err.contains("kernel_parms")
            && err.contains(broken.to_str().unwrap()),
        "{err}"
    );
    assert_nothing_left("badconfig");
    let _ = ctrd.ctr(&["containers", "rm", "badconfig"]);

    // A runtime config path that does not exist.
    let out = ctrd.run(
        "nofile",
        &["--runtime-config-path", "/no/such/config.toml"],
        &["true"],
    );
    let err = text(&out.stderr);
    assert!(
        !out.status.success() && err.contains("/no/such/config.toml"),
        "{err}"
    );
    assert_nothing_left("nofile");
    let _ = ctrd.ctr(&["containers", "rm", "nofile"]);
}

/// Defects users hit, each once reproduced with ctr.
fn regressions(ctrd: &Containerd) {
    // A container named `shared`: the agent's bundle of that name was the parent of the
    // guest's share mount, and its cleanup deleted the host volume's files through it.
    let volume = ctrd.dir.join("shared-volume");
    std::fs::create_dir_all(volume.join("sub")).unwrap();
    std::fs::write(volume.join("keep"), "kept\n").unwrap();
    std::fs::write(volume.join("sub/also"), "also\n").unwrap();
    let mount = format!(
        "type=bind,src={},dst=/vol,options=rbind:rw",
        volume.display()
    );
    let out = ctrd.run("shared", &["--mount", &mount], &["cat", "/vol/keep"]);
    assert_eq!(text(&out.stdout), "kept\n", "stderr: {}", text(&out.stderr));
    assert_nothing_left("shared");
    assert_eq!(
        std::fs::read_to_string(volume.join("keep")).unwrap(),
        "kept\n"
    );
    assert_eq!(
        std::fs::read_to_string(volume.join("sub/also")).unwrap(),
        "also\n"
    );

    // A program that does not exist fails at create, as with runc, naming it; the
    // container record, the shim, its VM, mounts and sockets all go.
    let out = ctrd.run("noexec", &[], &["/no/such/binary"]);
    let err = text(&out.stderr);
    assert!(
        !out.status.success() && err.contains("/no/such/binary"),
        "{err}"
    );
    assert_nothing_left("noexec");
    assert_no_container_record(ctrd, "noexec");

    // A program that exists but cannot be executed (ENOEXEC) gets past create and fails
    // at start: the task must still end up stopped and removable, and `--rm` removes it.
    let garbage = ctrd.dir.join("not-a-program");
    std::fs::write(&garbage, [0xde, 0xad, 0xbe, 0xef, 0, 1, 2, 3]).unwrap();
    std::fs::set_permissions(
        &garbage,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let mount = format!(
        "type=bind,src={},dst=/not-a-program,options=rbind:ro",
        garbage.display()
    );
    let out = ctrd.run("badstart", &["--mount", &mount], &["/not-a-program"]);
    let err = text(&out.stderr);
    assert!(
        !out.status.success() && err.contains("not-a-program"),
        "{err}"
    );
    // Whatever `ctr run --rm` could not remove, a forced task and container removal must.
    let _ = ctrd.ctr(&["tasks", "rm", "-f", "badstart"]);
    let _ = ctrd.ctr(&["containers", "rm", "badstart"]);
    assert_nothing_left("badstart");
    assert_no_container_record(ctrd, "badstart");
}

/// The `[hypervisor.dragonball]` keys of the external, sandboxed virtiofsd backend
/// (chroot: the test hosts' initramfs root cannot be pivoted away from).
fn virtiofsd_config() -> String {
    format!(
        "shared_fs = \"virtio-fs\"\nvirtio_fs_daemon = \"{}\"\nvirtio_fs_extra_args = [\"--sandbox=chroot\"]",
        artifacts::out_dir(arch()).join("virtiofsd").display()
    )
}

/// Fault: virtiofsd is SIGKILLed under a running container. The VMM ends the VM (the
/// guest's file system is gone), the task exits within a bound instead of looking
/// alive, and removing it leaves nothing.
fn virtiofsd_killed_mid_run(ctrd: &Containerd) {
    let extra = virtiofsd_config();
    let config = kata_config(&ctrd.dir, "vfsd-fault", &artifacts::kernel(arch()), &extra);
    let runtime = ctrd.runtime();
    let mut args: Vec<&str> = vec!["run", "-d"];
    args.extend(runtime[..2].iter().map(String::as_str));
    args.extend(["--runtime-config-path", config.to_str().unwrap()]);
    args.extend([
        "docker.io/library/busybox:latest",
        "vfsd-fault",
        "sleep",
        "3600",
    ]);
    let out = ctrd.ctr(&args);
    assert!(out.status.success(), "run -d: {}", text(&out.stderr));
    let daemons = processes_named("virtiofsd");
    assert_eq!(daemons.len(), 1, "one virtiofsd: {daemons:?}");
    let pid: i32 = daemons[0].split(':').next().unwrap().parse().unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    wait_stopped(
        ctrd,
        "vfsd-fault",
        Duration::from_secs(120),
        "after its virtiofsd was killed",
    );
    let _ = ctrd.ctr(&["tasks", "rm", "-f", "vfsd-fault"]);
    let _ = ctrd.ctr(&["containers", "rm", "vfsd-fault"]);
    assert_nothing_left("vfsd-fault");
    assert_no_container_record(ctrd, "vfsd-fault");
    assert!(
        processes_named("virtiofsd").is_empty(),
        "virtiofsd left behind"
    );
}

/// Waits until `ctr tasks ls` shows task `id` no longer RUNNING (ctr 1.6 has no
/// `tasks wait`); panics after `bound`, saying `after` what.
fn wait_stopped(ctrd: &Containerd, id: &str, bound: Duration, after: &str) {
    let started = Instant::now();
    loop {
        let listing = text(&ctrd.ctr(&["tasks", "ls"]).stdout);
        let running = listing
            .lines()
            .any(|l| l.split_whitespace().next() == Some(id) && l.contains("RUNNING"));
        if !running {
            return;
        }
        assert!(
            started.elapsed() < bound,
            "{id}: still RUNNING {} s {after}: {listing}",
            bound.as_secs()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// containerd has no record of container `id`.
fn assert_no_container_record(ctrd: &Containerd, id: &str) {
    let out = ctrd.ctr(&["containers", "ls", "-q"]);
    let listed = text(&out.stdout);
    assert!(
        !listed.lines().any(|l| l.trim() == id),
        "container {id} is still listed: {listed}"
    );
}

/// A digest of every file under `dir` (path, mode, contents): a host volume must come
/// out of every fault byte-identical.
fn tree_digest(dir: &Path) -> Vec<(PathBuf, u32, Vec<u8>)> {
    use std::os::unix::fs::PermissionsExt;
    let mut out = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(d) = pending.pop() {
        for entry in std::fs::read_dir(&d).unwrap().flatten() {
            let meta = std::fs::symlink_metadata(entry.path()).unwrap();
            let contents = if meta.is_dir() {
                pending.push(entry.path());
                Vec::new()
            } else {
                std::fs::read(entry.path()).unwrap_or_default()
            };
            out.push((entry.path(), meta.permissions().mode(), contents));
        }
    }
    out.sort();
    out
}

/// Pid of the shim serving container `id`, if one runs.
fn shim_of(id: &str) -> Option<i32> {
    shim_pids()
        .iter()
        .find(|s| s.contains(&format!("-id {id} ")) || s.ends_with(&format!("-id {id}")))
        .and_then(|s| s.split(':').next()?.parse().ok())
}

/// Seccomp in the guest: `--seccomp` (containerd's default profile, what Kubernetes'
/// RuntimeDefault is) confines the container; a custom profile denying mkdir confines
/// the init and an exec alike.
fn seccomp_profiles(ctrd: &Containerd) {
    let out = ctrd.run(
        "seccomp-default",
        &["--seccomp"],
        &["grep", "^Seccomp:", "/proc/self/status"],
    );
    assert_eq!(
        text(&out.stdout).split_whitespace().collect::<Vec<_>>(),
        ["Seccomp:", "2"],
        "stderr: {}",
        text(&out.stderr)
    );
    assert_nothing_left("seccomp-default");

    let profile = ctrd.dir.join("deny-mkdir.json");
    std::fs::write(
        &profile,
        r#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO"}]}"#,
    )
    .unwrap();
    let id = "seccomp-custom";
    let runtime = ctrd.runtime();
    let mut args: Vec<&str> = vec!["run", "-d"];
    args.extend(runtime.iter().map(String::as_str));
    args.extend(["--seccomp", "--seccomp-profile", profile.to_str().unwrap()]);
    args.extend(["docker.io/library/busybox:latest", id, "sleep", "3600"]);
    let out = ctrd.ctr(&args);
    assert!(out.status.success(), "{id}: run -d: {}", text(&out.stderr));
    let out = ctrd.ctr(&[
        "tasks",
        "exec",
        "--exec-id",
        "confined",
        id,
        "sh",
        "-c",
        "mkdir /tmp/x 2>&1; echo rc=$?; grep ^Seccomp: /proc/1/status /proc/self/status",
    ]);
    let said = text(&out.stdout);
    assert!(
        said.contains("Operation not permitted")
            && said.contains("rc=1")
            && said.matches("Seccomp:\t2").count() == 2,
        "{id}: {said} {}",
        text(&out.stderr)
    );
    assert_shim_confined(id);
    remove_and_check(ctrd, id);
}

/// A hostile guest: a container with CAP_SYS_ADMIN mounts the pod's virtio-fs share
/// itself and tries to write its root (files, directories, symlinks where the shim would
/// create its next targets, a fill of the host's /run). On the host the share holds what
/// the shim put there and nothing else, with either fs backend.
///
/// With the inline server the new mount is the share root: every write there is refused
/// and only the container's own rootfs, inside it, is writable. virtiofsd announces
/// submounts, so the guest kernel has a superblock per host mount point and hands the new
/// mount the newest one, the container's own rootfs: its writes land there.
fn guest_root_writes_the_share_root(ctrd: &Containerd) {
    let script = |id: &str| {
        format!(
            "mkdir -p /m && mount -t virtiofs kataShared /m || exit 9; \
             touch /m/planted 2>/dev/null && echo WROTE-file; \
             mkdir /m/dir 2>/dev/null && echo WROTE-dir; \
             ln -s / /m/{id}-next 2>/dev/null && echo WROTE-link; \
             ln -s /etc /m/{id}/planted 2>/dev/null && echo WROTE-link-in-dir; \
             dd if=/dev/zero of=/m/fill bs=64k count=16 2>/dev/null && echo WROTE-fill; \
             touch /m/{id}/rootfs/own && echo ROOTFS-WRITABLE; ls /m"
        )
    };
    for (id, extra) in [
        ("share-inline", String::new()),
        ("share-vfsd", virtiofsd_config()),
    ] {
        let config = kata_config(&ctrd.dir, id, &artifacts::kernel(arch()), &extra);
        let runtime = ctrd.runtime();
        let mut args: Vec<&str> = vec!["run", "-d"];
        args.extend(runtime[..2].iter().map(String::as_str));
        args.extend(["--runtime-config-path", config.to_str().unwrap()]);
        args.extend(["--cap-add", "CAP_SYS_ADMIN"]);
        args.extend(["docker.io/library/busybox:latest", id, "sleep", "3600"]);
        let out = ctrd.ctr(&args);
        assert!(out.status.success(), "{id}: run -d: {}", text(&out.stderr));
        let share = Path::new("/run/kata-containers/shared/sandboxes").join(id);
        let listing = |dir: &Path| {
            let mut names: Vec<String> = std::fs::read_dir(dir)
                .map(|d| {
                    d.flatten()
                        .map(|e| e.file_name().to_string_lossy().into_owned())
                        .collect()
                })
                .unwrap_or_default();
            names.sort();
            names
        };
        let before = listing(&share.join("mounts"));
        let out = ctrd.ctr(&[
            "tasks",
            "exec",
            "--exec-id",
            "hostile",
            id,
            "sh",
            "-c",
            &script(id),
        ]);
        let said = text(&out.stdout);
        println!(
            "{id}: the hostile container said: {}",
            said.replace('\n', " ")
        );
        assert!(
            out.status.success(),
            "{id}: the container could not mount the share: {said} {}",
            text(&out.stderr)
        );
        if id == "share-inline" {
            assert!(
                said.starts_with("ROOTFS-WRITABLE\n") && !said.contains("WROTE"),
                "{id}: the guest wrote the share root: {said}"
            );
            assert!(
                said.lines().any(|l| l == id),
                "{id}: the share as the guest saw it: {said}"
            );
        } else {
            assert!(
                said.lines().any(|l| l == "linuxrc"),
                "{id}: the new mount is not the container's rootfs: {said}"
            );
        }
        assert_eq!(
            listing(&share.join("mounts")),
            before,
            "{id}: the share root changed"
        );
        assert_eq!(
            listing(&share.join("shared")),
            before,
            "{id}: the guest's view differs"
        );
        remove_and_check(ctrd, id);
    }
}

/// The shim of `id` runs its main and async-runtime threads under its seccomp filter
/// (mode 2), and its launcher outside it (mode 0); the VMM's threads have their own.
fn assert_shim_confined(id: &str) {
    let shim = shim_of(id).unwrap_or_else(|| panic!("{id}: no shim"));
    let mut seen = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{shim}/task"))
        .unwrap()
        .flatten()
    {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        let status = std::fs::read_to_string(task.path().join("status")).unwrap_or_default();
        let mode = status
            .lines()
            .find_map(|l| l.strip_prefix("Seccomp:"))
            .map(|m| m.trim().to_string())
            .unwrap_or_default();
        seen.push(format!("{}={mode}", comm.trim()));
    }
    let mode_of = |name: &str| -> Vec<&str> {
        seen.iter()
            .filter_map(|s| s.strip_prefix(&format!("{name}=")))
            .collect()
    };
    assert_eq!(mode_of("launcher"), ["0"], "{id}: threads {seen:?}");
    let workers = mode_of("tokio-rt-worker");
    assert!(
        !workers.is_empty() && workers.iter().all(|m| *m == "2"),
        "{id}: threads {seen:?}"
    );
    assert!(
        mode_of("containerd-shim").iter().all(|m| *m == "2") && mode_of("vmm_master") == ["2"],
        "{id}: threads {seen:?}"
    );
}

/// A configuration `name` whose shim logs at debug level (so the start-path trace reaches
/// containerd's log), with `extra` lines for the hypervisor section.
fn debug_config(ctrd: &Containerd, name: &str, extra: &str) -> PathBuf {
    let config = kata_config(&ctrd.dir, name, &artifacts::kernel(arch()), extra);
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str("enable_debug = true\n");
    std::fs::write(&config, text).unwrap();
    config
}

/// Waits up to `bound` for `run` (a ctr) to exit and returns its output.
fn output_within(mut run: std::process::Child, bound: Duration, what: &str) -> Output {
    let started = Instant::now();
    while run.try_wait().unwrap().is_none() {
        if started.elapsed() > bound {
            let _ = run.kill();
            panic!("{what}: ctr still running after {} s", bound.as_secs());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    run.wait_with_output().unwrap()
}

/// Whether `ctr tasks ls` shows task `id` RUNNING.
fn task_running(ctrd: &Containerd, id: &str) -> bool {
    text(&ctrd.ctr(&["tasks", "ls"]).stdout)
        .lines()
        .any(|l| l.split_whitespace().next() == Some(id) && l.contains("RUNNING"))
}

/// Removes task and container `id` (`tasks rm -f`, `containers rm`), retrying within
/// 60 s while the shim is still busy with a start that lost its caller, then checks that
/// nothing of it is left.
fn remove_and_check(ctrd: &Containerd, id: &str) {
    let started = Instant::now();
    loop {
        let listed = text(&ctrd.ctr(&["tasks", "ls"]).stdout);
        let removed = ctrd.ctr(&["tasks", "rm", "-f", id]);
        let out = ctrd.ctr(&["containers", "rm", id]);
        println!(
            "{id}: removing: tasks ls: {} | tasks rm -f: {} | containers rm: {}",
            listed.trim().replace('\n', "; "),
            text(&removed.stderr).trim(),
            text(&out.stderr).trim()
        );
        let listed = text(&ctrd.ctr(&["containers", "ls", "-q"]).stdout);
        if out.status.success() || !listed.lines().any(|l| l.trim() == id) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{id}: not removable within 60 s: {}",
            text(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    assert_nothing_left(id);
    assert_no_container_record(ctrd, id);
}

/// An exec `exec_id` into running container `id` answers (`echo alive`).
fn assert_exec_answers(ctrd: &Containerd, id: &str, exec_id: &str) {
    let out = ctrd.ctr(&["tasks", "exec", "--exec-id", exec_id, id, "echo", "alive"]);
    assert_eq!(
        text(&out.stdout),
        "alive\n",
        "{id}: exec {exec_id}: {}",
        text(&out.stderr)
    );
}

/// Fault: containerd SIGKILLed in the middle of a start (the shim's trace reports the VM
/// started) and started again on the same state. ctr run fails with an error; the
/// restarted containerd takes the surviving shim back (its log FIFO and the ttrpc
/// connection lost their peer), and removing the task and container leaves nothing.
fn containerd_killed_mid_create(ctrd: &Containerd) {
    let config = debug_config(ctrd, "ctrd-fault", "");
    let id = "ck-create";
    let (run, running, _) =
        run_until_phase(ctrd, &config, id, &[], "sleep 3600", Some("vm started"));
    let killed = Instant::now();
    ctrd.kill_and_restart();
    let out = output_within(run, Duration::from_secs(60), id);
    assert!(
        running || (!out.status.success() && !out.stderr.is_empty()),
        "{id}: ctr run must fail with an error when containerd dies: {:?} {}",
        out.status,
        text(&out.stderr)
    );
    println!(
        "fault {id}: containerd killed after \"vm started\"; ctr said: {}; restarted in {} ms",
        text(&out.stderr).trim(),
        killed.elapsed().as_millis()
    );
    // The restarted containerd has the task back (the shim finished the Create it was
    // building; containerd asks its State).
    let started = Instant::now();
    loop {
        let listing = text(&ctrd.ctr(&["tasks", "ls"]).stdout);
        if listing
            .lines()
            .any(|l| l.split_whitespace().next() == Some(id))
        {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "{id}: the restarted containerd does not list the task: {listing}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    remove_and_check(ctrd, id);
}

/// Fault: containerd SIGKILLed under a running container that keeps writing to stdout,
/// and restarted: the shim's log FIFO and the container's stdio lose their reader. The
/// shim lives on: the task is still RUNNING, exec works, the shim's log reaches the new
/// containerd, and removing it leaves nothing.
fn containerd_killed_while_running(ctrd: &Containerd) {
    let config = debug_config(ctrd, "ctrd-fault", "");
    let id = "ck-running";
    let script = "while :; do echo tick; sleep 0.1; done";
    let (run, _, shim) = run_until_phase(ctrd, &config, id, &[], script, None);
    let out = output_within(run, Duration::from_secs(60), id);
    assert!(out.status.success(), "{id}: run -d: {}", text(&out.stderr));
    ctrd.kill_and_restart();
    let log_file = ctrd.dir.join("containerd.log");
    let restarted_at = std::fs::metadata(&log_file).unwrap().len();
    assert_eq!(
        shim_of(id),
        Some(shim),
        "{id}: the shim died with containerd"
    );
    assert!(
        task_running(ctrd, id),
        "{id}: not RUNNING after the restart"
    );
    assert_exec_answers(ctrd, id, "after-restart");
    let log = std::fs::read(&log_file).unwrap();
    let since = text(&log[restarted_at as usize..]);
    assert!(
        since
            .lines()
            .any(|l| l.contains("\"level\"") && l.contains(&format!("\"id\":\"{id}\""))),
        "{id}: no shim log line reached the restarted containerd: {since}"
    );
    remove_and_check(ctrd, id);
    println!(
        "fault {id}: containerd killed and restarted under a running container; the shim served exec after it"
    );
}

/// Fault: the reader of a container's stdout FIFO (a foreground ctr run) is SIGKILLed
/// while the container writes: the shim survives, the task stays RUNNING and takes an
/// exec, and removing it leaves nothing.
fn stdio_reader_killed(ctrd: &Containerd) {
    let id = "ck-stdio";
    let runtime = ctrd.runtime();
    let mut args: Vec<&str> = vec!["run"];
    args.extend(runtime.iter().map(String::as_str));
    args.extend(["docker.io/library/busybox:latest", id, "sh", "-c"]);
    args.push("while :; do echo tick; done");
    let mut run = ctrd
        .command(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut first = [0u8; 5];
    run.stdout.as_mut().unwrap().read_exact(&mut first).unwrap();
    assert_eq!(&first, b"tick\n");
    run.kill().unwrap();
    run.wait().unwrap();
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        shim_of(id).is_some(),
        "{id}: the shim died with its stdout reader"
    );
    assert!(
        task_running(ctrd, id),
        "{id}: not RUNNING after its stdout reader died"
    );
    assert_exec_answers(ctrd, id, "after-reader");
    remove_and_check(ctrd, id);
    println!("fault {id}: the stdout reader killed; the shim and the container lived on");
}

/// Fault: the guest kernel panics under a running container (global OOM with
/// `vm.panic_on_oom`, set on the guest command line). The guest reboots, which ends the
/// VM (`panic=-1`); the task is reported stopped within a bound and removing it leaves
/// nothing. The agent is the guest's PID 1, so an agent that exits is this same panic
/// ("Attempted to kill init").
fn guest_kernel_panic(ctrd: &Containerd) {
    let extra = "kernel_params = \"sysctl.vm.overcommit_memory=1 sysctl.vm.panic_on_oom=2\"";
    let config = kata_config(&ctrd.dir, "panic-fault", &artifacts::kernel(arch()), extra);
    let id = "gk-panic";
    let script = "sleep 1; x=0123456789abcdef; while :; do x=$x$x; done";
    let (run, _, _) = run_until_phase(ctrd, &config, id, &[], script, None);
    let out = output_within(run, Duration::from_secs(60), id);
    assert!(out.status.success(), "{id}: run -d: {}", text(&out.stderr));
    let started = Instant::now();
    wait_stopped(
        ctrd,
        id,
        Duration::from_secs(180),
        "after the guest kernel panicked",
    );
    println!(
        "fault {id}: guest kernel panic; task stopped {} ms after the start returned",
        started.elapsed().as_millis()
    );
    remove_and_check(ctrd, id);
}

/// Fault: a guest whose agent never answers the shim's hybrid-vsock handshake (it listens
/// on another port): the start fails once `reconnect_timeout_ms` runs out, with an error
/// that names the agent, and leaves nothing.
fn agent_never_answers(ctrd: &Containerd) {
    let extra = "kernel_params = \"agent.server_addr=vsock://-1:1100\"";
    let config = kata_config(&ctrd.dir, "mute-fault", &artifacts::kernel(arch()), extra);
    let text_config = std::fs::read_to_string(&config)
        .unwrap()
        .replace(AGENT_WAIT, "reconnect_timeout_ms = 15000");
    std::fs::write(&config, text_config).unwrap();
    let id = "mute-agent";
    let started = Instant::now();
    let out = ctrd.run(
        id,
        &["--runtime-config-path", config.to_str().unwrap()],
        &["true"],
    );
    let took = started.elapsed();
    assert!(!out.status.success(), "{id}: the start must fail");
    let said = text(&out.stderr);
    assert!(
        said.contains("agent"),
        "{id}: the error must name the agent: {said}"
    );
    assert!(
        took < Duration::from_secs(240),
        "{id}: failed only after {} s",
        took.as_secs()
    );
    println!(
        "fault {id}: start failed after {} ms: {}",
        took.as_millis(),
        said.trim()
    );
    remove_and_check(ctrd, id);
}

/// Starts `ctr run -d` of container `id` under `config` (with `flags`, running
/// `sh -c script`) and watches this run's containerd log until the shim's debug trace
/// reports `phase` done for `id` (`None`: until ctr returns, the container running).
/// Returns ctr, whether the container is already running (a start that outran the poll
/// counts as running), and the shim's pid.
fn run_until_phase(
    ctrd: &Containerd,
    config: &Path,
    id: &str,
    flags: &[&str],
    script: &str,
    phase: Option<&str>,
) -> (std::process::Child, bool, i32) {
    let log_file = ctrd.dir.join("containerd.log");
    let log_start = std::fs::metadata(&log_file).map(|m| m.len()).unwrap_or(0);
    let runtime = ctrd.runtime();
    let mut args: Vec<&str> = vec!["run", "-d"];
    args.extend(runtime[..2].iter().map(String::as_str));
    args.extend(["--runtime-config-path", config.to_str().unwrap()]);
    args.extend_from_slice(flags);
    args.extend(["docker.io/library/busybox:latest", id, "sh", "-c", script]);
    let mut run = ctrd
        .command(&args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let mut log = std::fs::File::open(&log_file).unwrap();
    std::io::Seek::seek(&mut log, std::io::SeekFrom::Start(log_start)).unwrap();
    let mut new_lines = String::new();
    let mut running = phase.is_none();
    loop {
        assert!(
            started.elapsed() < Duration::from_secs(180),
            "{id}: phase {phase:?} not reached in 180 s; containerd log tail:\n{}",
            containerd_log_tail(ctrd, 30)
        );
        let _ = std::io::Read::read_to_string(&mut log, &mut new_lines);
        let reached = phase.is_some_and(|p| {
            new_lines
                .lines()
                .any(|l| l.contains("\"trace\"") && l.contains(id) && l.contains(p))
        });
        let exited = run.try_wait().unwrap();
        if !reached && let Some(status) = exited {
            if !status.success() {
                let mut stderr = String::new();
                let _ = std::io::Read::read_to_string(run.stderr.as_mut().unwrap(), &mut stderr);
                panic!(
                    "{id}: ctr run failed ({status}) before phase {phase:?}: {stderr}\ncontainerd log tail:\n{}",
                    containerd_log_tail(ctrd, 30)
                );
            }
            if !running {
                println!("fault {id}: the start outran the poll; injecting it running");
                running = true;
            }
        }
        if (reached || (running && exited.is_some()))
            && let Some(pid) = shim_of(id)
        {
            return (run, running, pid);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Faults: the shim SIGKILLed at each phase of a start (as its debug trace reports the
/// phase done: host resources ready — virtiofsd spawned, cgroup entered —, VM started,
/// agent connected, rootfs and binds mounted) and while the container runs. Each time
/// ctr reports an error within a bound, removing the task and container leaves nothing
/// (no shim, VMM, virtiofsd, mount, dir, socket or cgroup), and the container's host
/// volume is byte-identical.
fn shim_killed(ctrd: &Containerd) {
    let config = debug_config(ctrd, "shim-fault", &virtiofsd_config());
    let volume = ctrd.dir.join("fault-volume");
    std::fs::create_dir_all(volume.join("sub")).unwrap();
    std::fs::write(volume.join("keep"), "kept\n").unwrap();
    std::fs::write(volume.join("sub/also"), vec![7u8; 4096]).unwrap();
    let before = tree_digest(&volume);
    let mount = format!(
        "type=bind,src={},dst=/vol,options=rbind:rw",
        volume.display()
    );
    let phases = [
        ("fk-host", Some("host resources ready")),
        ("fk-vm", Some("vm started")),
        ("fk-agent", Some("agent connected")),
        ("fk-binds", Some("rootfs and binds")),
        ("fk-running", None),
    ];
    for (id, phase) in phases {
        let script = "echo written-by-the-guest > /tmp/x; sleep 3600";
        let (mut run, running, shim) =
            run_until_phase(ctrd, &config, id, &["--mount", &mount], script, phase);
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(shim),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
        let killed = Instant::now();
        if !running {
            while run.try_wait().unwrap().is_none() {
                if killed.elapsed() > Duration::from_secs(60) {
                    let _ = run.kill();
                    panic!("{id}: ctr run still waiting 60 s after the shim was killed");
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let out = run.wait_with_output().unwrap();
            assert!(
                !out.status.success() && !out.stderr.is_empty(),
                "{id}: ctr run must fail with an error once the shim dies: {:?} {}",
                out.status,
                text(&out.stderr)
            );
        } else {
            // The running task is reported stopped within a bound.
            wait_stopped(
                ctrd,
                id,
                Duration::from_secs(60),
                "after its shim was killed",
            );
        }
        let _ = ctrd.ctr(&["tasks", "rm", "-f", id]);
        let _ = ctrd.ctr(&["containers", "rm", id]);
        assert_nothing_left(id);
        assert_no_container_record(ctrd, id);
        assert!(
            processes_named("virtiofsd").is_empty(),
            "{id}: virtiofsd left behind"
        );
        assert_eq!(
            tree_digest(&volume),
            before,
            "{id}: the host volume changed"
        );
        println!(
            "fault {id}: shim killed after {:?}; cleaned up {} ms after the kill",
            if running {
                "start (container running)"
            } else {
                phase.unwrap_or_default()
            },
            killed.elapsed().as_millis()
        );
    }
}

/// The faults beyond a killed shim or virtiofsd: containerd killed mid-create and under a
/// running container, the stdout reader killed, a guest kernel panic, a mute agent.
fn other_faults(ctrd: &Containerd) {
    containerd_killed_mid_create(ctrd);
    containerd_killed_while_running(ctrd);
    stdio_reader_killed(ctrd);
    guest_kernel_panic(ctrd);
    agent_never_answers(ctrd);
}

/// The fault cases and a 5-cycle soak alone (`--ignored faults`), for working on them.
#[test]
#[ignore]
fn faults() {
    let ctrd = containerd();
    other_faults(ctrd);
    virtiofsd_killed_mid_run(ctrd);
    shim_killed(ctrd);
    soak(ctrd, 5);
    ctrd.stop();
}

/// The soak alone (`make soak`: `--ignored soak`, `KATA_RV_SOAK_CYCLES`, default 200).
#[test]
#[ignore]
fn soak_alone() {
    let ctrd = containerd();
    // A first sandbox creates the parents every later one shares (the share root
    // /run/kata-containers/shared, the namespace's cgroup): the baseline comes after it.
    let out = ctrd.run("soak-warmup", &[], &["true"]);
    assert!(out.status.success(), "warm-up: {}", text(&out.stderr));
    assert_nothing_left("soak-warmup");
    soak(
        ctrd,
        std::env::var("KATA_RV_SOAK_CYCLES").map_or(200, |v| v.parse().unwrap()),
    );
    ctrd.stop();
}

/// Cycles of the soak (`KATA_RV_SOAK_CYCLES`; 20 in `make test`, 200 in `make soak`).
fn soak_cycles() -> usize {
    std::env::var("KATA_RV_SOAK_CYCLES")
        .ok()
        .map(|v| v.parse().expect("KATA_RV_SOAK_CYCLES must be a number"))
        .unwrap_or(20)
}

/// Sandboxes the soak keeps in flight (`KATA_RV_SOAK_IN_FLIGHT`): 5, but 2 in the
/// emulated x86_64 test host, whose nested-SVM guests stop booting (empty console, no
/// agent within 300 s) when five or more start at once: an open finding of the
/// parallel bench, not yet understood.
fn soak_in_flight() -> usize {
    std::env::var("KATA_RV_SOAK_IN_FLIGHT")
        .ok()
        .map(|v| v.parse().expect("KATA_RV_SOAK_IN_FLIGHT must be a number"))
        .unwrap_or(if arch() == Arch::X86_64 { 2 } else { 5 })
}

/// What the host holds that a sandbox could leak.
#[derive(Debug, PartialEq, Eq)]
struct HostState {
    processes: Vec<String>,
    mounts: Vec<String>,
    containerd_fds: usize,
    run_dirs: Vec<String>,
    cgroups: Vec<String>,
}

fn entries(dir: &Path) -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.path().display().to_string())
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

fn host_state(ctrd: &Containerd) -> HostState {
    let me = std::process::id().to_string();
    let mut processes: Vec<String> = processes_named("")
        .into_iter()
        .filter_map(|p| {
            let (pid, cmdline) = p.split_once(": ")?;
            // User processes only (kernel threads have no command line), not this test.
            (!cmdline.trim().is_empty() && pid != me).then(|| cmdline.to_string())
        })
        .collect();
    processes.sort();
    let mut mounts: Vec<String> = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .map(|l| l.split(' ').skip(3).collect::<Vec<_>>().join(" "))
        .collect();
    mounts.sort();
    let containerd_fds = std::fs::read_dir(format!("/proc/{}/fd", ctrd.pid()))
        .unwrap()
        .count();
    let mut run_dirs = entries(Path::new("/run/containerd/s"));
    for dir in [
        "/run/kata",
        "/run/kata-containers",
        "/run/kata-containers/shared/sandboxes",
    ] {
        run_dirs.extend(entries(Path::new(dir)));
    }
    let mut cgroups = Vec::new();
    let mut pending = vec![(PathBuf::from("/sys/fs/cgroup"), 0)];
    while let Some((dir, depth)) = pending.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) && depth < 4 {
                cgroups.push(entry.path().display().to_string());
                pending.push((entry.path(), depth + 1));
            }
        }
    }
    cgroups.sort();
    HostState {
        processes,
        mounts,
        containerd_fds,
        run_dirs,
        cgroups,
    }
}

impl HostState {
    /// True when `self` (taken after a workload) holds nothing `before` did not. containerd's
    /// fd count may only fall: a connection of an earlier shim that containerd closes late
    /// is not a leak of this workload.
    fn holds_nothing_beyond(&self, before: &HostState) -> bool {
        self.processes == before.processes
            && self.mounts == before.mounts
            && self.containerd_fds <= before.containerd_fds
            && self.run_dirs == before.run_dirs
            && self.cgroups == before.cgroups
    }
}

/// The host once it is quiet: two snapshots a second apart that agree, or the last one after
/// `bound` (what an earlier step left closing asynchronously must not count against the next).
fn settled_host_state(ctrd: &Containerd, bound: Duration) -> HostState {
    let deadline = Instant::now() + bound;
    let mut last = host_state(ctrd);
    loop {
        std::thread::sleep(Duration::from_secs(1));
        let now = host_state(ctrd);
        if now == last || Instant::now() >= deadline {
            return now;
        }
        last = now;
    }
}

/// The soak: `cycles` create/start/exec/kill/delete cycles, [`soak_in_flight`] at a time, then an
/// exact leak check against the host before them (processes, mount table, containerd's
/// open fds, /run/kata*, /run/containerd/s, cgroups).
fn soak(ctrd: &'static Containerd, cycles: usize) {
    let before = settled_host_state(ctrd, Duration::from_secs(15));
    let started = Instant::now();
    let in_flight = soak_in_flight();
    let workers: Vec<_> = (0..in_flight)
        .map(|w| {
            std::thread::spawn(move || {
                let runtime = ctrd.runtime();
                for c in (w..cycles).step_by(in_flight) {
                    let id = format!("soak{c}");
                    let mut args: Vec<&str> = vec!["run", "-d"];
                    args.extend(runtime.iter().map(String::as_str));
                    args.extend(["docker.io/library/busybox:latest", &id, "sleep", "3600"]);
                    let out = ctrd.ctr(&args);
                    assert!(out.status.success(), "{id}: run -d: {}", text(&out.stderr));
                    let exec_id = format!("{id}-exec");
                    let out = ctrd.ctr(&["tasks", "exec", "--exec-id", &exec_id, &id, "echo", &id]);
                    assert_eq!(
                        text(&out.stdout),
                        format!("{id}\n"),
                        "{id}: exec: {}",
                        text(&out.stderr)
                    );
                    let out = ctrd.ctr(&["tasks", "kill", "-s", "KILL", &id]);
                    assert!(out.status.success(), "{id}: kill: {}", text(&out.stderr));
                    wait_stopped(ctrd, &id, Duration::from_secs(60), "after SIGKILL");
                    let out = ctrd.ctr(&["tasks", "rm", &id]);
                    assert!(
                        out.status.success(),
                        "{id}: tasks rm: {}",
                        text(&out.stderr)
                    );
                    let out = ctrd.ctr(&["containers", "rm", &id]);
                    assert!(
                        out.status.success(),
                        "{id}: containers rm: {}",
                        text(&out.stderr)
                    );
                }
            })
        })
        .collect();
    for worker in workers {
        worker.join().expect("a soak worker failed");
    }
    let elapsed = started.elapsed();
    // Shims exit and containerd closes its connections asynchronously: the host must
    // come back to exactly where it was within a bound.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let after = host_state(ctrd);
        if after.holds_nothing_beyond(&before) {
            break;
        }
        if Instant::now() >= deadline {
            let gone = |a: &[String], b: &[String]| -> Vec<String> {
                a.iter().filter(|x| !b.contains(x)).cloned().collect()
            };
            panic!(
                "the soak leaked: new processes {:?}, new mounts {:?}, containerd fds {} -> {}, new run entries {:?}, new cgroups {:?} (and gone: processes {:?})",
                gone(&after.processes, &before.processes),
                gone(&after.mounts, &before.mounts),
                before.containerd_fds,
                after.containerd_fds,
                gone(&after.run_dirs, &before.run_dirs),
                gone(&after.cgroups, &before.cgroups),
                gone(&before.processes, &after.processes),
            );
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    println!(
        "soak: {cycles} create/start/exec/kill/delete cycles, {in_flight} in flight, in {} s; no leak",
        elapsed.as_secs()
    );
}
