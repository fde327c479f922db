//! Configuration types of the API: the machine and its boot source.

use std::path::PathBuf;

/// Most vCPUs a VM may have.
pub const MAX_VCPUS: u8 = 64;

/// Where the guest console (UART and SBI console) goes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum ConsoleConfig {
    /// This process's stdout.
    #[default]
    Stdout,
    /// Appended to a file.
    File(PathBuf),
    /// A unix socket the VMM listens on; one client at a time reads (and writes) the
    /// console. Output is dropped while nobody is connected.
    Socket(PathBuf),
    /// Discarded.
    None,
}

impl std::str::FromStr for ConsoleConfig {
    type Err = String;

    /// `stdout`, `none`, `file:PATH` or `socket:PATH`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "stdout" => Ok(ConsoleConfig::Stdout),
            "none" => Ok(ConsoleConfig::None),
            _ => match s.split_once(':') {
                Some(("file", p)) if !p.is_empty() => Ok(ConsoleConfig::File(p.into())),
                Some(("socket", p)) if !p.is_empty() => Ok(ConsoleConfig::Socket(p.into())),
                _ => Err(format!(
                    "console '{s}': expected stdout, none, file:PATH or socket:PATH"
                )),
            },
        }
    }
}

/// The machine: vCPUs, memory, console.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmConfigInfo {
    /// Boot vCPUs.
    pub vcpu_count: u8,
    /// Guest RAM in MiB.
    pub mem_size_mib: usize,
    /// Console destination.
    pub console: ConsoleConfig,
    /// Confine the vCPU threads and the event loop with their seccomp allow-lists
    /// ([`crate::seccomp`]); on by default.
    pub seccomp: bool,
    /// Back guest RAM with transparent huge pages where the host has them (see
    /// [`dbs_address_space::RamBacking`]): fewer host and stage-2 page faults, RAM
    /// committed in 2 MiB steps; off by default.
    pub transparent_huge_pages: bool,
}

impl Default for VmConfigInfo {
    fn default() -> Self {
        VmConfigInfo {
            vcpu_count: 1,
            mem_size_mib: 128,
            console: ConsoleConfig::Stdout,
            seccomp: true,
            transparent_huge_pages: false,
        }
    }
}

/// The guest kernel, initrd and command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootSourceConfig {
    /// Kernel: riscv64 `Image`; x86_64 `vmlinux` (ELF/PVH).
    pub kernel_path: PathBuf,
    /// Optional initrd (cpio, optionally compressed).
    pub initrd_path: Option<PathBuf>,
    /// Kernel command line; the arch default when `None`.
    pub boot_args: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn console_parses() {
        assert_eq!("stdout".parse::<ConsoleConfig>(), Ok(ConsoleConfig::Stdout));
        assert_eq!(
            "file:/tmp/c".parse::<ConsoleConfig>(),
            Ok(ConsoleConfig::File("/tmp/c".into()))
        );
        assert!(
            "file:"
                .parse::<ConsoleConfig>()
                .unwrap_err()
                .contains("file:")
        );
        assert!("tty".parse::<ConsoleConfig>().is_err());
    }
}

/// A virtio-vsock device with the hybrid-vsock unix socket backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VsockDeviceConfigInfo {
    /// Guest context id (>= 3).
    pub guest_cid: u32,
    /// Unix socket the VMM listens on; guest connections to host port P go to
    /// `<uds_path>_P`.
    pub uds_path: PathBuf,
}

/// A virtio-blk device backed by a raw image file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockDeviceConfigInfo {
    /// Unique id of the drive; also its virtio-blk serial (at most 20 bytes).
    pub drive_id: String,
    /// The raw image.
    pub path_on_host: PathBuf,
    /// Refuse guest writes.
    pub is_read_only: bool,
}

/// A virtio-net device on a host tap interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkInterfaceConfig {
    /// Unique id of the interface.
    pub iface_id: String,
    /// Host tap device name (created in the VMM's network namespace if missing).
    pub host_dev_name: String,
    /// Guest MAC "aa:bb:cc:dd:ee:ff"; a locally administered one is derived when absent.
    pub guest_mac: Option<String>,
}

/// A virtio-fs device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FsDeviceConfigInfo {
    /// Mount tag (Kata uses `kataShared`).
    pub tag: String,
    /// Who serves it.
    pub backend: FsBackend,
}

/// The two virtio-fs backends, as Kata's `shared_fs` names them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FsBackend {
    /// `inline-virtio-fs`: the FUSE server runs inside the VMM on `shared_dir`.
    Inline {
        /// Host directory shared with the guest.
        shared_dir: PathBuf,
    },
    /// `virtio-fs`: an external virtiofsd serving vhost-user on `socket`.
    VhostUser {
        /// virtiofsd's socket.
        socket: PathBuf,
    },
}
