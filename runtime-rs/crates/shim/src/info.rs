//! `containerd-shim-kata-v2 -info`: containerd 2.x's runtime introspection. Reads the
//! runtime options (an `Any`, possibly empty) on stdin and prints a protobuf
//! `containerd.types.RuntimeInfo`: name, version, the options it understood, and the OCI
//! runtime features of what runs in the guest.

use std::io::Read;

use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::{Message, MessageField};
use containerd_shim_protos::types::introspection::{RuntimeInfo, RuntimeVersion};

/// The type URL containerd decodes the features with.
pub const FEATURES_TYPE_URL: &str =
    "types.containerd.io/opencontainers/runtime-spec/1/features/Features";

/// What the guest honours, as OCI runtime features: the namespaces a container can have in
/// the VM (never the host's network or user namespace), cgroup v2, seccomp profiles (the
/// guest agent installs them; no notify), and no hooks, AppArmor, SELinux or idmapped
/// mounts (the rewrite for the guest drops them).
fn features() -> serde_json::Value {
    serde_json::json!({
        "ociVersionMin": "1.0.0",
        "ociVersionMax": "1.2.0",
        "hooks": [],
        "mountOptions": ["bind", "rbind", "ro", "rw", "nosuid", "nodev", "noexec"],
        "linux": {
            "namespaces": ["cgroup", "ipc", "mount", "pid", "uts"],
            "cgroup": {"v1": false, "v2": true, "systemd": false, "systemdUser": false},
            "seccomp": {
                "enabled": true,
                "actions": [
                    "SCMP_ACT_ALLOW", "SCMP_ACT_ERRNO", "SCMP_ACT_KILL", "SCMP_ACT_KILL_PROCESS",
                    "SCMP_ACT_KILL_THREAD", "SCMP_ACT_LOG", "SCMP_ACT_TRACE", "SCMP_ACT_TRAP"
                ],
                "operators": [
                    "SCMP_CMP_EQ", "SCMP_CMP_GE", "SCMP_CMP_GT", "SCMP_CMP_LE", "SCMP_CMP_LT",
                    "SCMP_CMP_MASKED_EQ", "SCMP_CMP_NE"
                ],
                "archs": ["SCMP_ARCH_RISCV64", "SCMP_ARCH_X86_64"],
                "knownFlags": [
                    "SECCOMP_FILTER_FLAG_LOG", "SECCOMP_FILTER_FLAG_SPEC_ALLOW",
                    "SECCOMP_FILTER_FLAG_TSYNC"
                ],
                "supportedFlags": [
                    "SECCOMP_FILTER_FLAG_LOG", "SECCOMP_FILTER_FLAG_SPEC_ALLOW",
                    "SECCOMP_FILTER_FLAG_TSYNC"
                ]
            },
            "apparmor": {"enabled": false},
            "selinux": {"enabled": false},
            "intelRdt": {"enabled": false},
            "mountExtensions": {"idmap": {"enabled": false}}
        }
    })
}

/// Builds the answer for the options on `stdin`; bad options are an error naming them.
pub fn run(stdin: impl Read) -> Result<Vec<u8>, String> {
    let mut bytes = Vec::new();
    stdin
        .take(crate::bootstrap::MAX_INPUT)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("-info: reading stdin: {e}"))?;
    let options = if bytes.is_empty() {
        None
    } else {
        let any = Any::parse_from_bytes(&bytes)
            .map_err(|e| format!("-info: stdin is not runtime options: {e}"))?;
        crate::options::config_path_from_options(&MessageField::some(any.clone()))
            .map_err(|e| format!("-info: {e}"))?;
        Some(any)
    };
    let info = RuntimeInfo {
        name: crate::RUNTIME_ID.to_string(),
        version: MessageField::some(RuntimeVersion {
            version: env!("CARGO_PKG_VERSION").to_string(),
            ..Default::default()
        }),
        options: options.into(),
        features: MessageField::some(Any {
            type_url: FEATURES_TYPE_URL.to_string(),
            value: serde_json::to_vec(&features()).expect("JSON of a literal"),
            ..Default::default()
        }),
        ..Default::default()
    };
    info.write_to_bytes()
        .map_err(|e| format!("-info: encoding RuntimeInfo: {e}"))
}
