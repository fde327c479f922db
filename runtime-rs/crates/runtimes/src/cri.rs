//! What a Kubernetes runtime (containerd's CRI, CRI-O) says about a container through its
//! OCI spec: its role in the pod (annotations), the pod's network namespace, and the host
//! namespaces it asks for, which a VM-isolated pod cannot share.

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

fn annotation<'a>(spec: &'a oci::Spec, keys: [&str; 2]) -> Option<&'a str> {
    let annotations = spec.annotations().as_ref()?;
    keys.iter()
        .find_map(|key| annotations.get(*key))
        .map(String::as_str)
}

/// The container's role, from the CRI (or CRI-O) annotations.
pub fn role(spec: &oci::Spec) -> Role {
    match annotation(spec, [CONTAINER_TYPE, CRIO_CONTAINER_TYPE]) {
        Some("sandbox") => Role::Sandbox,
        Some("container") => match annotation(spec, [SANDBOX_ID, CRIO_SANDBOX_ID]) {
            Some(sandbox) => Role::Container {
                sandbox: sandbox.to_string(),
            },
            None => Role::Single,
        },
        _ => Role::Single,
    }
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
