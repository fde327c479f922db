//! The runtime configuration: `configuration-dragonball.toml` with Kata's section and key
//! names, found on Kata's runtime-rs search path. Unknown keys and bad values are errors
//! that name the key and the file. [`annotations`] holds the sandbox annotations that
//! override it.

use std::path::{Path, PathBuf};

use serde::Deserialize;

pub mod annotations;
pub mod virtiofsd_args;

pub use annotations::AnnotationError;

/// Where the configuration is looked for, in order, when nothing names it.
pub const SEARCH_PATHS: [&str; 3] = [
    "/etc/kata-containers/runtime-rs/configuration.toml",
    "/usr/share/defaults/kata-containers/runtime-rs/configuration.toml",
    "/opt/kata/share/defaults/kata-containers/runtime-rs/configuration.toml",
];

/// The most vCPUs a sandbox may have: Dragonball's limit (`dragonball::config::MAX_VCPUS`,
/// checked by a shim test).
pub const MAX_VCPUS: u8 = 64;

/// The environment variable naming a configuration file.
pub const CONF_ENV: &str = "KATA_CONF_FILE";

/// A configuration that could not be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    /// No file was named and none exists on the search path.
    #[error("no configuration file: set {CONF_ENV}, pass config_path in the runtime options, or install one at {}", SEARCH_PATHS.join(", "))]
    NotFound,
    /// The file could not be read.
    #[error("configuration file {file}: {reason}")]
    Read {
        /// The file.
        file: PathBuf,
        /// Why.
        reason: String,
    },
    /// A key is unknown or has a bad value.
    #[error("configuration file {file}: key {key}: {reason}")]
    Key {
        /// The file.
        file: PathBuf,
        /// The dotted key, e.g. `hypervisor.dragonball.default_memory`.
        key: String,
        /// Why.
        reason: String,
    },
}

/// How the container root filesystems reach the guest (Kata's `shared_fs`).
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub enum SharedFs {
    /// FUSE server inside the VMM.
    #[serde(rename = "inline-virtio-fs")]
    Inline,
    /// An external virtiofsd over vhost-user.
    #[serde(rename = "virtio-fs")]
    VirtioFs,
}

/// `[hypervisor.dragonball]`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Dragonball {
    /// Must be empty: Dragonball runs inside the shim.
    #[serde(default)]
    pub path: String,
    /// Must be empty.
    #[serde(default)]
    pub ctlpath: String,
    /// Guest kernel (riscv64 `Image`, x86_64 `vmlinux`).
    pub kernel: PathBuf,
    /// Guest initrd with the agent as /init.
    #[serde(default)]
    pub initrd: Option<PathBuf>,
    /// A rootfs image (not supported: use `initrd`).
    #[serde(default)]
    pub image: Option<PathBuf>,
    /// Extra guest kernel parameters.
    #[serde(default)]
    pub kernel_params: String,
    /// vCPUs at boot.
    #[serde(default = "default_vcpus")]
    pub default_vcpus: f32,
    /// Upper vCPU bound (0: no hotplug; kept for Kata compatibility).
    #[serde(default)]
    pub default_maxvcpus: u32,
    /// Guest memory in MiB.
    #[serde(default = "default_memory")]
    pub default_memory: u32,
    /// `inline-virtio-fs` or `virtio-fs`.
    #[serde(default = "default_shared_fs")]
    pub shared_fs: SharedFs,
    /// virtiofsd binary (for `shared_fs = "virtio-fs"`).
    #[serde(default)]
    pub virtio_fs_daemon: PathBuf,
    /// Extra virtiofsd arguments (checked by [`virtiofsd_args::check`]).
    #[serde(default)]
    pub virtio_fs_extra_args: Vec<String>,
    /// Allows `virtio_fs_extra_args` that weaken virtiofsd's own confinement
    /// (`--sandbox none`, `--seccomp none`/`log`, added capabilities); default false.
    #[serde(default)]
    pub virtio_fs_allow_unconfined: bool,
    /// virtiofsd cache mode: never, auto, always.
    #[serde(default = "default_cache")]
    pub virtio_fs_cache: String,
    /// Debug logging for the VMM.
    #[serde(default)]
    pub enable_debug: bool,
    /// Accepted for Kata compatibility; see `[runtime] log_level`.
    #[serde(default)]
    pub log_level: Option<String>,
    /// Regular expressions naming the `io.katacontainers.config.hypervisor.<key>`
    /// annotations a sandbox may set, matched against `<key>` (Kata's semantics, see
    /// [`annotations`]); empty: none. kata-rv applies `default_vcpus` and
    /// `default_memory`.
    #[serde(default)]
    pub enable_annotations: Vec<String>,
    /// Run the VMM's vCPU and event-loop threads without their seccomp allow-lists
    /// (Kata's key; default false: confined).
    #[serde(default)]
    pub disable_seccomp: bool,
    /// Back guest RAM with transparent huge pages where the host has them (Kata's key,
    /// as Dragonball's `hugeanon`/`hugeshmem` memory: madvise, not hugetlbfs): fewer page
    /// faults on the start path, guest RAM committed in 2 MiB steps; default false.
    #[serde(default)]
    pub enable_hugepages: bool,
}

fn default_vcpus() -> f32 {
    1.0
}
fn default_memory() -> u32 {
    256
}
fn default_shared_fs() -> SharedFs {
    SharedFs::Inline
}
fn default_cache() -> String {
    "auto".into()
}
fn default_level() -> String {
    "info".into()
}
fn default_true() -> bool {
    true
}
fn default_dial_ms() -> u64 {
    10
}
fn default_reconnect_ms() -> u64 {
    30_000
}
fn default_create_timeout() -> u64 {
    30
}

/// `[hypervisor]`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Hypervisors {
    /// The only hypervisor this runtime has.
    pub dragonball: Dragonball,
}

/// `[agent.kata]`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct KataAgent {
    /// `agent.log=debug` on the guest command line.
    #[serde(default)]
    pub enable_debug: bool,
    /// The agent's log level when not debugging.
    #[serde(default = "default_level")]
    pub log_level: String,
    /// Pause between connection attempts.
    #[serde(default = "default_dial_ms")]
    pub dial_timeout_ms: u64,
    /// How long to wait for the agent after boot.
    #[serde(default = "default_reconnect_ms")]
    pub reconnect_timeout_ms: u64,
    /// Seconds allowed for ordinary agent calls.
    #[serde(default = "default_create_timeout")]
    pub create_container_timeout: u64,
    /// Not provided by this agent; must stay false.
    #[serde(default)]
    pub debug_console_enabled: bool,
    /// Accepted for Kata compatibility.
    #[serde(default)]
    pub container_pipe_size: u32,
    /// Kernel modules to load (this guest kernel has none; must be empty).
    #[serde(default)]
    pub kernel_modules: Vec<String>,
}

/// `[agent]`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Agents {
    /// The only agent this runtime speaks to.
    pub kata: KataAgent,
}

/// Kata's `internetworking_model`.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
pub enum InternetworkingModel {
    /// The VMM's tap is joined to the pod's CNI interface by tc mirred redirects.
    #[default]
    #[serde(rename = "tcfilter")]
    TcFilter,
    /// The VM gets no network interface.
    #[serde(rename = "none")]
    None,
}

/// `[runtime]`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Runtime {
    /// Debug logging in the shim.
    #[serde(default)]
    pub enable_debug: bool,
    /// Shim log level: trace, debug, info, warn, error, critical.
    #[serde(default = "default_level")]
    pub log_level: String,
    /// Accepted for Kata compatibility.
    #[serde(default)]
    pub name: Option<String>,
    /// Must be `dragonball` when set.
    #[serde(default)]
    pub hypervisor_name: Option<String>,
    /// Must be `kata` when set.
    #[serde(default)]
    pub agent_name: Option<String>,
    /// How the pod's network reaches the VM: `tcfilter` (the default) or `none`.
    #[serde(default)]
    pub internetworking_model: InternetworkingModel,
    /// Accepted for Kata compatibility.
    #[serde(default)]
    pub disable_new_netns: bool,
    /// Run the whole sandbox (shim, VMM, virtiofsd) in the host cgroup the sandbox spec's
    /// `linux.cgroupsPath` names, limited to the VM's size plus an overhead (default
    /// true, as in Kata); false leaves the shim in containerd's cgroup.
    #[serde(default = "default_true")]
    pub sandbox_cgroup_only: bool,
    /// Accepted for Kata compatibility: kata-rv always sizes the VM statically at boot
    /// (it has no CPU or memory hotplug), as Kata does when this is true.
    #[serde(default)]
    pub static_sandbox_resource_mgmt: bool,
    /// Run containers whose spec has a `linux.seccomp` profile without it (each such
    /// container is logged). Default false: the guest agent installs the profile (Kata
    /// defaults to true, running them unconfined).
    #[serde(default)]
    pub disable_guest_seccomp: bool,
    /// Keep a failed sandbox's files for debugging.
    #[serde(default)]
    pub keep_abnormal: bool,
    /// Must be empty.
    #[serde(default)]
    pub experimental: Vec<String>,
}

/// The whole configuration file.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `[hypervisor.*]`.
    pub hypervisor: Hypervisors,
    /// `[agent.*]`.
    pub agent: Agents,
    /// `[runtime]`.
    pub runtime: Runtime,
    /// The file it came from.
    #[serde(skip)]
    pub file: PathBuf,
}

const LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "critical"];

impl Config {
    /// Parses and validates `text` as the contents of `file`.
    pub fn parse(text: &str, file: &Path) -> Result<Self, ConfigError> {
        let mut config: Config = toml::from_str(text).map_err(|e| key_error(file, &e))?;
        config.file = file.to_path_buf();
        config.validate()?;
        Ok(config)
    }

    /// Reads and validates `file`.
    pub fn load(file: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(file).map_err(|e| ConfigError::Read {
            file: file.to_path_buf(),
            reason: e.to_string(),
        })?;
        Self::parse(&text, file)
    }

    /// Finds the configuration: `KATA_CONF_FILE`, then the runtime option `config_path`,
    /// then the search path.
    pub fn find(env: Option<&str>, config_path: Option<&str>) -> Result<PathBuf, ConfigError> {
        if let Some(path) = env
            .filter(|p| !p.is_empty())
            .or(config_path.filter(|p| !p.is_empty()))
        {
            return Ok(PathBuf::from(path));
        }
        SEARCH_PATHS
            .iter()
            .map(PathBuf::from)
            .find(|p| p.exists())
            .ok_or(ConfigError::NotFound)
    }

    fn bad(&self, key: &str, reason: impl Into<String>) -> ConfigError {
        ConfigError::Key {
            file: self.file.clone(),
            key: key.into(),
            reason: reason.into(),
        }
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let db = &self.hypervisor.dragonball;
        let prefix = "hypervisor.dragonball";
        if !db.path.is_empty() {
            return Err(self.bad(
                &format!("{prefix}.path"),
                "must be empty: Dragonball runs inside the shim",
            ));
        }
        if !db.ctlpath.is_empty() {
            return Err(self.bad(&format!("{prefix}.ctlpath"), "must be empty"));
        }
        if db.image.is_some() {
            return Err(self.bad(
                &format!("{prefix}.image"),
                "rootfs images are not supported: use initrd",
            ));
        }
        if db.initrd.is_none() {
            return Err(self.bad(
                &format!("{prefix}.initrd"),
                "is required (the guest initrd with kata-agent as /init)",
            ));
        }
        if !(db.default_vcpus >= 1.0 && db.default_vcpus <= f32::from(MAX_VCPUS)) {
            return Err(self.bad(
                &format!("{prefix}.default_vcpus"),
                format!(
                    "{} is not in 1..={MAX_VCPUS} (Dragonball's vCPU limit)",
                    db.default_vcpus
                ),
            ));
        }
        if db.default_memory < annotations::MIN_MEMORY_MIB {
            return Err(self.bad(
                &format!("{prefix}.default_memory"),
                format!(
                    "{} MiB is below the minimum of {}",
                    db.default_memory,
                    annotations::MIN_MEMORY_MIB
                ),
            ));
        }
        if let Err(reason) = annotations::compile(&db.enable_annotations) {
            return Err(self.bad(&format!("{prefix}.enable_annotations"), reason));
        }
        if db.shared_fs == SharedFs::VirtioFs && db.virtio_fs_daemon.as_os_str().is_empty() {
            return Err(self.bad(
                &format!("{prefix}.virtio_fs_daemon"),
                "is required when shared_fs = \"virtio-fs\"",
            ));
        }
        if let Err(refusal) =
            virtiofsd_args::check(&db.virtio_fs_extra_args, db.virtio_fs_allow_unconfined)
        {
            return Err(self.bad(
                &format!("{prefix}.virtio_fs_extra_args"),
                refusal.to_string(),
            ));
        }
        if !["never", "auto", "always"].contains(&db.virtio_fs_cache.as_str()) {
            return Err(self.bad(
                &format!("{prefix}.virtio_fs_cache"),
                format!("'{}' is not never, auto or always", db.virtio_fs_cache),
            ));
        }
        if self.agent.kata.debug_console_enabled {
            return Err(self.bad(
                "agent.kata.debug_console_enabled",
                "this agent has no debug console",
            ));
        }
        if !self.agent.kata.kernel_modules.is_empty() {
            return Err(self.bad(
                "agent.kata.kernel_modules",
                "the guest kernel has no module support",
            ));
        }
        if !LEVELS.contains(&self.agent.kata.log_level.as_str()) {
            return Err(self.bad(
                "agent.kata.log_level",
                format!(
                    "'{}' is not one of {}",
                    self.agent.kata.log_level,
                    LEVELS.join(", ")
                ),
            ));
        }
        if !LEVELS.contains(&self.runtime.log_level.as_str()) {
            return Err(self.bad(
                "runtime.log_level",
                format!(
                    "'{}' is not one of {}",
                    self.runtime.log_level,
                    LEVELS.join(", ")
                ),
            ));
        }
        if let Some(name) = self
            .runtime
            .hypervisor_name
            .as_deref()
            .filter(|n| *n != "dragonball")
        {
            return Err(self.bad(
                "runtime.hypervisor_name",
                format!("'{name}': only dragonball is available"),
            ));
        }
        if let Some(name) = self.runtime.agent_name.as_deref().filter(|n| *n != "kata") {
            return Err(self.bad(
                "runtime.agent_name",
                format!("'{name}': only kata is available"),
            ));
        }
        if !self.runtime.experimental.is_empty() {
            return Err(self.bad("runtime.experimental", "no experimental features exist"));
        }
        Ok(())
    }

    /// The vCPU count (Kata's float, rounded up; at least one).
    pub fn vcpus(&self) -> u8 {
        self.hypervisor.dragonball.default_vcpus.ceil().max(1.0) as u8
    }

    /// The agent's kernel parameters derived from the configuration.
    pub fn agent_kernel_params(&self) -> String {
        let agent = &self.agent.kata;
        let level = if agent.enable_debug {
            "debug"
        } else {
            agent.log_level.as_str()
        };
        // 1025: the agent's log stream; 1026: the host port it dials once it serves.
        format!("agent.log={level} agent.log_vport=1025 agent.ready_vport=1026")
    }

    /// Whether the shim logs at debug level.
    pub fn debug(&self) -> bool {
        self.runtime.enable_debug
            || self.runtime.log_level == "debug"
            || self.runtime.log_level == "trace"
    }
}

/// Turns a TOML/serde error into one naming the key and the file.
fn key_error(file: &Path, error: &toml::de::Error) -> ConfigError {
    let message = error.message().to_string();
    let key = message
        .split('`')
        .nth(1)
        .filter(|_| message.starts_with("unknown field"))
        .map(str::to_string)
        .unwrap_or_else(|| "?".into());
    let position = error
        .span()
        .map(|span| format!(" (at byte {})", span.start))
        .unwrap_or_default();
    ConfigError::Key {
        file: file.to_path_buf(),
        key,
        reason: format!("{message}{position}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[hypervisor.dragonball]
kernel = "/usr/share/kata-containers/vmlinux"
initrd = "/usr/share/kata-containers/kata-containers-initrd.img"
kernel_params = "quiet"
default_vcpus = 1
default_memory = 256
shared_fs = "inline-virtio-fs"

[agent.kata]
dial_timeout_ms = 10

[runtime]
log_level = "info"
"#;

    #[test]
    fn the_shipped_shape_parses() {
        let config = Config::parse(GOOD, Path::new("/c.toml")).unwrap();
        assert_eq!(config.vcpus(), 1);
        assert_eq!(config.hypervisor.dragonball.shared_fs, SharedFs::Inline);
        assert_eq!(
            config.agent_kernel_params(),
            "agent.log=info agent.log_vport=1025 agent.ready_vport=1026"
        );
        assert_eq!(config.agent.kata.reconnect_timeout_ms, 30_000);
    }

    #[test]
    fn unknown_keys_name_the_key_and_the_file() {
        let text = GOOD.replace("kernel_params", "kernel_parms");
        let err = Config::parse(&text, Path::new("/etc/k.toml")).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("/etc/k.toml") && text.contains("kernel_parms"),
            "{text}"
        );
    }

    #[test]
    fn bad_values_name_the_key() {
        for (from, to, key) in [
            (
                "default_memory = 256",
                "default_memory = 8",
                "hypervisor.dragonball.default_memory",
            ),
            (
                "default_vcpus = 1",
                "default_vcpus = 0",
                "hypervisor.dragonball.default_vcpus",
            ),
            (
                "default_vcpus = 1",
                "default_vcpus = 65",
                "hypervisor.dragonball.default_vcpus",
            ),
            (
                "shared_fs = \"inline-virtio-fs\"",
                "shared_fs = \"virtio-fs\"",
                "hypervisor.dragonball.virtio_fs_daemon",
            ),
            (
                "log_level = \"info\"",
                "log_level = \"loud\"",
                "runtime.log_level",
            ),
        ] {
            let err = Config::parse(&GOOD.replace(from, to), Path::new("/c.toml")).unwrap_err();
            match &err {
                ConfigError::Key { key: k, .. } => assert_eq!(k, key, "{err}"),
                other => panic!("{other}"),
            }
        }
        let err = Config::parse(
            &GOOD.replace("shared_fs = \"inline-virtio-fs\"", "shared_fs = \"9p\""),
            Path::new("/c.toml"),
        )
        .unwrap_err();
        assert!(err.to_string().contains("9p"), "{err}");
    }

    #[test]
    fn virtiofsd_confinement_is_weakened_only_with_the_key() {
        let weak = GOOD.replace(
            "shared_fs = \"inline-virtio-fs\"",
            "virtio_fs_extra_args = [\"--seccomp=none\"]",
        );
        let err = Config::parse(&weak, Path::new("/c.toml")).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("hypervisor.dragonball.virtio_fs_extra_args")
                && text.contains("--seccomp=none")
                && text.contains("virtio_fs_allow_unconfined"),
            "{text}"
        );
        let allowed = weak.replace(
            "virtio_fs_extra_args",
            "virtio_fs_allow_unconfined = true\nvirtio_fs_extra_args",
        );
        Config::parse(&allowed, Path::new("/c.toml")).unwrap();
    }

    #[test]
    fn the_shipped_files_parse_and_enable_no_annotation() {
        for text in [
            include_str!("../../../../configuration/configuration-dragonball-x86_64.toml"),
            include_str!("../../../../configuration/configuration-dragonball-riscv64.toml"),
        ] {
            let config = Config::parse(text, Path::new("/shipped.toml")).unwrap();
            assert!(config.hypervisor.dragonball.enable_annotations.is_empty());
            assert!(!config.annotation_enabled(annotations::DEFAULT_VCPUS));
        }
    }

    #[test]
    fn enable_annotations_is_a_list_of_regular_expressions() {
        let parse = |list: &str| {
            Config::parse(
                &GOOD.replace(
                    "shared_fs = \"inline-virtio-fs\"",
                    &format!("shared_fs = \"inline-virtio-fs\"\nenable_annotations = {list}"),
                ),
                Path::new("/c.toml"),
            )
        };
        assert!(
            Config::parse(GOOD, Path::new("/c.toml"))
                .unwrap()
                .hypervisor
                .dragonball
                .enable_annotations
                .is_empty(),
            "none by default"
        );
        let config = parse(r#"["default_vcpus", "default_memory"]"#).unwrap();
        assert_eq!(
            config.hypervisor.dragonball.enable_annotations,
            ["default_vcpus", "default_memory"]
        );
        assert!(parse(r#"[".*"]"#).is_ok());
        let err = parse(r#"["default_(vcpus"]"#).unwrap_err();
        match &err {
            ConfigError::Key { key, reason, .. } => {
                assert_eq!(key, "hypervisor.dragonball.enable_annotations");
                assert!(reason.contains("default_(vcpus"), "{err}");
            }
            other => panic!("{other}"),
        }
        let err = parse(r#""default_vcpus""#).unwrap_err();
        assert!(err.to_string().contains("expected a sequence"), "{err}");
    }

    #[test]
    fn the_search_order_is_env_then_option() {
        assert_eq!(
            Config::find(Some("/a.toml"), Some("/b.toml")).unwrap(),
            PathBuf::from("/a.toml")
        );
        assert_eq!(
            Config::find(None, Some("/b.toml")).unwrap(),
            PathBuf::from("/b.toml")
        );
        assert_eq!(
            Config::find(Some(""), Some("/b.toml")).unwrap(),
            PathBuf::from("/b.toml")
        );
    }
}
