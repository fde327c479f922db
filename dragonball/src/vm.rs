//! A VM: its configuration, and once started, its memory, devices and vCPUs.

use std::path::PathBuf;
use std::sync::Arc;

use kvm_ioctls::{Kvm, VmFd};

use crate::api::{InstanceState, VmmActionError};
use crate::arch;
use crate::config::{
    BlockDeviceConfigInfo, BootSourceConfig, FsBackend, FsDeviceConfigInfo, MAX_VCPUS,
    NetworkInterfaceConfig, VmConfigInfo, VsockDeviceConfigInfo,
};
use crate::console::Console;
use crate::device_manager::{DeviceManager, Subscriber};
use crate::vcpu::{ExitInfo, VcpuManager, VcpuSpec, VmExit};
use dbs_address_space::GuestMemory;
use dbs_virtio_devices::VirtioDevice;

/// The underlying failure of one start step.
pub type Cause = Box<dyn std::error::Error + Send + Sync>;

/// Why StartMicroVm failed.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A KVM call (or a vCPU/VM setup step built on KVM calls) failed.
    #[error("KVM, {step}: {source}")]
    Kvm {
        /// The step, e.g. `KVM_CREATE_IRQCHIP`.
        step: String,
        /// Why.
        #[source]
        source: Cause,
    },
    /// The kernel cannot be used.
    #[error("kernel '{}': {reason}", path.display())]
    Kernel {
        /// Kernel path.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The initrd cannot be used.
    #[error("initrd '{}': {reason}", path.display())]
    Initrd {
        /// initrd path.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// Guest memory is too small for what must be loaded.
    #[error("memory too small: {0}")]
    MemoryTooSmall(String),
    /// Guest memory could not be set up.
    #[error(transparent)]
    Memory(#[from] dbs_address_space::MemoryError),
    /// The interrupt controller could not be set up.
    #[error("interrupt controller: {source}")]
    Irqchip {
        /// Why.
        #[source]
        source: Cause,
    },
    /// A device could not be set up.
    #[error("device {device}: {source}")]
    Device {
        /// The device's name.
        device: String,
        /// Why.
        #[source]
        source: Cause,
    },
    /// More virtio devices than the machine has MMIO slots.
    #[error("no free virtio-mmio slot for device {device}")]
    NoMmioSlot {
        /// The device that did not fit.
        device: String,
    },
    /// Boot data (device tree, zero page, tables, command line) could not be built or
    /// written to guest memory.
    #[error("boot data, {what}: {source}")]
    BootData {
        /// Which piece.
        what: String,
        /// Why.
        #[source]
        source: Cause,
    },
    /// A thread's seccomp filter could not be installed.
    #[error(transparent)]
    Seccomp(#[from] crate::seccomp::SeccompError),
    /// The console sink could not be opened.
    #[error("console: {0}")]
    Console(#[source] std::io::Error),
    /// This host or build cannot run the requested machine.
    #[error("{0}")]
    Unsupported(String),
}

impl StartError {
    /// A failed KVM step.
    pub fn kvm(step: impl Into<String>, source: impl Into<Cause>) -> Self {
        Self::Kvm {
            step: step.into(),
            source: source.into(),
        }
    }

    /// A device that could not be set up.
    pub fn device(device: impl Into<String>, source: impl Into<Cause>) -> Self {
        Self::Device {
            device: device.into(),
            source: source.into(),
        }
    }

    /// Boot data that could not be built or written.
    pub fn boot_data(what: impl Into<String>, source: impl Into<Cause>) -> Self {
        Self::BootData {
            what: what.into(),
            source: source.into(),
        }
    }
}

/// Ends the VM when the virtio-fs backend at `socket` goes away.
fn backend_gone(
    exit: Arc<VmExit>,
    socket: &std::path::Path,
) -> dbs_virtio_devices::fs::BackendGone {
    let socket = socket.display().to_string();
    Box::new(move || {
        exit.report(ExitInfo {
            code: 1,
            reason: format!("the virtio-fs backend (virtiofsd on '{socket}') exited"),
        })
    })
}

/// Copies the initrd at `path` to the top of RAM (page aligned, below `ram_end`), above
/// `kernel_end`; returns its guest address and size.
pub fn load_initrd(
    memory: &GuestMemory,
    path: &std::path::Path,
    ram_end: u64,
    kernel_end: u64,
) -> Result<(u64, u64), StartError> {
    use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend as _};
    let err = |reason: String| StartError::Initrd {
        path: path.to_path_buf(),
        reason,
    };
    let data = std::fs::read(path).map_err(|e| err(e.to_string()))?;
    let size = data.len() as u64;
    let start = ram_end.checked_sub(size).map(|s| s & !0xfff).unwrap_or(0);
    if start < kernel_end {
        return Err(StartError::MemoryTooSmall(format!(
            "the kernel ends at {} MiB and the initrd ({} KiB) does not fit below the end of RAM at {} MiB",
            kernel_end >> 20,
            size >> 10,
            ram_end >> 20
        )));
    }
    // Written in full: huge pages commit nothing more (see advise_huge_pages).
    if let Ok(slice) = memory.get_slice(GuestAddress(start), data.len()) {
        dbs_address_space::advise_huge_pages(&slice);
    }
    memory
        .write_slice(&data, GuestAddress(start))
        .map_err(|e| err(format!("copying into guest memory: {e}")))?;
    Ok((start, size))
}

/// What an arch's `create_machine` gets.
pub struct MachineInputs<'a> {
    /// The KVM system fd.
    pub kvm: &'a Kvm,
    /// The VM fd.
    pub vm_fd: &'a Arc<VmFd>,
    /// Machine configuration.
    pub config: &'a VmConfigInfo,
    /// Boot source.
    pub boot: &'a BootSourceConfig,
    /// Guest RAM, registered with KVM.
    pub memory: &'a GuestMemory,
    /// The console sink.
    pub console: Console,
    /// The (empty) bus the machine fills.
    pub devices: DeviceManager,
    /// Virtio devices to place on virtio-mmio slots, in order.
    pub virtio_devices: Vec<(&'static str, Box<dyn VirtioDevice>)>,
    /// Where devices that end the VM (a reset line) report it.
    pub exit: Arc<VmExit>,
    /// The start-path trace the arch code adds its build phases to.
    pub trace: &'a StartTrace,
}

/// The start-path trace of one machine build: a debug record `vmm trace: PHASE at MS ms`
/// per phase, timed from the start of the build (`make bench BENCH=trace` reads them).
pub struct StartTrace {
    started: std::time::Instant,
}

impl StartTrace {
    /// Starts the clock.
    pub fn new() -> Self {
        StartTrace {
            started: std::time::Instant::now(),
        }
    }

    /// Records that `name` is done.
    pub fn phase(&self, name: &str) {
        log::debug!(
            "vmm trace: {name} at {:.1} ms",
            self.started.elapsed().as_secs_f64() * 1000.0
        )
    }
}

impl Default for StartTrace {
    fn default() -> Self {
        Self::new()
    }
}

/// What an arch's `create_machine` builds.
pub struct Machine {
    /// vCPUs ready to run.
    pub vcpus: Vec<VcpuSpec>,
    /// Devices on the MMIO bus.
    pub devices: DeviceManager,
    /// Arch state to keep alive.
    pub arch: arch::ArchVm,
}

/// A running VM. Field order is drop order: vCPU threads stop before the rest goes.
struct Running {
    vcpus: VcpuManager,
    _arch: arch::ArchVm,
    _memory: GuestMemory,
    _vm_fd: Arc<VmFd>,
    _kvm: Kvm,
}

/// The VM as the API sees it.
pub struct Vm {
    config: VmConfigInfo,
    boot: Option<BootSourceConfig>,
    vsock: Option<VsockDeviceConfigInfo>,
    blocks: Vec<BlockDeviceConfigInfo>,
    nets: Vec<(NetworkInterfaceConfig, [u8; 6])>,
    fs: Vec<FsDeviceConfigInfo>,
    state: InstanceState,
    running: Option<Running>,
}

impl Default for Vm {
    fn default() -> Self {
        Vm {
            config: VmConfigInfo::default(),
            boot: None,
            vsock: None,
            blocks: Vec::new(),
            nets: Vec::new(),
            fs: Vec::new(),
            state: InstanceState::Uninitialized,
            running: None,
        }
    }
}

impl Vm {
    /// Current state.
    pub fn state(&self) -> InstanceState {
        self.state
    }

    /// Current machine configuration.
    pub fn config(&self) -> &VmConfigInfo {
        &self.config
    }

    fn before_start(&self, action: &'static str) -> Result<(), VmmActionError> {
        if self.state == InstanceState::Uninitialized {
            Ok(())
        } else {
            Err(VmmActionError::NotAllowedAfterStart(action))
        }
    }

    /// Validates and stores the machine configuration.
    pub fn set_config(&mut self, config: VmConfigInfo) -> Result<(), VmmActionError> {
        self.before_start("SetVmConfiguration")?;
        if config.vcpu_count == 0 || config.vcpu_count > MAX_VCPUS {
            return Err(VmmActionError::InvalidVmConfig(format!(
                "vcpu_count {} is outside 1..={MAX_VCPUS}",
                config.vcpu_count
            )));
        }
        if config.mem_size_mib < arch::MIN_MEM_MIB {
            return Err(VmmActionError::InvalidVmConfig(format!(
                "mem_size_mib {} is below the minimum of {} MiB",
                config.mem_size_mib,
                arch::MIN_MEM_MIB
            )));
        }
        self.config = config;
        Ok(())
    }

    /// Validates and stores the boot source.
    pub fn set_boot_source(&mut self, boot: BootSourceConfig) -> Result<(), VmmActionError> {
        self.before_start("ConfigureBootSource")?;
        let check = |what: &str, p: &PathBuf| match std::fs::metadata(p) {
            Ok(m) if m.is_file() => Ok(()),
            Ok(_) => Err(VmmActionError::InvalidBootSource(format!(
                "{what} '{}' is not a regular file",
                p.display()
            ))),
            Err(e) => Err(VmmActionError::InvalidBootSource(format!(
                "{what} '{}': {e}",
                p.display()
            ))),
        };
        check("kernel", &boot.kernel_path)?;
        if let Some(initrd) = &boot.initrd_path {
            check("initrd", initrd)?;
        }
        if let Some(args) = &boot.boot_args
            && args.contains('\0')
        {
            return Err(VmmActionError::InvalidBootSource(
                "boot_args contains a NUL byte".into(),
            ));
        }
        self.boot = Some(boot);
        Ok(())
    }

    /// Adds the vsock device.
    pub fn insert_vsock(&mut self, vsock: VsockDeviceConfigInfo) -> Result<(), VmmActionError> {
        self.before_start("InsertVsockDevice")?;
        if self.vsock.is_some() {
            return Err(VmmActionError::InvalidDevice(
                "a vsock device is already configured (one per VM)".into(),
            ));
        }
        if vsock.guest_cid < 3 {
            return Err(VmmActionError::InvalidDevice(format!(
                "vsock guest_cid {} is reserved: use 3 or higher",
                vsock.guest_cid
            )));
        }
        match vsock.uds_path.parent() {
            Some(dir) if dir.as_os_str().is_empty() || dir.is_dir() => {}
            _ => {
                return Err(VmmActionError::InvalidDevice(format!(
                    "vsock uds_path '{}': its directory does not exist",
                    vsock.uds_path.display()
                )));
            }
        }
        self.vsock = Some(vsock);
        Ok(())
    }

    /// Adds a block device.
    pub fn insert_block(&mut self, block: BlockDeviceConfigInfo) -> Result<(), VmmActionError> {
        self.before_start("InsertBlockDevice")?;
        let bad = |m: String| Err(VmmActionError::InvalidDevice(m));
        if block.drive_id.is_empty() || block.drive_id.len() > 20 {
            return bad(format!(
                "drive_id '{}' must be 1 to 20 bytes",
                block.drive_id
            ));
        }
        if self.blocks.iter().any(|b| b.drive_id == block.drive_id) {
            return bad(format!("drive_id '{}' is already used", block.drive_id));
        }
        match std::fs::metadata(&block.path_on_host) {
            Ok(m) if m.is_file() => {}
            Ok(_) => {
                return bad(format!(
                    "block image '{}' is not a regular file",
                    block.path_on_host.display()
                ));
            }
            Err(e) => {
                return bad(format!(
                    "block image '{}': {e}",
                    block.path_on_host.display()
                ));
            }
        }
        self.blocks.push(block);
        Ok(())
    }

    /// Adds a network interface.
    pub fn insert_net(&mut self, net: NetworkInterfaceConfig) -> Result<(), VmmActionError> {
        self.before_start("InsertNetworkDevice")?;
        let bad = |m: String| Err(VmmActionError::InvalidDevice(m));
        if net.iface_id.is_empty() || self.nets.iter().any(|(n, _)| n.iface_id == net.iface_id) {
            return bad(format!(
                "iface_id '{}' is empty or already used",
                net.iface_id
            ));
        }
        if net.host_dev_name.is_empty() || net.host_dev_name.len() > 15 {
            return bad(format!(
                "host_dev_name '{}' must be 1 to 15 bytes",
                net.host_dev_name
            ));
        }
        let mac = match &net.guest_mac {
            Some(m) => match dbs_virtio_devices::net::parse_mac(m) {
                Some(mac) if mac[0] & 1 == 0 => mac,
                _ => {
                    return bad(format!(
                        "guest_mac '{m}' is not a unicast aa:bb:cc:dd:ee:ff address"
                    ));
                }
            },
            // Locally administered, unicast, distinct per interface.
            None => [0x52, 0x54, 0x00, 0x6b, 0x72, self.nets.len() as u8 + 1],
        };
        self.nets.push((net, mac));
        Ok(())
    }

    /// Adds a virtio-fs device.
    pub fn insert_fs(&mut self, fs: FsDeviceConfigInfo) -> Result<(), VmmActionError> {
        self.before_start("InsertFsDevice")?;
        let bad = |m: String| Err(VmmActionError::InvalidDevice(m));
        if fs.tag.is_empty() || fs.tag.len() > 36 || self.fs.iter().any(|f| f.tag == fs.tag) {
            return bad(format!(
                "virtio-fs tag '{}' must be 1 to 36 bytes and unique",
                fs.tag
            ));
        }
        match &fs.backend {
            FsBackend::Inline { shared_dir } if !shared_dir.is_dir() => {
                return bad(format!(
                    "virtio-fs shared dir '{}' is not a directory",
                    shared_dir.display()
                ));
            }
            FsBackend::VhostUser { socket } if !socket.exists() => {
                return bad(format!(
                    "virtiofsd socket '{}' does not exist (is virtiofsd running?)",
                    socket.display()
                ));
            }
            _ => {}
        }
        self.fs.push(fs);
        Ok(())
    }

    /// Creates and boots the VM; returns the event-loop subscribers its devices need.
    pub fn start(&mut self, exit: Arc<VmExit>) -> Result<Vec<Subscriber>, VmmActionError> {
        self.before_start("StartMicroVm")?;
        let boot = self.boot.clone().ok_or_else(|| {
            VmmActionError::InvalidBootSource(
                "no boot source: send ConfigureBootSource first".into(),
            )
        })?;
        self.state = InstanceState::Starting;
        match self.build_and_run(&boot, exit) {
            Ok((running, subscribers)) => {
                self.running = Some(running);
                self.state = InstanceState::Running;
                Ok(subscribers)
            }
            Err(e) => {
                // Everything built so far was dropped; the VM can be configured again.
                self.state = InstanceState::Uninitialized;
                Err(VmmActionError::StartMicroVm(e))
            }
        }
    }

    fn build_and_run(
        &self,
        boot: &BootSourceConfig,
        exit: Arc<VmExit>,
    ) -> Result<(Running, Vec<Subscriber>), StartError> {
        let trace = StartTrace::new();
        let phase = |name: &str| trace.phase(name);
        let kvm = Kvm::new().map_err(|e| {
            StartError::kvm(
                "opening /dev/kvm (this needs real KVM: run inside the KVM test host, see README)",
                e,
            )
        })?;
        let vm_fd = Arc::new(
            kvm.create_vm()
                .map_err(|e| StartError::kvm("KVM_CREATE_VM", e))?,
        );
        let size = self.config.mem_size_mib as u64 * (1 << 20);
        phase("KVM VM created");
        let backing = dbs_address_space::RamBacking {
            // virtiofsd maps guest RAM too.
            shared: self
                .fs
                .iter()
                .any(|fs| matches!(fs.backend, FsBackend::VhostUser { .. })),
            transparent_huge_pages: self.config.transparent_huge_pages,
        };
        let memory = dbs_address_space::create(&vm_fd, &arch::memory_ranges(size), backing)?;
        phase("guest memory mapped");
        let (console, console_socket) =
            Console::open(&self.config.console).map_err(StartError::Console)?;
        let mut virtio_devices: Vec<(&'static str, Box<dyn VirtioDevice>)> = Vec::new();
        let mut subscribers: Vec<Subscriber> = console_socket.into_iter().collect();
        for block in &self.blocks {
            let config = dbs_virtio_devices::block::BlockConfig {
                path: block.path_on_host.clone(),
                read_only: block.is_read_only,
                serial: block.drive_id.clone(),
            };
            let (device, handler) = dbs_virtio_devices::block::BlockDevice::new(&config)
                .map_err(|e| StartError::device(format!("block {}", block.drive_id), e))?;
            virtio_devices.push(("block", Box::new(device)));
            subscribers.push(handler);
        }
        for fs in &self.fs {
            let dev_err = |e: Cause| StartError::device(format!("virtio-fs {}", fs.tag), e);
            match &fs.backend {
                FsBackend::Inline { shared_dir } => {
                    let config = dbs_virtio_devices::fs::FsConfig {
                        tag: fs.tag.clone(),
                        shared_dir: shared_dir.clone(),
                    };
                    let (device, handler) = dbs_virtio_devices::fs::FsDevice::new(&config)
                        .map_err(|e| dev_err(e.into()))?;
                    virtio_devices.push(("virtio-fs", Box::new(device)));
                    subscribers.push(handler);
                }
                FsBackend::VhostUser { socket } => {
                    let (device, handler) = dbs_virtio_devices::fs::VhostUserFsDevice::new(
                        &fs.tag,
                        socket,
                        backend_gone(exit.clone(), socket),
                    )
                    .map_err(|e| dev_err(e.into()))?;
                    virtio_devices.push(("virtio-fs", Box::new(device)));
                    subscribers.push(handler);
                }
            }
        }
        for (net, mac) in &self.nets {
            let config = dbs_virtio_devices::net::NetConfig {
                tap_name: net.host_dev_name.clone(),
                mac: *mac,
            };
            let (device, handler) = dbs_virtio_devices::net::NetDevice::new(&config)
                .map_err(|e| StartError::device(format!("net {}", net.host_dev_name), e))?;
            virtio_devices.push(("net", Box::new(device)));
            subscribers.push(handler);
        }
        if let Some(vsock) = &self.vsock {
            let config = dbs_virtio_devices::vsock::VsockConfig {
                guest_cid: u64::from(vsock.guest_cid),
                uds_path: vsock.uds_path.clone(),
            };
            let (device, muxer) = dbs_virtio_devices::vsock::VsockDevice::new(&config)
                .map_err(|e| StartError::device("vsock", e))?;
            virtio_devices.push(("vsock", Box::new(device)));
            subscribers.push(muxer);
        }
        phase("virtio devices created");
        let machine = arch::create_machine(MachineInputs {
            kvm: &kvm,
            vm_fd: &vm_fd,
            config: &self.config,
            boot,
            memory: &memory,
            console,
            devices: DeviceManager::new(),
            virtio_devices,
            exit: exit.clone(),
            trace: &trace,
        })?;
        phase("vCPUs set up");
        let seccomp = self.config.seccomp;
        let vcpus = VcpuManager::start(machine.vcpus, machine.devices.into_bus(), exit, seccomp)
            .map_err(|e| StartError::kvm("starting vCPU threads", e))?;
        phase("vCPUs running");
        Ok((
            Running {
                vcpus,
                _arch: machine.arch,
                _memory: memory,
                _vm_fd: vm_fd,
                _kvm: kvm,
            },
            subscribers,
        ))
    }

    /// Pauses the vCPUs.
    pub fn pause(&mut self) -> Result<(), VmmActionError> {
        match (&self.running, self.state) {
            (Some(r), InstanceState::Running) => {
                r.vcpus.pause().map_err(VmmActionError::PauseResume)?;
                self.state = InstanceState::Paused;
                Ok(())
            }
            (_, state) => Err(VmmActionError::NotRunning {
                action: "PauseMicroVm",
                state,
            }),
        }
    }

    /// Resumes the vCPUs.
    pub fn resume(&mut self) -> Result<(), VmmActionError> {
        match (&self.running, self.state) {
            (Some(r), InstanceState::Paused) => {
                r.vcpus.resume();
                self.state = InstanceState::Running;
                Ok(())
            }
            (_, state) => Err(VmmActionError::NotRunning {
                action: "ResumeMicroVm",
                state,
            }),
        }
    }

    /// Stops everything and records the exit.
    pub fn stop(&mut self, info: &ExitInfo) {
        self.state = InstanceState::Halted;
        if let Some(mut running) = self.running.take() {
            running.vcpus.stop();
        }
        self.state = InstanceState::Exited(info.code);
    }
}
