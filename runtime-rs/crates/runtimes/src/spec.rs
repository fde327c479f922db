//! The container's OCI spec (config.json, oci-spec) rewritten for the guest as the agent
//! API's protobuf spec: root on the share, host namespace paths and hooks dropped, bind
//! mounts redirected to their copies on the share.

use std::collections::HashMap;
use std::path::Path;

use kata_agent_protocols::oci as pb;
use oci_spec::runtime as oci;

/// Where the guest sees the share.
pub const GUEST_SHARE: &str = "/run/kata-containers/shared/containers";

pub use kata_resource::ShareBind;

/// An oci-spec enum by its spec name (`SCMP_ACT_ALLOW`, ...): its serde form, which is
/// what config.json spells.
fn spec_name(value: serde_json::Result<serde_json::Value>) -> String {
    value
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// `linux.seccomp` as the agent API has it; the agent compiles and installs it.
fn seccomp(profile: &oci::LinuxSeccomp) -> pb::LinuxSeccomp {
    pb::LinuxSeccomp {
        DefaultAction: spec_name(serde_json::to_value(profile.default_action())),
        DefaultErrnoRet: profile.default_errno_ret().unwrap_or(0),
        Architectures: profile
            .architectures()
            .iter()
            .flatten()
            .map(|a| spec_name(serde_json::to_value(a)))
            .collect(),
        Flags: profile
            .flags()
            .iter()
            .flatten()
            .map(|f| spec_name(serde_json::to_value(f)))
            .collect(),
        Syscalls: profile
            .syscalls()
            .iter()
            .flatten()
            .map(|call| {
                let mut wire = pb::LinuxSyscall {
                    Names: call.names().clone(),
                    Action: spec_name(serde_json::to_value(call.action())),
                    Args: call
                        .args()
                        .iter()
                        .flatten()
                        .map(|arg| pb::LinuxSeccompArg {
                            Index: arg.index() as u64,
                            Value: arg.value(),
                            ValueTwo: arg.value_two().unwrap_or(0),
                            Op: spec_name(serde_json::to_value(arg.op())),
                            ..Default::default()
                        })
                        .collect(),
                    ..Default::default()
                };
                if let Some(errno) = call.errno_ret() {
                    wire.set_errnoret(errno);
                }
                wire
            })
            .collect(),
        ..Default::default()
    }
}

/// The guest spec plus the binds the host must set up before sending it.
#[derive(Debug)]
pub struct GuestSpec {
    /// The spec for CreateContainer.
    pub spec: pb::Spec,
    /// Host paths to bind into the share.
    pub binds: Vec<ShareBind>,
}

/// Mount types the guest creates itself.
const GUEST_FS_TYPES: [&str; 7] = [
    "proc", "sysfs", "tmpfs", "devpts", "mqueue", "cgroup", "cgroup2",
];

fn strings(list: Option<&Vec<String>>) -> Vec<String> {
    list.cloned().unwrap_or_default()
}

fn caps(set: Option<&oci_spec::runtime::Capabilities>) -> Vec<String> {
    let mut names: Vec<String> = set
        .map(|s| s.iter().map(|c| format!("CAP_{c}")).collect())
        .unwrap_or_default();
    names.sort();
    names
}

/// Converts one OCI process (the init's or an exec's).
pub fn process(p: &oci::Process) -> pb::Process {
    let user = p.user();
    pb::Process {
        Terminal: p.terminal().unwrap_or(false),
        ConsoleSize: p
            .console_size()
            .map(|b| pb::Box {
                Height: b.height() as u32,
                Width: b.width() as u32,
                ..Default::default()
            })
            .into(),
        User: Some(pb::User {
            UID: user.uid(),
            GID: user.gid(),
            AdditionalGids: user.additional_gids().clone().unwrap_or_default(),
            Username: user.username().clone().unwrap_or_default(),
            ..Default::default()
        })
        .into(),
        Args: strings(p.args().as_ref()),
        Env: strings(p.env().as_ref()),
        Cwd: p.cwd().to_string_lossy().into_owned(),
        Capabilities: p
            .capabilities()
            .as_ref()
            .map(|c| pb::LinuxCapabilities {
                Bounding: caps(c.bounding().as_ref()),
                Effective: caps(c.effective().as_ref()),
                Inheritable: caps(c.inheritable().as_ref()),
                Permitted: caps(c.permitted().as_ref()),
                Ambient: caps(c.ambient().as_ref()),
                ..Default::default()
            })
            .into(),
        Rlimits: p
            .rlimits()
            .as_ref()
            .map(|list| {
                list.iter()
                    .map(|r| pb::POSIXRlimit {
                        Type: serde_json::to_value(r.typ())
                            .ok()
                            .and_then(|v| v.as_str().map(str::to_string))
                            .unwrap_or_default(),
                        Hard: r.hard(),
                        Soft: r.soft(),
                        ..Default::default()
                    })
                    .collect()
            })
            .unwrap_or_default(),
        NoNewPrivileges: p.no_new_privileges().unwrap_or(false),
        OOMScoreAdj: p.oom_score_adj().unwrap_or(0) as i64,
        ..Default::default()
    }
}

fn resources(r: &oci::LinuxResources) -> pb::LinuxResources {
    pb::LinuxResources {
        Memory: r
            .memory()
            .as_ref()
            .map(|m| pb::LinuxMemory {
                Limit: m.limit().unwrap_or(0),
                Reservation: m.reservation().unwrap_or(0),
                Swap: m.swap().unwrap_or(0),
                ..Default::default()
            })
            .into(),
        CPU: r
            .cpu()
            .as_ref()
            .map(|c| pb::LinuxCPU {
                Shares: c.shares().unwrap_or(0),
                Quota: c.quota().unwrap_or(0),
                Period: c.period().unwrap_or(0),
                Cpus: c.cpus().clone().unwrap_or_default(),
                Mems: c.mems().clone().unwrap_or_default(),
                ..Default::default()
            })
            .into(),
        Pids: r
            .pids()
            .as_ref()
            .map(|p| pb::LinuxPids {
                Limit: p.limit(),
                ..Default::default()
            })
            .into(),
        ..Default::default()
    }
}

/// Converts LinuxResources (for Update).
pub fn linux_resources(r: &oci::LinuxResources) -> pb::LinuxResources {
    resources(r)
}

/// What in an OCI spec cannot be run in the guest.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// A required section is absent.
    #[error("config.json has no {0}")]
    Missing(&'static str),
    /// A bind mount's host source is absent.
    #[error("mounts[{index}] ({destination}): bind source '{host}' does not exist")]
    NoBindSource {
        /// Index in `mounts`.
        index: usize,
        /// Its destination.
        destination: String,
        /// Its host source.
        host: String,
    },
    /// A mount type the guest cannot take from the host.
    #[error("mounts[{index}] ({destination}): type '{kind}' cannot be passed to the guest")]
    UnsupportedMount {
        /// Index in `mounts`.
        index: usize,
        /// Its destination.
        destination: String,
        /// Its type.
        kind: String,
    },
    /// A bind asking for bidirectional propagation: mounts made in the guest cannot reach
    /// the host, so it is refused rather than silently half-honoured.
    #[error(
        "mounts[{index}] ({destination}): '{option}' (Bidirectional mount propagation) cannot \
         cross the VM boundary: mounts made in the guest never reach the host; use \
         HostToContainer (rslave) or None"
    )]
    BidirectionalPropagation {
        /// Index in `mounts`.
        index: usize,
        /// Its destination.
        destination: String,
        /// The option that asked for it.
        option: String,
    },
}

/// Whether `dir` has other mounts beneath it in the shim's mount namespace.
fn has_submounts(dir: &Path) -> bool {
    let Ok(dir) = dir.canonicalize() else {
        return false;
    };
    safe_fs::mount_points()
        .map(|points| {
            points
                .iter()
                .any(|m| m.path != dir && m.path.starts_with(&dir))
        })
        .unwrap_or(false)
}

/// Rewrites `spec` (container `id`) for the guest.
pub fn for_guest(spec: &oci::Spec, id: &str) -> Result<GuestSpec, SpecError> {
    let process = spec
        .process()
        .as_ref()
        .ok_or(SpecError::Missing("process"))?;
    let root = spec.root().as_ref().ok_or(SpecError::Missing("root"))?;
    let mut binds = Vec::new();
    let mut mounts = Vec::new();
    for (index, m) in spec
        .mounts()
        .as_ref()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .enumerate()
    {
        let kind = m.typ().clone().unwrap_or_default();
        let mut options = strings(m.options().as_ref());
        let destination = m.destination().to_string_lossy().into_owned();
        let source = m
            .source()
            .as_ref()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let is_bind = kind == "bind" || options.iter().any(|o| o == "bind" || o == "rbind");
        let bidirectional = options.iter().find(|o| *o == "rshared" || *o == "shared");
        if let Some(option) = bidirectional.filter(|_| is_bind) {
            return Err(SpecError::BidirectionalPropagation {
                index,
                destination,
                option: option.clone(),
            });
        }
        let source = if GUEST_FS_TYPES.contains(&kind.as_str()) && !is_bind {
            source
        } else if is_bind {
            let host = Path::new(&source);
            if !host.exists() {
                return Err(SpecError::NoBindSource {
                    index,
                    destination,
                    host: source,
                });
            }
            let name = format!(
                "{id}-mount-{index}-{}",
                host.file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default()
            );
            let readonly = options.iter().any(|o| o == "ro");
            // A read-only bind is not recursive (runc's and the kernel's meaning): mounts
            // beneath its source keep their own mode. The host's bind enforces that (only
            // its top is remounted read-only); the guest may not see those submounts (the
            // inline server does not announce them), so a read-only guest mount would
            // refuse writes to them too. Such a bind is left to the host to enforce.
            if readonly && has_submounts(host) {
                options.retain(|o| o != "ro");
            }
            binds.push(ShareBind {
                source: host.to_path_buf(),
                name: name.clone(),
                readonly,
            });
            format!("{GUEST_SHARE}/{name}")
        } else {
            return Err(SpecError::UnsupportedMount {
                index,
                destination,
                kind,
            });
        };
        mounts.push(pb::Mount {
            destination,
            source,
            type_: if is_bind { "bind".into() } else { kind },
            options,
            ..Default::default()
        });
    }
    let linux = spec.linux().as_ref();
    let namespaces = linux
        .and_then(|l| l.namespaces().as_ref())
        .map(|list| {
            list.iter()
                .filter_map(|ns| {
                    let kind = serde_json::to_value(ns.typ()).ok()?.as_str()?.to_string();
                    // The VM is the pod: no network or user namespace inside. A pod
                    // container's ipc/uts/pid path names its sandbox's namespace: the
                    // agent joins the sandbox container's (the path itself means nothing
                    // in the guest); other paths are dropped.
                    let joins_pod = ["ipc", "uts", "pid"].contains(&kind.as_str());
                    (kind != "network" && kind != "user").then(|| pb::LinuxNamespace {
                        Path: ns
                            .path()
                            .as_ref()
                            .filter(|_| joins_pod)
                            .map(|p| p.to_string_lossy().into_owned())
                            .unwrap_or_default(),
                        Type: kind,
                        ..Default::default()
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    let guest_linux = pb::Linux {
        Namespaces: namespaces,
        Resources: linux
            .and_then(|l| l.resources().as_ref())
            .map(resources)
            .into(),
        CgroupsPath: linux
            .and_then(|l| l.cgroups_path().as_ref())
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default(),
        Sysctl: linux
            .and_then(|l| l.sysctl().clone())
            .unwrap_or_default()
            .into_iter()
            .collect(),
        MaskedPaths: strings(linux.and_then(|l| l.masked_paths().as_ref())),
        ReadonlyPaths: strings(linux.and_then(|l| l.readonly_paths().as_ref())),
        RootfsPropagation: linux
            .and_then(|l| l.rootfs_propagation().clone())
            .unwrap_or_default(),
        Seccomp: linux.and_then(|l| l.seccomp().as_ref()).map(seccomp).into(),
        ..Default::default()
    };
    let annotations: HashMap<String, String> = spec
        .annotations()
        .clone()
        .unwrap_or_default()
        .into_iter()
        .collect();
    let guest = pb::Spec {
        Version: spec.version().clone(),
        Process: Some(process_with_defaults(process)).into(),
        Root: Some(pb::Root {
            Path: format!("{GUEST_SHARE}/{id}/rootfs"),
            Readonly: root.readonly().unwrap_or(false),
            ..Default::default()
        })
        .into(),
        Hostname: spec.hostname().clone().unwrap_or_default(),
        Mounts: mounts,
        Annotations: annotations,
        Linux: Some(guest_linux).into(),
        ..Default::default()
    };
    Ok(GuestSpec { spec: guest, binds })
}

fn process_with_defaults(p: &oci::Process) -> pb::Process {
    process(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = r#"{
      "ociVersion": "1.0.2-dev",
      "process": {"terminal": false, "user": {"uid": 0, "gid": 0}, "args": ["sh", "-c", "echo hi"],
        "env": ["PATH=/bin"], "cwd": "/",
        "capabilities": {"bounding": ["CAP_KILL"], "effective": ["CAP_KILL"], "permitted": ["CAP_KILL"]},
        "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}], "noNewPrivileges": true},
      "root": {"path": "rootfs", "readonly": true},
      "hostname": "t1",
      "mounts": [
        {"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid"]},
        {"destination": "/data", "type": "bind", "source": "/tmp", "options": ["rbind", "ro"]}
      ],
      "linux": {"namespaces": [{"type": "pid"}, {"type": "network", "path": "/proc/1/ns/net"}, {"type": "mount"}],
        "resources": {"memory": {"limit": 33554432}}, "cgroupsPath": "/default/t1",
        "maskedPaths": ["/proc/kcore"]}
    }"#;

    #[test]
    fn a_ctr_spec_is_rewritten_for_the_guest() {
        let spec: oci::Spec = serde_json::from_str(CONFIG).unwrap();
        let guest = for_guest(&spec, "t1").unwrap();
        let s = &guest.spec;
        assert_eq!(
            s.Root.Path,
            "/run/kata-containers/shared/containers/t1/rootfs"
        );
        assert!(s.Root.Readonly);
        let kinds: Vec<&str> = s.Linux.Namespaces.iter().map(|n| n.Type.as_str()).collect();
        assert_eq!(kinds, ["pid", "mount"]);
        assert_eq!(s.Linux.Resources.Memory.Limit, 32 << 20);
        assert_eq!(s.Process.Capabilities.Bounding, ["CAP_KILL"]);
        assert_eq!(s.Process.Rlimits[0].Type, "RLIMIT_NOFILE");
        assert_eq!(
            s.Mounts[1].source,
            "/run/kata-containers/shared/containers/t1-mount-1-tmp"
        );
        assert_eq!(
            guest.binds,
            vec![ShareBind {
                source: "/tmp".into(),
                name: "t1-mount-1-tmp".into(),
                readonly: true
            }]
        );
    }

    #[test]
    fn bad_specs_name_the_culprit() {
        let mut value: serde_json::Value = serde_json::from_str(CONFIG).unwrap();
        value["mounts"][1]["source"] = "/no/such/dir".into();
        let spec: oci::Spec = serde_json::from_value(value.clone()).unwrap();
        let err = for_guest(&spec, "t1").unwrap_err().to_string();
        assert!(
            err.contains("mounts[1] (/data)") && err.contains("/no/such/dir"),
            "{err}"
        );
        value["mounts"][1] =
            serde_json::json!({"destination": "/x", "type": "nfs", "source": "srv:/x"});
        let spec: oci::Spec = serde_json::from_value(value.clone()).unwrap();
        assert!(
            for_guest(&spec, "t1")
                .unwrap_err()
                .to_string()
                .contains("type 'nfs'")
        );
        value["mounts"][1] = serde_json::json!({"destination": "/vol", "type": "bind",
            "source": "/tmp", "options": ["rbind", "rshared", "rw"]});
        let spec: oci::Spec = serde_json::from_value(value).unwrap();
        let err = for_guest(&spec, "t1").unwrap_err().to_string();
        assert!(
            err.contains("mounts[1] (/vol)") && err.contains("'rshared' (Bidirectional"),
            "{err}"
        );
    }

    #[test]
    fn a_read_only_bind_over_submounts_is_left_to_the_host() {
        let mut value: serde_json::Value = serde_json::from_str(CONFIG).unwrap();
        // `/` always has mounts beneath it (/proc at least); this test's temp dir has none.
        let plain = std::env::temp_dir().join(format!("spec-ro-{}", std::process::id()));
        std::fs::create_dir_all(&plain).unwrap();
        for (source, guest_ro) in [
            ("/".to_string(), false),
            (plain.display().to_string(), true),
        ] {
            value["mounts"][1]["source"] = source.clone().into();
            let spec: oci::Spec = serde_json::from_value(value.clone()).unwrap();
            let guest = for_guest(&spec, "t1").unwrap();
            assert!(
                guest.binds[0].readonly,
                "{source}: the host bind is read-only"
            );
            assert_eq!(
                guest.spec.Mounts[1].options.iter().any(|o| o == "ro"),
                guest_ro,
                "{source}: {:?}",
                guest.spec.Mounts[1].options
            );
        }
        std::fs::remove_dir(&plain).unwrap();
    }
}
