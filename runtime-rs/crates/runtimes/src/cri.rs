//! What a Kubernetes runtime (containerd's CRI, CRI-O) says about a container through its
//! OCI spec: its role in the pod (annotations), the pod's network namespace, the host
//! namespaces it asks for, which a VM-isolated pod cannot share, and the pod's resources
//! (the sandbox sizing annotations).

use std::collections::HashMap;
use std::path::PathBuf;

use oci_spec::runtime as oci;

/// containerd CRI's annotation naming a container's kind (`sandbox` or `container`).
pub const CONTAINER_TYPE: &str = "io.kubernetes.cri.container-type";
/// containerd CRI's annotation naming the pod sandbox a container belongs to.
pub const SANDBOX_ID: &str = "io.kubernetes.cri.sandbox-id";
/// CRI-O's container kind annotation.
pub const CRIO_CONTAINER_TYPE: &str = "io.kubernetes.cri-o.ContainerType";
/// CRI-O's pod sandbox annotation.
pub const CRIO_SANDBOX_ID: &str = "io.kubernetes.cri-o.SandboxID";
/// containerd CRI (1.7+): the sum of the pod's containers' CPU quotas, in µs per period.
pub const SANDBOX_CPU_QUOTA: &str = "io.kubernetes.cri.sandbox-cpu-quota";
/// containerd CRI: the CPU period the quota is counted in, in µs.
pub const SANDBOX_CPU_PERIOD: &str = "io.kubernetes.cri.sandbox-cpu-period";
/// containerd CRI: the sum of the pod's containers' CPU shares.
pub const SANDBOX_CPU_SHARES: &str = "io.kubernetes.cri.sandbox-cpu-shares";
/// containerd CRI: the sum of the pod's containers' memory limits, in bytes.
pub const SANDBOX_MEMORY: &str = "io.kubernetes.cri.sandbox-memory";

/// A container's place in a pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Role {
    /// Not a Kubernetes container (`ctr run`): its own sandbox.
    Single,
    /// The pod's sandbox (pause) container: it starts the VM.
    Sandbox,
    /// A container of the pod whose sandbox is `sandbox`.
    Container {
        /// The sandbox container's id.
        sandbox: String,
    },
}

impl Role {
    /// Whether a Kubernetes runtime created the container.
    pub fn is_pod(&self) -> bool {
        *self != Role::Single
    }
}

fn annotation<'a>(annotations: &'a HashMap<String, String>, keys: [&str; 2]) -> Option<&'a str> {
    keys.iter()
        .find_map(|key| annotations.get(*key))
        .map(String::as_str)
}

/// The container's role, from the CRI (or CRI-O) annotations.
pub fn role(spec: &oci::Spec) -> Role {
    spec.annotations().as_ref().map_or(Role::Single, role_of)
}

/// The role a spec with these annotations has (see [`role`]).
pub fn role_of(annotations: &HashMap<String, String>) -> Role {
    match annotation(annotations, [CONTAINER_TYPE, CRIO_CONTAINER_TYPE]) {
        Some("sandbox") => Role::Sandbox,
        Some("container") => match annotation(annotations, [SANDBOX_ID, CRIO_SANDBOX_ID]) {
            Some(sandbox) => Role::Container {
                sandbox: sandbox.to_string(),
            },
            None => Role::Single,
        },
        _ => Role::Single,
    }
}

/// The pod's resources as containerd's CRI announces them on the sandbox spec; an absent
/// (or empty) annotation counts as 0, as in Kata.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SandboxResources {
    /// [`SANDBOX_CPU_QUOTA`]: µs per period; negative: unconstrained.
    pub cpu_quota: i64,
    /// [`SANDBOX_CPU_PERIOD`]: µs.
    pub cpu_period: u64,
    /// [`SANDBOX_CPU_SHARES`].
    pub cpu_shares: u64,
    /// [`SANDBOX_MEMORY`]: bytes; negative: unconstrained.
    pub memory: i64,
}

/// A sizing annotation whose value is not a number.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("annotation {key}={value:?}: not an integer")]
pub struct BadAnnotation {
    /// The annotation.
    pub key: &'static str,
    /// Its value.
    pub value: String,
}

fn number<T: std::str::FromStr + Default>(
    annotations: &HashMap<String, String>,
    key: &'static str,
) -> Result<T, BadAnnotation> {
    match annotations.get(key).map(|v| v.trim()) {
        None | Some("") => Ok(T::default()),
        Some(value) => value.parse().map_err(|_| BadAnnotation {
            key,
            value: value.to_string(),
        }),
    }
}

/// The sandbox sizing annotations (containerd 1.7+ and 2.x write them on the sandbox
/// container's spec).
pub fn sandbox_resources(
    annotations: &HashMap<String, String>,
) -> Result<SandboxResources, BadAnnotation> {
    Ok(SandboxResources {
        cpu_quota: number(annotations, SANDBOX_CPU_QUOTA)?,
        cpu_period: number(annotations, SANDBOX_CPU_PERIOD)?,
        cpu_shares: number(annotations, SANDBOX_CPU_SHARES)?,
        memory: number(annotations, SANDBOX_MEMORY)?,
    })
}

fn namespace(spec: &oci::Spec, kind: oci::LinuxNamespaceType) -> Option<&oci::LinuxNamespace> {
    spec.linux()
        .as_ref()?
        .namespaces()
        .as_ref()?
        .iter()
        .find(|ns| ns.typ() == kind)
}

/// The network namespace the spec joins (the pod's, made by CNI), if it names one.
pub fn network_namespace(spec: &oci::Spec) -> Option<PathBuf> {
    namespace(spec, oci::LinuxNamespaceType::Network)?
        .path()
        .clone()
        .filter(|p| !p.as_os_str().is_empty())
}

/// A pod asking for a namespace of the host.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "the pod asks for the host's {kind} namespace ({field}): a pod in its own VM cannot share the host's namespaces"
)]
pub struct HostNamespace {
    /// The namespace kind missing from linux.namespaces.
    pub kind: &'static str,
    /// The Kubernetes pod field that asks for it.
    pub field: &'static str,
}

/// Fails for a pod container whose spec leaves out a namespace Kubernetes only leaves
/// out when the pod shares the host's (hostNetwork, hostPID, hostIPC).
pub fn check_host_namespaces(spec: &oci::Spec, role: &Role) -> Result<(), HostNamespace> {
    if !role.is_pod() {
        return Ok(());
    }
    let mut wanted = vec![
        (oci::LinuxNamespaceType::Pid, "pid", "hostPID"),
        (oci::LinuxNamespaceType::Ipc, "ipc", "hostIPC"),
        (oci::LinuxNamespaceType::Uts, "uts", "hostNetwork"),
    ];
    if *role == Role::Sandbox {
        wanted.insert(
            0,
            (oci::LinuxNamespaceType::Network, "network", "hostNetwork"),
        );
    }
    match wanted
        .into_iter()
        .find(|(kind, _, _)| namespace(spec, *kind).is_none())
    {
        Some((_, kind, field)) => Err(HostNamespace { kind, field }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(annotations: &str, namespaces: &str) -> oci::Spec {
        serde_json::from_str(&format!(
            r#"{{"ociVersion": "1.0.2", "annotations": {{{annotations}}},
                "linux": {{"namespaces": [{namespaces}]}}}}"#
        ))
        .unwrap()
    }

    const POD_NAMESPACES: &str = r#"{"type": "pid"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"},
        {"type": "network", "path": "/var/run/netns/cni-1"}"#;

    #[test]
    fn roles_come_from_cri_or_crio_annotations() {
        let sandbox = spec(r#""io.kubernetes.cri.container-type": "sandbox""#, "");
        assert_eq!(role(&sandbox), Role::Sandbox);
        let container = spec(
            r#""io.kubernetes.cri-o.ContainerType": "container", "io.kubernetes.cri-o.SandboxID": "p1""#,
            "",
        );
        assert_eq!(
            role(&container),
            Role::Container {
                sandbox: "p1".into()
            }
        );
        assert_eq!(role(&spec("", "")), Role::Single);
    }

    #[test]
    fn sandbox_resources_are_numbers_or_absent() {
        let annotations = |pairs: &[(&str, &str)]| -> HashMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        assert_eq!(
            sandbox_resources(&annotations(&[
                (SANDBOX_CPU_QUOTA, "220000"),
                (SANDBOX_CPU_PERIOD, " 100000 "),
                (SANDBOX_CPU_SHARES, "2"),
                (SANDBOX_MEMORY, "536870912"),
            ])),
            Ok(SandboxResources {
                cpu_quota: 220_000,
                cpu_period: 100_000,
                cpu_shares: 2,
                memory: 512 << 20,
            })
        );
        assert_eq!(
            sandbox_resources(&annotations(&[
                (SANDBOX_CPU_QUOTA, "-1"),
                (SANDBOX_MEMORY, "")
            ])),
            Ok(SandboxResources {
                cpu_quota: -1,
                ..Default::default()
            })
        );
        let err = sandbox_resources(&annotations(&[(SANDBOX_CPU_PERIOD, "-5")])).unwrap_err();
        assert_eq!(err.key, SANDBOX_CPU_PERIOD);
        assert!(err.to_string().contains("\"-5\""), "{err}");
        let err = sandbox_resources(&annotations(&[(SANDBOX_MEMORY, "1Gi")])).unwrap_err();
        assert!(err.to_string().contains(SANDBOX_MEMORY), "{err}");
    }

    #[test]
    fn the_network_namespace_is_the_one_with_a_path() {
        assert_eq!(
            network_namespace(&spec("", POD_NAMESPACES)),
            Some(PathBuf::from("/var/run/netns/cni-1"))
        );
        assert_eq!(network_namespace(&spec("", r#"{"type": "network"}"#)), None);
    }

    #[test]
    fn host_namespaces_of_a_pod_are_refused_by_name() {
        let sandbox = r#""io.kubernetes.cri.container-type": "sandbox""#;
        assert_eq!(
            check_host_namespaces(&spec(sandbox, POD_NAMESPACES), &Role::Sandbox),
            Ok(())
        );
        let host_network = spec(
            sandbox,
            r#"{"type": "pid"}, {"type": "ipc"}, {"type": "mount"}"#,
        );
        let err = check_host_namespaces(&host_network, &Role::Sandbox).unwrap_err();
        assert_eq!((err.kind, err.field), ("network", "hostNetwork"));
        let host_pid = spec(
            sandbox,
            r#"{"type": "ipc"}, {"type": "uts"}, {"type": "network"}"#,
        );
        assert!(
            check_host_namespaces(&host_pid, &Role::Sandbox)
                .unwrap_err()
                .to_string()
                .contains("hostPID")
        );
        // A ctr container may leave out what it likes.
        assert_eq!(
            check_host_namespaces(&spec("", r#"{"type": "mount"}"#), &Role::Single),
            Ok(())
        );
    }
}
