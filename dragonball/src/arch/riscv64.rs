//! riscv64 machine: DRAM at 0x8000_0000, kernel `Image` 2 MiB above it, FDT at the base,
//! initrd at the top; in-kernel AIA (IMSIC + APLIC) with wired sources raised by
//! KVM_IRQ_LINE, or a userspace PLIC driving KVM_INTERRUPT when the host has no AIA;
//! 16550 console on MMIO; virtio-mmio devices;
//! SBI console and system reset handled from vCPU exits.

mod seccomp;
pub use seccomp::*;

use std::fs::File;
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Arc;

use dbs_arch::riscv64::aia::{Aia, AiaConfig, AiaError};
use dbs_arch::riscv64::sbi::{self, SbiCall, SbiRet};
use dbs_arch::riscv64::vcpu as rv;
use dbs_boot::riscv64::fdt::{self, FdtConfig, IrqChip, MmioDevice};
use dbs_boot::riscv64::{image, layout};
use dbs_device::device_manager::IoManager;
use dbs_interrupt::plic::{HartInterrupt, Plic, PlicLine};
use dbs_interrupt::{InterruptLine, KvmIrqLine};
use dbs_legacy_devices::SerialDevice;
use kvm_ioctls::{VcpuExit, VcpuFd};
use linux_loader::loader::KernelLoader;
use linux_loader::loader::pe::PE;
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend};

use crate::console::Console;
use crate::device_manager::MmioSlot;
use crate::vcpu::{ExitInfo, VcpuSpec};
use crate::vm::{Machine, MachineInputs, StartError};
use dbs_address_space::GuestMemory;

/// Lowest guest RAM a VM may have, in MiB.
pub const MIN_MEM_MIB: usize = (layout::DRAM_MIN_SIZE >> 20) as usize;
/// Kernel parameters every guest of this machine needs, whatever else its command line
/// says (nothing: SBI SRST ends the VM).
pub const PLATFORM_CMDLINE: &str = "";
/// Command line used when the boot source has none.
pub const DEFAULT_CMDLINE: &str = "console=ttyS0 earlycon panic=-1";

const KVM_EXIT_RISCV_SBI: u32 = 35;
const KVM_SYSTEM_EVENT_SHUTDOWN: u32 = 1;
const KVM_SYSTEM_EVENT_RESET: u32 = 2;
const SRST_REASON_SYSTEM_FAILURE: u64 = 1;

/// Per-vCPU state for SBI calls handled in userspace.
pub struct VcpuState {
    console: Console,
    memory: GuestMemory,
}

/// Per-VM arch state that must live as long as the VM.
pub struct ArchVm {
    _irqchip: Irqchip,
}

/// The guest's interrupt controller: KVM's AIA when the host has it, else our PLIC.
enum Irqchip {
    Aia(Aia),
    Plic(Arc<Plic>),
}

vmm_sys_util::ioctl_iow_nr!(
    KVM_INTERRUPT,
    kvm_bindings::KVMIO,
    0x86,
    kvm_bindings::kvm_interrupt
);

/// Drives each hart's supervisor external interrupt with KVM_INTERRUPT (an ioctl any
/// thread may issue while the vCPU runs).
struct KvmHartInterrupt {
    vcpus: Vec<OwnedFd>,
}

impl HartInterrupt for KvmHartInterrupt {
    fn set(&self, hart: usize, asserted: bool) -> std::io::Result<()> {
        let fd = self
            .vcpus
            .get(hart)
            .ok_or_else(|| std::io::Error::other(format!("no hart {hart}")))?;
        let irq = kvm_bindings::kvm_interrupt {
            irq: if asserted {
                kvm_bindings::KVM_INTERRUPT_SET
            } else {
                kvm_bindings::KVM_INTERRUPT_UNSET
            } as u32,
        };
        // SAFETY: KVM_INTERRUPT reads one kvm_interrupt from a live reference; the fd is
        // a vCPU fd we own (a dup).
        let ret = unsafe { vmm_sys_util::ioctl::ioctl_with_ref(fd, KVM_INTERRUPT(), &irq) };
        if ret < 0 {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(())
        }
    }
}

impl Irqchip {
    fn create(
        vm: &Arc<kvm_ioctls::VmFd>,
        vcpus: &[VcpuFd],
        harts: u32,
    ) -> Result<Irqchip, StartError> {
        let config = AiaConfig {
            harts,
            sources: layout::IRQ_SOURCES,
            aplic_addr: layout::APLIC_BASE,
            imsic_base: layout::IMSIC_BASE,
            imsic_stride: layout::IMSIC_STRIDE,
        };
        match Aia::create(vm, &config) {
            Ok(aia) => Ok(Irqchip::Aia(aia)),
            Err(AiaError::Unavailable(e)) => {
                log::info!("riscv64: no in-kernel AIA ({e}); using the userspace PLIC");
                let mut fds = Vec::new();
                for vcpu in vcpus {
                    // SAFETY: dup of a valid vCPU fd; the result is checked and owned.
                    let raw = unsafe { libc::dup(vcpu.as_raw_fd()) };
                    if raw < 0 {
                        return Err(StartError::Irqchip {
                            source: Box::new(std::io::Error::last_os_error()),
                        });
                    }
                    // SAFETY: `raw` is a fresh fd nothing else owns.
                    fds.push(unsafe { OwnedFd::from_raw_fd(raw) });
                }
                let plic = Plic::new(
                    layout::IRQ_SOURCES as usize + 1,
                    harts as usize,
                    Box::new(KvmHartInterrupt { vcpus: fds }),
                );
                Ok(Irqchip::Plic(Arc::new(plic)))
            }
            Err(other) => Err(StartError::Irqchip {
                source: Box::new(other),
            }),
        }
    }

    fn line(&self, vm: &Arc<kvm_ioctls::VmFd>, source: u32) -> Arc<dyn InterruptLine> {
        match self {
            Irqchip::Aia(_) => Arc::new(KvmIrqLine::new(vm.clone(), source)),
            Irqchip::Plic(plic) => Arc::new(PlicLine::new(plic.clone(), source)),
        }
    }
}

/// Guest RAM ranges (address, size) for `mem_size` bytes: one range at the DRAM base.
pub fn memory_ranges(mem_size: u64) -> Vec<(u64, u64)> {
    vec![(layout::DRAM_BASE, mem_size)]
}

/// Window and interrupt of virtio-mmio slot `index`.
pub fn virtio_slot(index: u32) -> Option<MmioSlot> {
    (index < layout::VIRTIO_MMIO_SLOTS).then(|| MmioSlot {
        base: layout::virtio_mmio_base(index),
        size: layout::VIRTIO_MMIO_SIZE,
        irq: layout::VIRTIO_MMIO_IRQ_BASE + index,
    })
}

fn kvm_err(step: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> StartError {
    move |e| StartError::kvm(step, e)
}

/// Where the kernel, FDT and initrd went.
struct Loaded {
    entry: u64,
    initrd: Option<(u64, u64)>,
}

fn load_images(inputs: &MachineInputs<'_>, mem_size: u64) -> Result<Loaded, StartError> {
    let kernel_path = &inputs.boot.kernel_path;
    let kernel_err = |reason: String| StartError::Kernel {
        path: kernel_path.clone(),
        reason,
    };
    let mut kernel = File::open(kernel_path).map_err(|e| kernel_err(e.to_string()))?;
    let mut head = [0u8; 64];
    kernel
        .read_exact(&mut head)
        .map_err(|e| kernel_err(format!("reading the Image header: {e}")))?;
    let header = image::parse_header(&head).map_err(|e| kernel_err(e.to_string()))?;
    // Into the VM's fresh (zero) RAM: the Image's zero blocks are skipped.
    let loaded = PE::load(
        inputs.memory.as_ref(),
        Some(GuestAddress(layout::DRAM_BASE)),
        &mut crate::sparse_image::SparseImage::new(&mut kernel),
        None,
    )
    .map_err(|e| kernel_err(format!("loading into guest memory: {e}")))?;
    inputs.trace.phase("kernel loaded");
    let entry = loaded.kernel_load.0;
    let kernel_end = entry + header.image_size.max(loaded.kernel_end - entry);
    let mem_end = layout::DRAM_BASE + mem_size;

    let initrd = match &inputs.boot.initrd_path {
        None => None,
        Some(path) => {
            let (start, size) = crate::vm::load_initrd(inputs.memory, path, mem_end, kernel_end)?;
            Some((start, start + size))
        }
    };
    inputs.trace.phase("initrd loaded");
    if kernel_end > mem_end {
        return Err(StartError::MemoryTooSmall(format!(
            "the kernel needs {} MiB with bss",
            (kernel_end - layout::DRAM_BASE) >> 20
        )));
    }
    Ok(Loaded { entry, initrd })
}

/// Builds the machine: vCPUs, AIA, console, kernel, initrd, FDT and boot registers.
pub fn create_machine(mut inputs: MachineInputs<'_>) -> Result<Machine, StartError> {
    let nr = u32::from(inputs.config.vcpu_count);
    let mem_size = inputs
        .memory
        .iter()
        .map(vm_memory::GuestMemoryRegion::len)
        .sum::<u64>();
    let mut fds = Vec::new();
    for id in 0..nr {
        fds.push(
            inputs
                .vm_fd
                .create_vcpu(u64::from(id))
                .map_err(kvm_err("creating vCPUs"))?,
        );
    }

    let irqchip = Irqchip::create(inputs.vm_fd, &fds, nr)?;
    let mut devices = std::mem::take(&mut inputs.devices);
    if let Irqchip::Plic(plic) = &irqchip {
        devices
            .register_mmio("plic", plic.clone(), layout::PLIC_BASE, layout::PLIC_SIZE)
            .map_err(|e| StartError::device("plic", e))?;
    }
    let serial_irq = irqchip.line(inputs.vm_fd, layout::SERIAL_IRQ);
    let serial = Arc::new(SerialDevice::new(
        serial_irq,
        Box::new(inputs.console.clone()),
    ));
    inputs
        .console
        .set_input(&(serial.clone() as Arc<dyn crate::console::ConsoleInput>));
    devices
        .register_mmio("serial", serial, layout::SERIAL_BASE, layout::SERIAL_SIZE)
        .map_err(|e| StartError::device("serial", e))?;
    let mut virtio_slots = Vec::new();
    for (index, (name, device)) in std::mem::take(&mut inputs.virtio_devices)
        .into_iter()
        .enumerate()
    {
        let slot = virtio_slot(index as u32).ok_or_else(|| StartError::NoMmioSlot {
            device: name.to_string(),
        })?;
        let line = irqchip.line(inputs.vm_fd, slot.irq);
        devices
            .add_virtio(name, inputs.vm_fd, inputs.memory, device, slot, line)
            .map_err(|e| StartError::device(name, e))?;
        virtio_slots.push(slot);
    }

    inputs.trace.phase("irqchip and devices placed");
    let loaded = load_images(&inputs, mem_size)?;

    let with_aia = matches!(irqchip, Irqchip::Aia(_));
    let isa =
        rv::discover_isa(&fds[0], with_aia).map_err(|e| StartError::kvm("reading the ISA", e))?;
    let timebase = rv::timer_frequency(&fds[0])
        .map_err(|e| StartError::kvm("reading the timer frequency", e))?;
    let cmdline = inputs
        .boot
        .boot_args
        .clone()
        .unwrap_or_else(|| DEFAULT_CMDLINE.to_string());
    let blob = fdt::build(&FdtConfig {
        harts: (0..nr).collect(),
        isa_letters: isa.letters,
        isa_extensions: isa.extensions,
        mmu_type: isa.mmu_type.map(str::to_string),
        cbom_block_size: isa.cbom_block_size.and_then(|s| u32::try_from(s).ok()),
        cboz_block_size: isa.cboz_block_size.and_then(|s| u32::try_from(s).ok()),
        timebase_frequency: u32::try_from(timebase).map_err(|_| {
            StartError::boot_data(
                "the device tree",
                format!("timer frequency {timebase} Hz does not fit in 32 bits"),
            )
        })?,
        memory: (layout::DRAM_BASE, mem_size),
        cmdline,
        initrd: loaded.initrd,
        irqchip: match &irqchip {
            Irqchip::Aia(aia) => IrqChip::Aia {
                num_ids: aia.num_ids,
                num_sources: layout::IRQ_SOURCES,
            },
            Irqchip::Plic(_) => IrqChip::Plic {
                ndev: layout::IRQ_SOURCES,
            },
        },
        serial: Some(MmioDevice {
            base: layout::SERIAL_BASE,
            size: layout::SERIAL_SIZE,
            irq: layout::SERIAL_IRQ,
        }),
        virtio_devices: virtio_slots
            .iter()
            .map(|s| MmioDevice {
                base: s.base,
                size: s.size,
                irq: s.irq,
            })
            .collect(),
    })
    .map_err(|e| StartError::boot_data("the device tree", e))?;
    inputs
        .memory
        .write_slice(&blob, GuestAddress(layout::FDT_ADDR))
        .map_err(|e| StartError::boot_data("writing the device tree", e))?;
    inputs.trace.phase("boot data written");

    let mut vcpus = Vec::new();
    for (id, fd) in fds.into_iter().enumerate() {
        rv::enable_dbcn(&fd).map_err(|e| StartError::kvm("enabling the SBI debug console", e))?;
        rv::set_boot_regs(&fd, id as u64, loaded.entry, layout::FDT_ADDR)
            .map_err(|e| StartError::kvm(format!("setting vCPU {id}'s boot registers"), e))?;
        vcpus.push(VcpuSpec {
            id: id as u32,
            fd,
            arch: VcpuState {
                console: inputs.console.clone(),
                memory: inputs.memory.clone(),
            },
        });
    }
    Ok(Machine {
        vcpus,
        devices,
        arch: ArchVm { _irqchip: irqchip },
    })
}

/// SRST shutdown → exit 0; reset → exit 0 too (a reboot ends a microVM); a "system
/// failure" reason → exit 1.
pub fn system_event(kind: u32, data: &[u64]) -> ExitInfo {
    let failure = data.first() == Some(&SRST_REASON_SYSTEM_FAILURE);
    let what = match kind {
        KVM_SYSTEM_EVENT_SHUTDOWN => "power-off",
        KVM_SYSTEM_EVENT_RESET => "reset",
        _ => "system event",
    };
    ExitInfo {
        code: i32::from(failure),
        reason: format!("guest {what} (event {kind}, reason {data:?})"),
    }
}

/// riscv64 never exits with port I/O or HLT; anything else is unexpected.
pub fn handle_exit(exit: VcpuExit<'_>, _bus: &Arc<IoManager>) -> Option<ExitInfo> {
    Some(ExitInfo {
        code: 1,
        reason: format!("unexpected vCPU exit {exit:?}"),
    })
}

fn sbi_call(call: SbiCall, state: &VcpuState) -> SbiRet {
    sbi::serve(call, state.memory.as_ref(), &mut state.console.clone())
}

/// KVM_EXIT_RISCV_SBI: console calls are served, anything else gets NOT_SUPPORTED.
pub fn handle_unsupported_exit(
    fd: &mut VcpuFd,
    reason: u32,
    state: &VcpuState,
) -> Result<(), ExitInfo> {
    if reason != KVM_EXIT_RISCV_SBI {
        return Err(ExitInfo {
            code: 1,
            reason: format!("unexpected KVM exit reason {reason}"),
        });
    }
    // SAFETY: the exit reason says `riscv_sbi` is the live member of the union.
    let sbi_exit = unsafe { &mut fd.get_kvm_run().__bindgen_anon_1.riscv_sbi };
    let call = sbi::decode(sbi_exit.extension_id, sbi_exit.function_id, &sbi_exit.args);
    let ret = sbi_call(call, state);
    sbi_exit.ret = [ret.error as u64, ret.value];
    Ok(())
}
