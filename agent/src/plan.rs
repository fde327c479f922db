//! Turning an OCI spec (the protobuf form the agent API carries) into the allocation-free
//! plans `spawn` executes, validating it on the way: every refusal names the field.

use std::ffi::CString;
use std::path::{Component, Path, PathBuf};

use kata_agent_protocols::oci;
use nix::mount::MsFlags;
use nix::sched::CloneFlags;
use nix::unistd::{Gid, Uid};

use crate::capabilities::{self, CapSets};
use crate::mount_options;
use crate::spawn::{ChildStdio, ContainerSetup, DeviceNode, MountStep, ProcessSetup};

/// PATH used when the process environment has none.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

fn cstring(field: &str, text: &str) -> Result<CString, String> {
    CString::new(text)
        .map_err(|_| format!("{field}: '{}' contains a NUL byte", text.escape_debug()))
}

/// `root` + `path` with `..` refused, so nothing is placed outside the rootfs.
pub fn join_inside(root: &Path, path: &str, field: &str) -> Result<PathBuf, String> {
    let mut joined = root.to_path_buf();
    for component in Path::new(path).components() {
        match component {
            Component::Normal(part) => joined.push(part),
            Component::RootDir | Component::CurDir => {}
            Component::ParentDir | Component::Prefix(_) => {
                return Err(format!("{field}: '{path}' leaves the container root"));
            }
        }
    }
    Ok(joined)
}

fn path_cstring(field: &str, path: &Path) -> Result<CString, String> {
    cstring(field, &path.to_string_lossy())
}

/// The directories between `root` and `target` (exclusive), outermost first.
fn dirs_between(root: &Path, target: &Path) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = target
        .ancestors()
        .skip(1)
        .take_while(|dir| dir.starts_with(root) && *dir != root)
        .map(Path::to_path_buf)
        .collect();
    dirs.reverse();
    dirs
}

fn namespace_flag(kind: &str) -> Result<Option<CloneFlags>, String> {
    Ok(Some(match kind {
        "mount" => CloneFlags::CLONE_NEWNS,
        "uts" => CloneFlags::CLONE_NEWUTS,
        "ipc" => CloneFlags::CLONE_NEWIPC,
        "cgroup" => CloneFlags::CLONE_NEWCGROUP,
        // The VM is the pod: its network namespace is the pod's, and the PID namespace is
        // created by the forking thread.
        "network" | "pid" => return Ok(None),
        "user" => return Err("linux.namespaces: user namespaces are not supported".into()),
        other => {
            return Err(format!(
                "linux.namespaces: unknown namespace type '{other}'"
            ));
        }
    }))
}

/// Annotations naming the sandbox container of a pod container: CRI (containerd), CRI-O.
pub const SANDBOX_ID_ANNOTATIONS: [&str; 2] = [
    "io.kubernetes.cri.sandbox-id",
    "io.kubernetes.cri-o.SandboxID",
];

/// Annotations telling a pod's sandbox container (`sandbox`) from its other containers
/// (`container`): CRI (containerd), CRI-O.
pub const CONTAINER_TYPE_ANNOTATIONS: [&str; 2] = [
    "io.kubernetes.cri.container-type",
    "io.kubernetes.cri-o.ContainerType",
];

/// A namespace a pod container takes from its pod's sandbox container instead of
/// creating it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PodNamespace {
    /// IPC: System V IPC and POSIX message queues.
    Ipc,
    /// UTS: the pod's hostname.
    Uts,
    /// PID, when the pod shares one (CRI `namespace_options.pid = POD`).
    Pid,
}

impl PodNamespace {
    fn from_type(kind: &str) -> Option<Self> {
        match kind {
            "ipc" => Some(Self::Ipc),
            "uts" => Some(Self::Uts),
            "pid" => Some(Self::Pid),
            _ => None,
        }
    }

    /// Its name under `/proc/<pid>/ns/`.
    pub fn proc_name(self) -> &'static str {
        match self {
            Self::Ipc => "ipc",
            Self::Uts => "uts",
            Self::Pid => "pid",
        }
    }

    /// Its `setns(2)` type.
    pub fn flag(self) -> CloneFlags {
        match self {
            Self::Ipc => CloneFlags::CLONE_NEWIPC,
            Self::Uts => CloneFlags::CLONE_NEWUTS,
            Self::Pid => CloneFlags::CLONE_NEWPID,
        }
    }
}

/// The namespaces a pod container joins, and the sandbox container holding them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodShare {
    /// The sandbox container's id (also its container id in this agent).
    pub sandbox_id: String,
    /// The annotation that named it, for error messages.
    pub annotation: &'static str,
    /// The namespaces joined, in spec order.
    pub namespaces: Vec<PodNamespace>,
}

/// What a spec's `linux.namespaces` asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NamespacePlan {
    /// New namespaces besides PID.
    pub unshare: CloneFlags,
    /// Whether the init is the first process of a new PID namespace.
    pub new_pid_ns: bool,
    /// The pod sandbox's namespaces to join, if any.
    pub pod: Option<PodShare>,
}

/// The first non-empty value among `keys`, with its key.
fn annotation<'a>(spec: &'a oci::Spec, keys: &[&'static str]) -> Option<(&'static str, &'a str)> {
    keys.iter().find_map(|key| {
        spec.Annotations
            .get(*key)
            .filter(|value| !value.is_empty())
            .map(|value| (*key, value.as_str()))
    })
}

/// Whether the spec is a pod's sandbox container: it creates the pod's namespaces, so
/// namespace paths in its spec (host paths) are not followed.
fn is_pod_sandbox(spec: &oci::Spec) -> bool {
    annotation(spec, &CONTAINER_TYPE_ANNOTATIONS).is_some_and(|(_, kind)| kind == "sandbox")
}

/// The refusal of a namespace path in a container that names no pod sandbox.
fn no_sandbox(index: usize, ns: &oci::LinuxNamespace) -> String {
    format!(
        "linux.namespaces[{index}] ({}): path '{}' given but the container names no pod \
         sandbox (annotation {} or {})",
        ns.Type,
        ns.Path.escape_debug(),
        SANDBOX_ID_ANNOTATIONS[0],
        SANDBOX_ID_ANNOTATIONS[1],
    )
}

/// Reads `linux.namespaces`: an entry without a path is a new namespace; an `ipc`, `uts`
/// or `pid` entry with a path (a host path, meaningless in the guest) is that namespace
/// of the pod's sandbox container, named by the sandbox-id annotation. `mount` and
/// `cgroup` are always new, `network` is the VM's, `user` is refused.
pub fn namespace_plan(spec: &oci::Spec) -> Result<NamespacePlan, String> {
    let follow_paths = !is_pod_sandbox(spec);
    let sandbox = annotation(spec, &SANDBOX_ID_ANNOTATIONS);
    let mut plan = NamespacePlan {
        unshare: CloneFlags::empty(),
        new_pid_ns: false,
        pod: None,
    };
    let mut joined = Vec::new();
    let entries = spec
        .Linux
        .as_ref()
        .map(|l| l.Namespaces.as_slice())
        .unwrap_or_default();
    for (index, ns) in entries.iter().enumerate() {
        let flag = namespace_flag(&ns.Type).map_err(|e| format!("{e} (entry {index})"))?;
        if entries[..index]
            .iter()
            .any(|earlier| earlier.Type == ns.Type)
        {
            return Err(format!(
                "linux.namespaces[{index}]: a second '{}' entry",
                ns.Type
            ));
        }
        let from_pod =
            PodNamespace::from_type(&ns.Type).filter(|_| follow_paths && !ns.Path.is_empty());
        if let Some(kind) = from_pod {
            if sandbox.is_none() {
                return Err(no_sandbox(index, ns));
            }
            joined.push(kind);
            continue;
        }
        plan.new_pid_ns |= ns.Type == "pid";
        plan.unshare |= flag.unwrap_or(CloneFlags::empty());
    }
    if let Some((annotation, sandbox_id)) = sandbox.filter(|_| !joined.is_empty()) {
        plan.pod = Some(PodShare {
            sandbox_id: sandbox_id.to_string(),
            annotation,
            namespaces: joined,
        });
    }
    Ok(plan)
}

fn mount_step(root: &Path, index: usize, mount: &oci::Mount) -> Result<MountStep, String> {
    let field = format!("mounts[{index}]");
    if !mount.destination.starts_with('/') {
        return Err(format!(
            "{field}.destination '{}' is not absolute",
            mount.destination
        ));
    }
    let target = join_inside(root, &mount.destination, &format!("{field}.destination"))?;
    let parsed = mount_options::parse(&mount.options);
    let mut fstype = mount.type_.clone();
    let mut flags = parsed.flags;
    let mut remount_flags = None;
    let mut target_is_file = false;
    if parsed.is_bind() || fstype == "bind" {
        let source = Path::new(&mount.source);
        let meta = std::fs::metadata(source)
            .map_err(|e| format!("{field}.source '{}': {e}", mount.source))?;
        target_is_file = !meta.is_dir();
        flags.insert(MsFlags::MS_BIND);
        let extra = flags
            & (MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC);
        if !extra.is_empty() {
            remount_flags = Some(MsFlags::MS_BIND | MsFlags::MS_REMOUNT | extra);
        }
        flags = MsFlags::MS_BIND | (flags & MsFlags::MS_REC);
        fstype.clear();
    } else if fstype.is_empty() {
        return Err(format!(
            "{field}: no type for a non-bind mount of '{}'",
            mount.destination
        ));
    } else if fstype == "cgroup" {
        // The guest runs cgroup v2 only.
        fstype = "cgroup2".into();
    }
    Ok(MountStep {
        destination: mount.destination.clone(),
        source: cstring(&format!("{field}.source"), &mount.source)?,
        target: path_cstring(&field, &target)?,
        fstype: cstring(&format!("{field}.type"), &fstype)?,
        flags,
        data: cstring(&format!("{field}.options"), &parsed.data)?,
        remount_flags,
        propagation: parsed.propagation,
        create_dirs: dirs_between(root, &target)
            .iter()
            .map(|dir| path_cstring(&field, dir))
            .collect::<Result<_, _>>()?,
        target_is_file,
    })
}

/// The devices every container gets when its /dev is a fresh tmpfs: (name, major, minor).
const DEFAULT_DEVICES: [(&str, u32, u32); 6] = [
    ("null", 1, 3),
    ("zero", 1, 5),
    ("full", 1, 7),
    ("random", 1, 8),
    ("urandom", 1, 9),
    ("tty", 5, 0),
];

fn device_nodes(root: &Path, linux: Option<&oci::Linux>) -> Result<Vec<DeviceNode>, String> {
    let mut nodes = Vec::new();
    for (name, major, minor) in DEFAULT_DEVICES {
        let path = root.join("dev").join(name);
        nodes.push(DeviceNode {
            path_in_container: format!("/dev/{name}"),
            path: path_cstring("devices", &path)?,
            mode: libc::S_IFCHR | 0o666,
            dev: libc::makedev(major, minor),
            uid: 0,
            gid: 0,
        });
    }
    for (index, device) in linux
        .map(|l| l.Devices.as_slice())
        .unwrap_or_default()
        .iter()
        .enumerate()
    {
        let field = format!("linux.devices[{index}]");
        let kind = match device.Type.as_str() {
            "c" | "u" => libc::S_IFCHR,
            "b" => libc::S_IFBLK,
            "p" => libc::S_IFIFO,
            other => return Err(format!("{field}.type '{other}' is not c, u, b or p")),
        };
        if !device.Path.starts_with("/dev/") {
            return Err(format!("{field}.path '{}' is not under /dev", device.Path));
        }
        let path = join_inside(root, &device.Path, &format!("{field}.path"))?;
        let perms = if device.FileMode == 0 {
            0o666
        } else {
            device.FileMode & 0o7777
        };
        nodes.push(DeviceNode {
            path_in_container: device.Path.clone(),
            path: path_cstring(&field, &path)?,
            mode: kind | perms,
            dev: libc::makedev(device.Major as u32, device.Minor as u32),
            uid: device.UID,
            gid: device.GID,
        });
    }
    Ok(nodes)
}

/// Builds the container-level setup for `spec`, whose rootfs is already at `rootfs`.
/// The mount point (of this mount namespace) that `path` lies on: itself when it is one
/// (a container rootfs the agent bound there).
pub fn mount_point_of(path: &Path) -> Option<std::path::PathBuf> {
    safe_fs::mountinfo::mount_points()
        .ok()?
        .into_iter()
        .map(|m| m.path)
        .filter(|m| path.starts_with(m))
        .max_by_key(|m| m.as_os_str().len())
}

pub fn container_setup(spec: &oci::Spec, rootfs: &Path) -> Result<ContainerSetup, String> {
    let linux = spec.Linux.as_ref();
    let NamespacePlan {
        unshare,
        new_pid_ns,
        pod: _,
    } = namespace_plan(spec)?;
    if !unshare.contains(CloneFlags::CLONE_NEWNS) {
        return Err("linux.namespaces: a mount namespace is required".into());
    }
    let mounts = spec
        .Mounts
        .iter()
        .enumerate()
        .map(|(index, mount)| mount_step(rootfs, index, mount))
        .collect::<Result<Vec<_>, _>>()?;
    let fresh_dev = mounts
        .iter()
        .any(|m| m.destination == "/dev" && !m.flags.contains(MsFlags::MS_BIND));
    let devices = if fresh_dev {
        device_nodes(rootfs, linux)?
    } else {
        Vec::new()
    };
    let mut dev_symlinks = Vec::new();
    if fresh_dev {
        for (target, link) in [
            ("/proc/self/fd", "fd"),
            ("/proc/self/fd/0", "stdin"),
            ("/proc/self/fd/1", "stdout"),
            ("/proc/self/fd/2", "stderr"),
            ("pts/ptmx", "ptmx"),
        ] {
            dev_symlinks.push((
                cstring("symlink", target)?,
                path_cstring("symlink", &rootfs.join("dev").join(link))?,
            ));
        }
    }
    let propagation = linux
        .map(|l| l.RootfsPropagation.as_str())
        .filter(|p| !p.is_empty())
        .map(|p| {
            mount_options::propagation_flags(p)
                .ok_or_else(|| format!("linux.rootfsPropagation '{p}' is not a propagation mode"))
        })
        .transpose()?
        .unwrap_or(MsFlags::MS_SLAVE | MsFlags::MS_REC);
    let list = |field: &str, paths: &[String]| -> Result<Vec<CString>, String> {
        paths.iter().map(|p| cstring(field, p)).collect()
    };
    let mut sysctls = Vec::new();
    for (key, value) in linux
        .map(|l| l.Sysctl.iter().collect::<Vec<_>>())
        .unwrap_or_default()
    {
        if key.contains("..") || key.contains('/') && key.contains('.') {
            return Err(format!("linux.sysctl: bad key '{key}'"));
        }
        let path = format!("/proc/sys/{}", key.replace('.', "/"));
        sysctls.push((
            cstring("linux.sysctl", &path)?,
            cstring("linux.sysctl", value)?,
        ));
    }
    let hostname = (!spec.Hostname.is_empty() && unshare.contains(CloneFlags::CLONE_NEWUTS))
        .then(|| cstring("hostname", &spec.Hostname))
        .transpose()?;
    Ok(ContainerSetup {
        unshare,
        new_pid_ns,
        rootfs: path_cstring("root.path", rootfs)?,
        root_propagation: propagation,
        rootfs_parent_mount: None,
        mounts,
        devices,
        dev_symlinks,
        readonly_rootfs: spec.Root.as_ref().is_some_and(|r| r.Readonly),
        masked_paths: list(
            "linux.maskedPaths",
            linux.map(|l| l.MaskedPaths.as_slice()).unwrap_or_default(),
        )?,
        readonly_paths: list(
            "linux.readonlyPaths",
            linux
                .map(|l| l.ReadonlyPaths.as_slice())
                .unwrap_or_default(),
        )?,
        sysctls,
        hostname,
    })
}

fn rlimit_resource(name: &str) -> Option<i32> {
    Some(match name {
        "RLIMIT_CPU" => libc::RLIMIT_CPU,
        "RLIMIT_FSIZE" => libc::RLIMIT_FSIZE,
        "RLIMIT_DATA" => libc::RLIMIT_DATA,
        "RLIMIT_STACK" => libc::RLIMIT_STACK,
        "RLIMIT_CORE" => libc::RLIMIT_CORE,
        "RLIMIT_RSS" => libc::RLIMIT_RSS,
        "RLIMIT_NPROC" => libc::RLIMIT_NPROC,
        "RLIMIT_NOFILE" => libc::RLIMIT_NOFILE,
        "RLIMIT_MEMLOCK" => libc::RLIMIT_MEMLOCK,
        "RLIMIT_AS" => libc::RLIMIT_AS,
        "RLIMIT_LOCKS" => libc::RLIMIT_LOCKS,
        "RLIMIT_SIGPENDING" => libc::RLIMIT_SIGPENDING,
        "RLIMIT_MSGQUEUE" => libc::RLIMIT_MSGQUEUE,
        "RLIMIT_NICE" => libc::RLIMIT_NICE,
        "RLIMIT_RTPRIO" => libc::RLIMIT_RTPRIO,
        "RLIMIT_RTTIME" => libc::RLIMIT_RTTIME,
        _ => return None,
    } as i32)
}

/// Where to look for `program`: itself when it has a slash, else each PATH entry.
pub fn exec_candidates(program: &str, env: &[String]) -> Vec<String> {
    if program.contains('/') {
        return vec![program.to_string()];
    }
    let path = env
        .iter()
        .find_map(|var| var.strip_prefix("PATH="))
        .unwrap_or(DEFAULT_PATH);
    path.split(':')
        .filter(|dir| !dir.is_empty())
        .map(|dir| format!("{}/{program}", dir.trim_end_matches('/')))
        .collect()
}

/// Builds the process plan for `process`.
pub fn process_setup(
    process: &oci::Process,
    cgroup_procs: Option<&Path>,
    stdio: ChildStdio,
) -> Result<ProcessSetup, String> {
    let program = process.Args.first().ok_or("process.args is empty")?;
    if process.Args.len() > 255 {
        return Err("process.args: more than 255 arguments".into());
    }
    if process.Env.len() > 1023 {
        return Err("process.env: more than 1023 variables".into());
    }
    let argv = process
        .Args
        .iter()
        .map(|a| cstring("process.args", a))
        .collect::<Result<Vec<_>, _>>()?;
    let mut env = process.Env.clone();
    if !env.iter().any(|v| v.starts_with("PATH=")) {
        env.push(format!("PATH={DEFAULT_PATH}"));
    }
    let envp = env
        .iter()
        .map(|v| cstring("process.env", v))
        .collect::<Result<Vec<_>, _>>()?;
    let exec_candidates = exec_candidates(program, &env)
        .iter()
        .map(|c| cstring("process.args[0]", c))
        .collect::<Result<Vec<_>, _>>()?;
    let cwd = if process.Cwd.is_empty() {
        "/"
    } else {
        process.Cwd.as_str()
    };
    if !cwd.starts_with('/') {
        return Err(format!("process.cwd '{cwd}' is not absolute"));
    }
    let user = process.User.as_ref();
    let capabilities = match process.Capabilities.as_ref() {
        None => None,
        Some(caps) => {
            let set = |field: &str, names: &[String]| {
                capabilities::mask(names).map_err(|e| format!("process.capabilities.{field}: {e}"))
            };
            Some(CapSets {
                bounding: set("bounding", &caps.Bounding)?,
                effective: set("effective", &caps.Effective)?,
                permitted: set("permitted", &caps.Permitted)?,
                inheritable: set("inheritable", &caps.Inheritable)?,
                ambient: set("ambient", &caps.Ambient)?,
            })
        }
    };
    let rlimits = process
        .Rlimits
        .iter()
        .map(|limit| {
            let resource = rlimit_resource(&limit.Type)
                .ok_or_else(|| format!("process.rlimits: unknown type '{}'", limit.Type))?;
            if limit.Soft > limit.Hard {
                return Err(format!(
                    "process.rlimits: {} soft limit above the hard limit",
                    limit.Type
                ));
            }
            Ok((resource, limit.Soft, limit.Hard))
        })
        .collect::<Result<Vec<_>, String>>()?;
    let console_size = process
        .ConsoleSize
        .as_ref()
        .filter(|size| size.Height > 0 && size.Width > 0)
        .map(|size| {
            (
                size.Height.min(u16::MAX as u32) as u16,
                size.Width.min(u16::MAX as u32) as u16,
            )
        });
    Ok(ProcessSetup {
        argv,
        envp,
        exec_candidates,
        cwd: cstring("process.cwd", cwd)?,
        uid: Uid::from_raw(user.map(|u| u.UID).unwrap_or(0)),
        gid: Gid::from_raw(user.map(|u| u.GID).unwrap_or(0)),
        additional_gids: user
            .map(|u| u.AdditionalGids.iter().map(|g| Gid::from_raw(*g)).collect())
            .unwrap_or_default(),
        capabilities,
        rlimits,
        no_new_privs: process.NoNewPrivileges,
        oom_score_adj: (process.OOMScoreAdj != 0)
            .then(|| cstring("process.oomScoreAdj", &process.OOMScoreAdj.to_string()))
            .transpose()?,
        cgroup_procs: cgroup_procs
            .map(|p| path_cstring("cgroup", p))
            .transpose()?,
        stdio: Some(stdio),
        console_size,
        seccomp: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec_with(mounts: Vec<oci::Mount>, namespaces: &[&str]) -> oci::Spec {
        let mut linux = oci::Linux::new();
        for kind in namespaces {
            let mut ns = oci::LinuxNamespace::new();
            ns.Type = kind.to_string();
            linux.Namespaces.push(ns);
        }
        let mut spec = oci::Spec::new();
        spec.Mounts = mounts;
        spec.Linux = Some(linux).into();
        spec
    }

    fn mount(destination: &str, kind: &str, source: &str, options: &[&str]) -> oci::Mount {
        let mut m = oci::Mount::new();
        m.destination = destination.into();
        m.type_ = kind.into();
        m.source = source.into();
        m.options = options.iter().map(|o| o.to_string()).collect();
        m
    }

    #[test]
    fn a_typical_spec_becomes_a_plan() {
        let file = std::env::temp_dir().join(format!("plan-hostname-{}", std::process::id()));
        std::fs::write(&file, "h\n").unwrap();
        let spec = spec_with(
            vec![
                mount("/proc", "proc", "proc", &[]),
                mount(
                    "/dev",
                    "tmpfs",
                    "tmpfs",
                    &["nosuid", "strictatime", "mode=755", "size=65536k"],
                ),
                mount(
                    "/etc/hostname",
                    "bind",
                    file.to_str().unwrap(),
                    &["rbind", "ro"],
                ),
            ],
            &["pid", "mount", "ipc", "uts", "network"],
        );
        let setup = container_setup(&spec, Path::new("/run/r")).unwrap();
        assert!(setup.new_pid_ns);
        assert_eq!(
            setup.unshare,
            CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_NEWIPC | CloneFlags::CLONE_NEWUTS
        );
        assert_eq!(
            setup.mounts[1].data.to_str().unwrap(),
            "mode=755,size=65536k"
        );
        assert_eq!(setup.mounts[1].target.to_str().unwrap(), "/run/r/dev");
        let bind = &setup.mounts[2];
        assert!(bind.target_is_file);
        assert_eq!(bind.flags, MsFlags::MS_BIND | MsFlags::MS_REC);
        assert_eq!(
            bind.remount_flags,
            Some(MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY)
        );
        assert_eq!(bind.create_dirs, vec![CString::new("/run/r/etc").unwrap()]);
        assert_eq!(setup.devices.len(), 6);
        assert_eq!(setup.root_propagation, MsFlags::MS_SLAVE | MsFlags::MS_REC);
        std::fs::remove_file(file).unwrap();
    }

    #[tokio::test]
    async fn bad_specs_name_the_field() {
        let escape = spec_with(vec![mount("/../../etc", "tmpfs", "t", &[])], &["mount"]);
        let err = container_setup(&escape, Path::new("/r")).unwrap_err();
        assert!(err.contains("mounts[0].destination"), "{err}");
        let no_mnt = spec_with(vec![], &["pid"]);
        assert!(
            container_setup(&no_mnt, Path::new("/r"))
                .unwrap_err()
                .contains("mount namespace")
        );
        let user = spec_with(vec![], &["mount", "user"]);
        assert!(
            container_setup(&user, Path::new("/r"))
                .unwrap_err()
                .contains("user namespaces")
        );
        let missing = spec_with(
            vec![mount("/x", "bind", "/no/such/dir", &["bind"])],
            &["mount"],
        );
        assert!(
            container_setup(&missing, Path::new("/r"))
                .unwrap_err()
                .contains("mounts[0].source")
        );

        let (_, stdio) = crate::stdio::ProcessIo::create(false).unwrap();
        let mut process = oci::Process::new();
        assert_eq!(
            process_setup(&process, None, stdio).unwrap_err(),
            "process.args is empty"
        );
        process.Args = vec!["sh".into()];
        let mut caps = oci::LinuxCapabilities::new();
        caps.Bounding = vec!["CAP_NOPE".into()];
        process.Capabilities = Some(caps).into();
        let (_, stdio) = crate::stdio::ProcessIo::create(false).unwrap();
        let err = process_setup(&process, None, stdio).unwrap_err();
        assert!(err.contains("process.capabilities.bounding"), "{err}");
    }

    /// A spec with `(type, path)` namespaces and `(key, value)` annotations.
    fn pod_spec(namespaces: &[(&str, &str)], annotations: &[(&str, &str)]) -> oci::Spec {
        let mut spec = spec_with(vec![], &[]);
        let linux = spec.Linux.as_mut().unwrap();
        for (kind, path) in namespaces {
            let mut ns = oci::LinuxNamespace::new();
            ns.Type = kind.to_string();
            ns.Path = path.to_string();
            linux.Namespaces.push(ns);
        }
        for (key, value) in annotations {
            spec.Annotations.insert(key.to_string(), value.to_string());
        }
        spec.Hostname = "app".into();
        spec
    }

    const CRI_CONTAINER: [(&str, &str); 2] = [
        ("io.kubernetes.cri.container-type", "container"),
        ("io.kubernetes.cri.sandbox-id", "sb"),
    ];

    #[test]
    fn a_pod_container_joins_the_sandbox_ipc_uts_and_pid() {
        let spec = pod_spec(
            &[
                ("pid", "/proc/42/ns/pid"),
                ("ipc", "/proc/42/ns/ipc"),
                ("uts", "/proc/42/ns/uts"),
                ("mount", ""),
                ("network", "/var/run/netns/cni-1"),
                ("cgroup", "/proc/42/ns/cgroup"),
            ],
            &CRI_CONTAINER,
        );
        let plan = namespace_plan(&spec).unwrap();
        assert!(!plan.new_pid_ns);
        // mount and cgroup stay new even with a path; network is the VM's.
        assert_eq!(
            plan.unshare,
            CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_NEWCGROUP
        );
        assert_eq!(
            plan.pod,
            Some(PodShare {
                sandbox_id: "sb".into(),
                annotation: "io.kubernetes.cri.sandbox-id",
                namespaces: vec![PodNamespace::Pid, PodNamespace::Ipc, PodNamespace::Uts],
            })
        );
        // The pod's hostname is the sandbox's.
        let setup = container_setup(&spec, Path::new("/r")).unwrap();
        assert_eq!(setup.hostname, None);
        assert!(!setup.new_pid_ns);
    }

    #[test]
    fn a_cri_o_container_with_its_own_pid_namespace() {
        let spec = pod_spec(
            &[
                ("pid", ""),
                ("ipc", "/proc/7/ns/ipc"),
                ("uts", "/proc/7/ns/uts"),
                ("mount", ""),
            ],
            &[
                ("io.kubernetes.cri-o.ContainerType", "container"),
                ("io.kubernetes.cri-o.SandboxID", "pod-7"),
            ],
        );
        let plan = namespace_plan(&spec).unwrap();
        assert!(plan.new_pid_ns);
        assert_eq!(plan.unshare, CloneFlags::CLONE_NEWNS);
        let pod = plan.pod.unwrap();
        assert_eq!(
            (pod.sandbox_id.as_str(), pod.annotation),
            ("pod-7", "io.kubernetes.cri-o.SandboxID")
        );
        assert_eq!(pod.namespaces, vec![PodNamespace::Ipc, PodNamespace::Uts]);
    }

    #[test]
    fn the_sandbox_and_path_less_containers_create_their_namespaces() {
        let all_new = CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_NEWIPC | CloneFlags::CLONE_NEWUTS;
        let sandbox = pod_spec(
            &[
                ("pid", "/proc/1/ns/pid"),
                ("ipc", "/x"),
                ("uts", "/y"),
                ("mount", ""),
            ],
            &[
                ("io.kubernetes.cri.container-type", "sandbox"),
                ("io.kubernetes.cri.sandbox-id", "sb"),
            ],
        );
        let path_less = pod_spec(
            &[("pid", ""), ("ipc", ""), ("uts", ""), ("mount", "")],
            &CRI_CONTAINER,
        );
        for spec in [sandbox, path_less] {
            let plan = namespace_plan(&spec).unwrap();
            assert_eq!((plan.unshare, plan.new_pid_ns), (all_new, true));
            assert_eq!(plan.pod, None);
            let setup = container_setup(&spec, Path::new("/r")).unwrap();
            assert_eq!(setup.hostname, Some(CString::new("app").unwrap()));
        }
    }

    #[test]
    fn namespace_paths_need_a_sandbox_id() {
        let no_id = pod_spec(
            &[("mount", ""), ("ipc", "/proc/42/ns/ipc")],
            &[("io.kubernetes.cri.container-type", "container")],
        );
        assert_eq!(
            namespace_plan(&no_id).unwrap_err(),
            "linux.namespaces[1] (ipc): path '/proc/42/ns/ipc' given but the container names \
             no pod sandbox (annotation io.kubernetes.cri.sandbox-id or \
             io.kubernetes.cri-o.SandboxID)"
        );
        let empty_id = pod_spec(
            &[("uts", "/u"), ("mount", "")],
            &[("io.kubernetes.cri.sandbox-id", "")],
        );
        let err = container_setup(&empty_id, Path::new("/r")).unwrap_err();
        assert!(
            err.starts_with("linux.namespaces[0] (uts): path '/u'"),
            "{err}"
        );
        let twice = pod_spec(&[("mount", ""), ("ipc", "/i"), ("ipc", "")], &CRI_CONTAINER);
        assert_eq!(
            namespace_plan(&twice).unwrap_err(),
            "linux.namespaces[2]: a second 'ipc' entry"
        );
        let user = pod_spec(
            &[("mount", ""), ("user", "/proc/1/ns/user")],
            &CRI_CONTAINER,
        );
        assert!(
            namespace_plan(&user)
                .unwrap_err()
                .contains("user namespaces")
        );
    }

    #[test]
    fn path_lookup_follows_the_process_path() {
        assert_eq!(exec_candidates("/bin/sh", &[]), vec!["/bin/sh"]);
        assert_eq!(
            exec_candidates("sh", &["PATH=/a:/b/".into()]),
            vec!["/a/sh", "/b/sh"]
        );
        assert_eq!(exec_candidates("sh", &[]).len(), 6);
    }
}
