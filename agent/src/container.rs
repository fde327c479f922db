//! One container: its bundle, cgroup, init process and exec'd processes, and the
//! lifecycle operations on them.

use std::collections::HashMap;
use std::fs::File;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use kata_agent_protocols::oci;
use nix::mount::MntFlags;
use nix::sched::CloneFlags;
use nix::sys::signal::Signal;
use nix::unistd::Pid;

use crate::cgroup::Cgroup;
use crate::error::{AgentError, AgentResult};
use crate::plan::{self, PodNamespace};
use crate::reaper::{ExitStatus, ExitWatch, Reaper};
use crate::spawn::{
    self, ChildFailure, ContainerSetup, JoinNamespaces, ProcessSetup, Report, Step,
};
use crate::stdio::ProcessIo;

/// Where the agent keeps per-container bundles: a directory of their own, so that no id
/// (`shared` included) makes a bundle the parent of the share or of another mount.
pub const BUNDLE_ROOT: &str = "/run/kata-containers/bundles";

/// A running (or finished) process of a container.
pub struct Process {
    /// The exec id (the container id for the init process).
    pub exec_id: String,
    /// Its pid in the agent's namespace.
    pub pid: Pid,
    /// Turns `Some(status)` once reaped.
    pub exit: ExitWatch,
    /// The agent's ends of its streams.
    pub io: ProcessIo,
    /// The start pipe and report pipe of an init process not started yet.
    pending_start: Mutex<Option<(OwnedFd, File)>>,
    /// WaitProcess has returned its status.
    waited: std::sync::atomic::AtomicBool,
}

impl Process {
    /// The exit status, if the process has been reaped.
    pub fn exit_status(&self) -> Option<ExitStatus> {
        *self.exit.borrow()
    }

    /// Waits for the exit status.
    pub async fn wait(&self) -> ExitStatus {
        let mut exit = self.exit.clone();
        match exit.wait_for(Option::is_some).await {
            Ok(status) => status.unwrap_or(255),
            Err(_) => 255,
        }
    }
}

/// Lifecycle state as containerd sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// Set up, waiting for StartContainer.
    Created,
    /// The init process runs.
    Running,
    /// Frozen.
    Paused,
    /// The init process has exited.
    Stopped,
}

/// A container inside the sandbox.
pub struct Container {
    /// Its id.
    pub id: String,
    /// `/run/kata-containers/bundles/<id>`.
    pub bundle: PathBuf,
    /// The bind of the spec's root.path the container pivots into.
    pub rootfs: PathBuf,
    /// Its cgroup (absent when the agent runs without cgroup v2, host mode only).
    pub cgroup: Option<Cgroup>,
    /// The init process.
    pub init: Arc<Process>,
    /// Exec'd processes by exec id.
    pub execs: Mutex<HashMap<String, Arc<Process>>>,
    /// Storage mount points this container holds.
    pub storages: Vec<PathBuf>,
    started: Mutex<bool>,
    paused: Mutex<bool>,
    program: String,
    pid_ns: PidNamespace,
    joined_namespaces: Vec<(&'static str, CloneFlags)>,
    seccomp: Option<crate::seccomp::SeccompPlan>,
}

/// The PID namespace a container's processes live in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PidNamespace {
    /// The agent's: the spec has no `pid` entry.
    Agent,
    /// Its own, whose PID 1 is the container's init.
    Own,
    /// Its pod sandbox's: the init is one process among the pod's.
    Pod,
}

/// The sandbox container of a pod container, and which of its namespaces to join.
pub struct PodSandbox {
    /// The sandbox container.
    pub container: Arc<Container>,
    /// The namespaces the new container joins.
    pub namespaces: Vec<PodNamespace>,
}

impl PodSandbox {
    /// Opens the sandbox init's namespaces for the new container's init to join.
    fn open(&self) -> AgentResult<JoinNamespaces> {
        let sandbox = &self.container;
        let mut join = JoinNamespaces {
            pid: None,
            others: Vec::new(),
            root: None,
        };
        for kind in &self.namespaces {
            let fd = sandbox.open_namespace(kind.proc_name())?;
            match kind {
                PodNamespace::Pid => join.pid = Some(fd),
                PodNamespace::Ipc | PodNamespace::Uts => join.others.push((fd, kind.flag())),
            }
        }
        // Not reaped after the opens, so its pid was not reused: these are its namespaces.
        if sandbox.init.exit_status().is_some() {
            return Err(AgentError::precondition(format!(
                "pod sandbox container {} exited while its namespaces were being joined",
                sandbox.id
            )));
        }
        Ok(join)
    }

    /// Whether the new container joins the sandbox's `kind` namespace.
    fn shares(&self, kind: PodNamespace) -> bool {
        self.namespaces.contains(&kind)
    }
}

/// Removes a bundle whose rootfs bind is gone; never deletes through a mount (a bind that
/// could not be detached is left in place and reported).
fn remove_bundle(bundle: &Path) -> AgentResult<()> {
    safe_fs::remove_tree(bundle)
        .map_err(|e| AgentError::internal(format!("removing the bundle: {e}")))
}

/// Checks a container or exec id: 1..=128 chars of `[A-Za-z0-9_.-]`, not starting with a dot.
pub fn check_id(kind: &str, id: &str) -> AgentResult<()> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && !id.starts_with('.')
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.');
    if ok {
        Ok(())
    } else {
        Err(AgentError::invalid(format!(
            "{kind} '{}' is not a valid id (1-128 of A-Z a-z 0-9 _ . -)",
            id.escape_debug()
        )))
    }
}

fn describe_failure(
    failure: ChildFailure,
    container: Option<&ContainerSetup>,
    process: &ProcessSetup,
) -> String {
    let index = failure.index as usize;
    let what = match failure.step {
        Step::Mount | Step::MountPoint => container
            .and_then(|c| c.mounts.get(index))
            .map(|m| format!("mounting {} (mounts[{index}])", m.destination))
            .unwrap_or_else(|| "mounting".into()),
        Step::Device => container
            .and_then(|c| c.devices.get(index))
            .map(|d| format!("creating device {}", d.path_in_container))
            .unwrap_or_else(|| "creating a device".into()),
        Step::MaskedPath => format!("masking linux.maskedPaths[{index}]"),
        Step::ReadonlyPath => format!("linux.readonlyPaths[{index}]"),
        Step::Sysctl => format!("linux.sysctl entry {index}"),
        Step::Rlimit => format!("process.rlimits[{index}]"),
        Step::Exec => {
            let program = process
                .argv
                .first()
                .map(|a| a.to_string_lossy().into_owned())
                .unwrap_or_default();
            return format!(
                "executable '{program}' could not be run: {}",
                failure.errno.desc()
            );
        }
        Step::Cwd => format!("process.cwd '{}'", process.cwd.to_string_lossy()),
        Step::Uid => format!("setting uid {}", process.uid),
        Step::Gid => format!("setting gid {}", process.gid),
        Step::Cgroup => "joining the container cgroup".into(),
        Step::Setns if container.is_some() => "joining the pod sandbox's namespaces".into(),
        Step::Setns => "joining the container namespaces".into(),
        Step::Unshare => "creating namespaces".into(),
        Step::PivotRoot => "pivot_root into root.path".into(),
        Step::ReadonlyRoot => "making root.readonly".into(),
        Step::Seccomp => format!("installing linux.seccomp (BPF program {index})"),
        other => format!("{other:?}"),
    };
    format!("{what}: {}", failure.errno)
}

/// Reads the child's report off the async runtime; the pipe comes back for a later read.
async fn report(mut pipe: File) -> (Report, Option<File>) {
    tokio::task::spawn_blocking(move || {
        let report = spawn::read_report(&mut pipe);
        (report, Some(pipe))
    })
    .await
    .unwrap_or((Report::Closed, None))
}

/// What CreateContainer needs besides the spec.
pub struct CreateRequest<'a> {
    /// The container id.
    pub id: &'a str,
    /// Its OCI spec.
    pub spec: &'a oci::Spec,
    /// Where cgroup v2 is mounted, if it is.
    pub cgroup_root: Option<&'a Path>,
    /// Storage mount points already added for this container.
    pub storages: Vec<PathBuf>,
    /// For a pod container sharing namespaces with its pod: the sandbox container.
    pub pod: Option<PodSandbox>,
}

struct CreateGuard {
    rootfs: Option<PathBuf>,
    bundle: Option<PathBuf>,
    cgroup: Option<Cgroup>,
}

impl Drop for CreateGuard {
    fn drop(&mut self) {
        if let Some(rootfs) = self.rootfs.take() {
            let _ = nix::mount::umount2(&rootfs, MntFlags::MNT_DETACH);
        }
        if let Some(bundle) = self.bundle.take() {
            // Best effort while unwinding a failed create; it never deletes through a mount.
            let _ = remove_bundle(&bundle);
        }
        if let Some(cgroup) = self.cgroup.take() {
            cgroup.kill_all().ok();
            let _ = cgroup.remove();
        }
    }
}

impl Container {
    /// Sets the container up to the point where only its workload's exec remains.
    pub async fn create(reaper: &Reaper, request: CreateRequest<'_>) -> AgentResult<Self> {
        let CreateRequest {
            id,
            spec,
            cgroup_root,
            storages,
            pod,
        } = request;
        let root = spec
            .Root
            .as_ref()
            .ok_or_else(|| AgentError::invalid("OCI spec has no root"))?;
        let process = spec
            .Process
            .as_ref()
            .ok_or_else(|| AgentError::invalid("OCI spec has no process"))?;
        let root_path = Path::new(&root.Path);
        if !root_path.is_absolute() {
            return Err(AgentError::invalid(format!(
                "root.path '{}' is not absolute",
                root.Path
            )));
        }
        match std::fs::metadata(root_path) {
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => {
                return Err(AgentError::invalid(format!(
                    "root.path '{}' is not a directory",
                    root.Path
                )));
            }
            Err(e) => {
                return Err(AgentError::invalid(format!(
                    "root.path '{}': {e}",
                    root.Path
                )));
            }
        }
        // A bad profile is refused before anything exists.
        let seccomp = spec
            .Linux
            .as_ref()
            .and_then(|l| l.Seccomp.as_ref())
            .map(|profile| crate::seccomp::compile(profile).map_err(AgentError::invalid))
            .transpose()?;
        let pod_join = pod.as_ref().map(PodSandbox::open).transpose()?;
        let resources = spec.Linux.as_ref().and_then(|l| l.Resources.as_ref());
        let mut guard = CreateGuard {
            rootfs: None,
            bundle: None,
            cgroup: None,
        };
        let bundle = Path::new(BUNDLE_ROOT).join(id);
        std::fs::create_dir_all(&bundle)
            .map_err(|e| AgentError::internal(format!("creating {}: {e}", bundle.display())))?;
        guard.bundle = Some(bundle.clone());
        let rootfs = bundle.join("rootfs");
        std::fs::create_dir_all(&rootfs)
            .map_err(|e| AgentError::internal(format!("creating {}: {e}", rootfs.display())))?;
        nix::mount::mount(
            Some(root_path),
            &rootfs,
            None::<&str>,
            crate::storage::ROOTFS_BIND,
            None::<&str>,
        )
        .map_err(|e| AgentError::internal(format!("binding root.path '{}': {e}", root.Path)))?;
        guard.rootfs = Some(rootfs.clone());
        let cgroup = match cgroup_root {
            Some(root) => {
                let cgroup = Cgroup::create(root, id).map_err(AgentError::internal)?;
                guard.cgroup = Some(cgroup.clone());
                if let Some(resources) = resources {
                    cgroup.apply(resources).map_err(AgentError::invalid)?;
                }
                Some(cgroup)
            }
            None if resources
                .is_some_and(|r| r.Memory.is_some() || r.CPU.is_some() || r.Pids.is_some()) =>
            {
                return Err(AgentError::precondition(
                    "linux.resources needs cgroup v2, which this agent's host does not have",
                ));
            }
            None => None,
        };
        let mut setup = plan::container_setup(spec, &rootfs).map_err(AgentError::invalid)?;
        setup.rootfs_parent_mount = plan::mount_point_of(&rootfs)
            .map(|mount| std::ffi::CString::new(mount.into_os_string().into_encoded_bytes()))
            .transpose()
            .map_err(|e| AgentError::invalid(format!("the rootfs's mount point: {e}")))?;
        let (pending_io, child_stdio) =
            ProcessIo::create(process.Terminal).map_err(AgentError::internal)?;
        let procs = cgroup.as_ref().map(Cgroup::procs_file);
        let mut process_setup = plan::process_setup(process, procs.as_deref(), child_stdio)
            .map_err(AgentError::invalid)?;
        process_setup.seccomp = seccomp.clone();
        let spawned = spawn::spawn(
            reaper,
            Some(&setup),
            pod_join.as_ref(),
            &mut process_setup,
            true,
        )
        .map_err(|e| AgentError::internal(format!("forking the container process: {e}")))?;
        let (outcome, report_pipe) = report(spawned.report).await;
        match outcome {
            Report::Ready => {}
            Report::Failed(failure) => {
                return Err(AgentError::invalid(format!(
                    "container {id}: {}",
                    describe_failure(failure, Some(&setup), &process_setup)
                )));
            }
            Report::Closed => {
                return Err(AgentError::internal(format!(
                    "container {id}: the init process died during setup"
                )));
            }
        }
        let io = pending_io
            .finish()
            .map_err(|e| AgentError::internal(format!("container {id}: {e}")))?;
        let (Some(start), Some(report_pipe)) = (spawned.start, report_pipe) else {
            return Err(AgentError::internal(format!(
                "container {id}: lost the start pipes"
            )));
        };
        let init = Arc::new(Process {
            exec_id: id.to_string(),
            pid: spawned.pid,
            exit: spawned.exit,
            io,
            pending_start: Mutex::new(Some((start, report_pipe))),
            waited: Default::default(),
        });
        let shares = |kind| pod.as_ref().is_some_and(|p| p.shares(kind));
        let pid_ns = if setup.new_pid_ns {
            PidNamespace::Own
        } else if shares(PodNamespace::Pid) {
            PidNamespace::Pod
        } else {
            PidNamespace::Agent
        };
        // An exec joins what the init created or took from the pod.
        let mut joined_namespaces = vec![("mnt", CloneFlags::CLONE_NEWNS)];
        if setup.unshare.contains(CloneFlags::CLONE_NEWUTS) || shares(PodNamespace::Uts) {
            joined_namespaces.push(("uts", CloneFlags::CLONE_NEWUTS));
        }
        if setup.unshare.contains(CloneFlags::CLONE_NEWIPC) || shares(PodNamespace::Ipc) {
            joined_namespaces.push(("ipc", CloneFlags::CLONE_NEWIPC));
        }
        if setup.unshare.contains(CloneFlags::CLONE_NEWCGROUP) {
            joined_namespaces.push(("cgroup", CloneFlags::CLONE_NEWCGROUP));
        }
        guard.rootfs = None;
        guard.bundle = None;
        guard.cgroup = None;
        Ok(Self {
            id: id.to_string(),
            bundle,
            rootfs,
            cgroup,
            init,
            execs: Mutex::new(HashMap::new()),
            storages,
            started: Mutex::new(false),
            paused: Mutex::new(false),
            program: process.Args.first().cloned().unwrap_or_default(),
            pid_ns,
            joined_namespaces,
            seccomp,
        })
    }

    /// The current status.
    pub fn status(&self) -> Status {
        if self.init.exit_status().is_some() {
            Status::Stopped
        } else if *self.paused.lock().unwrap_or_else(|e| e.into_inner()) {
            Status::Paused
        } else if *self.started.lock().unwrap_or_else(|e| e.into_inner()) {
            Status::Running
        } else {
            Status::Created
        }
    }

    /// Opens `/proc/<init>/ns/<name>`.
    fn open_namespace(&self, name: &str) -> AgentResult<OwnedFd> {
        let path = format!("/proc/{}/ns/{name}", self.init.pid);
        File::open(&path).map(OwnedFd::from).map_err(|e| {
            AgentError::precondition(format!("container {}: opening {path}: {e}", self.id))
        })
    }

    /// Lets the init process exec its workload.
    pub async fn start(&self) -> AgentResult<()> {
        let pending = self
            .init
            .pending_start
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        let Some((start, report_pipe)) = pending else {
            return Err(AgentError::precondition(format!(
                "container {} was already started",
                self.id
            )));
        };
        nix::unistd::write(&start, &[1]).map_err(|e| {
            AgentError::internal(format!("container {}: signalling start: {e}", self.id))
        })?;
        drop(start);
        let (outcome, _) = report(report_pipe).await;
        match outcome {
            Report::Closed => {
                *self.started.lock().unwrap_or_else(|e| e.into_inner()) = true;
                Ok(())
            }
            Report::Ready => Err(AgentError::internal(format!(
                "container {}: unexpected report",
                self.id
            ))),
            Report::Failed(failure) => {
                let program = &self.program;
                Err(AgentError::invalid(format!(
                    "container {}: executable '{program}' could not be run: {}",
                    self.id,
                    failure.errno.desc()
                )))
            }
        }
    }

    /// Starts another process inside the running container.
    pub async fn exec(
        &self,
        reaper: &Reaper,
        exec_id: &str,
        process: &oci::Process,
    ) -> AgentResult<()> {
        check_id("exec id", exec_id)?;
        if self.status() != Status::Running {
            return Err(AgentError::precondition(format!(
                "container {} is {:?}: cannot exec '{exec_id}' into it",
                self.id,
                self.status()
            )));
        }
        if self
            .execs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(exec_id)
        {
            return Err(AgentError::exists(format!(
                "exec id '{exec_id}' already exists in container {}",
                self.id
            )));
        }
        let join = JoinNamespaces {
            pid: (self.pid_ns != PidNamespace::Agent)
                .then(|| self.open_namespace("pid"))
                .transpose()?,
            others: self
                .joined_namespaces
                .iter()
                .map(|(name, flag)| Ok((self.open_namespace(name)?, *flag)))
                .collect::<AgentResult<Vec<_>>>()?,
            root: Some(
                File::open(format!("/proc/{}/root", self.init.pid))
                    .map(OwnedFd::from)
                    .map_err(|e| {
                        AgentError::precondition(format!(
                            "container {}: opening its root: {e}",
                            self.id
                        ))
                    })?,
            ),
        };
        // The init may have exited (and its pid been reused) while its namespaces were
        // opened: then they are not this container's.
        if self.init.exit_status().is_some() {
            return Err(AgentError::precondition(format!(
                "container {} has exited: cannot exec '{exec_id}' into it",
                self.id
            )));
        }
        let (pending_io, child_stdio) =
            ProcessIo::create(process.Terminal).map_err(AgentError::internal)?;
        let procs = self.cgroup.as_ref().map(Cgroup::procs_file);
        let mut setup = plan::process_setup(process, procs.as_deref(), child_stdio)
            .map_err(AgentError::invalid)?;
        // An exec runs under its container's profile, as with runc.
        setup.seccomp = self.seccomp.clone();
        let spawned = spawn::spawn(reaper, None, Some(&join), &mut setup, false)
            .map_err(|e| AgentError::internal(format!("forking exec '{exec_id}': {e}")))?;
        let (outcome, _) = report(spawned.report).await;
        if let Report::Failed(failure) = outcome {
            return Err(AgentError::invalid(format!(
                "exec '{exec_id}' in container {}: {}",
                self.id,
                describe_failure(failure, None, &setup)
            )));
        }
        let io = pending_io.finish().map_err(|e| {
            AgentError::internal(format!("exec '{exec_id}' in container {}: {e}", self.id))
        })?;
        let process = Arc::new(Process {
            exec_id: exec_id.to_string(),
            pid: spawned.pid,
            exit: spawned.exit,
            io,
            pending_start: Mutex::new(None),
            waited: Default::default(),
        });
        self.execs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(exec_id.to_string(), process);
        Ok(())
    }

    /// The init process (empty exec id) or an exec'd one.
    pub fn process(&self, exec_id: &str) -> AgentResult<Arc<Process>> {
        if exec_id.is_empty() || exec_id == self.id {
            return Ok(self.init.clone());
        }
        self.execs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(exec_id)
            .cloned()
            .ok_or_else(|| {
                AgentError::not_found(format!("container {} has no process '{exec_id}'", self.id))
            })
    }

    /// Forgets an exec'd process once it has been waited for and its output has been
    /// read to the end (whichever comes last calls this).
    pub async fn forget_if_done(&self, process: &Process) {
        use std::sync::atomic::Ordering;
        if process.exec_id == self.id {
            return;
        }
        let drained =
            process.io.stdout.lock().await.is_none() && process.io.stderr.lock().await.is_none();
        if drained && process.waited.load(Ordering::SeqCst) {
            self.execs
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&process.exec_id);
        }
    }

    /// Records that WaitProcess has answered for `process`.
    pub fn mark_waited(&self, process: &Process) {
        process
            .waited
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Sends `signal` to one process; for the init process of a container that is not
    /// PID 1 of a namespace of its own (it shares the agent's or its pod's), to every
    /// process of the container's cgroup, since no kernel kills them when the init dies.
    pub fn signal(&self, exec_id: &str, signal: Signal) -> AgentResult<()> {
        let process = self.process(exec_id)?;
        let terminating = matches!(signal, Signal::SIGKILL | Signal::SIGTERM);
        if process.exit_status().is_some() {
            if terminating {
                return Ok(());
            }
            return Err(AgentError::not_found(format!(
                "process '{}' of container {} has exited",
                process.exec_id, self.id
            )));
        }
        if Arc::ptr_eq(&process, &self.init) && self.status() == Status::Created && !terminating {
            return Err(AgentError::precondition(format!(
                "container {} has not been started",
                self.id
            )));
        }
        if Arc::ptr_eq(&process, &self.init)
            && self.pid_ns != PidNamespace::Own
            && let Some(cgroup) = &self.cgroup
        {
            cgroup.signal_all(signal);
        }
        match nix::sys::signal::kill(process.pid, signal) {
            Ok(()) | Err(nix::errno::Errno::ESRCH) => Ok(()),
            Err(e) => Err(AgentError::internal(format!(
                "signalling {}: {e}",
                process.exec_id
            ))),
        }
    }

    /// Kills everything, waits (at most `timeout` seconds; 0 = forever) and removes the
    /// bundle, rootfs bind and cgroup.
    pub async fn destroy(&self, timeout: u32) -> AgentResult<()> {
        if self.status() == Status::Paused
            && let Some(cgroup) = &self.cgroup
        {
            let _ = cgroup.freeze(false);
        }
        // Dropping the start pipe ends a container that was never started.
        self.init
            .pending_start
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        match &self.cgroup {
            Some(cgroup) => {
                cgroup.kill_all().ok();
            }
            None => {
                let _ = nix::sys::signal::kill(self.init.pid, Signal::SIGKILL);
            }
        }
        let wait = self.init.wait();
        if timeout == 0 {
            wait.await;
        } else if tokio::time::timeout(std::time::Duration::from_secs(timeout.into()), wait)
            .await
            .is_err()
        {
            return Err(AgentError::internal(format!(
                "container {}: processes still running after {timeout} s",
                self.id
            )));
        }
        let execs: Vec<Arc<Process>> = self
            .execs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect();
        for process in execs {
            let _ = nix::sys::signal::kill(process.pid, Signal::SIGKILL);
            process.wait().await;
        }
        let _ = nix::mount::umount2(&self.rootfs, MntFlags::MNT_DETACH);
        let bundle_removed = remove_bundle(&self.bundle);
        if let Some(cgroup) = &self.cgroup {
            let cgroup = cgroup.clone();
            tokio::task::spawn_blocking(move || cgroup.remove())
                .await
                .map_err(|e| AgentError::internal(e.to_string()))?
                .map_err(AgentError::internal)?;
        }
        bundle_removed
    }

    /// Freezes or thaws the container.
    pub fn set_paused(&self, paused: bool) -> AgentResult<()> {
        let cgroup = self
            .cgroup
            .as_ref()
            .ok_or_else(|| AgentError::precondition("pausing needs cgroup v2"))?;
        match (self.status(), paused) {
            (Status::Running, true) | (Status::Paused, false) => {}
            (status, _) => {
                return Err(AgentError::precondition(format!(
                    "container {} is {status:?}: cannot {}",
                    self.id,
                    if paused { "pause" } else { "resume" }
                )));
            }
        }
        cgroup.freeze(paused).map_err(AgentError::internal)?;
        *self.paused.lock().unwrap_or_else(|e| e.into_inner()) = paused;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_checked() {
        check_id("container id", "busybox-1_a.b").unwrap();
        for bad in ["", "../x", "a/b", ".hidden", "sp ace", &"x".repeat(129)] {
            let err = check_id("container id", bad).unwrap_err();
            assert_eq!(err.code, ttrpc::Code::INVALID_ARGUMENT, "{bad}");
        }
    }
}
