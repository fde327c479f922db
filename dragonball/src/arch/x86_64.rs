//! x86_64 machine: RAM from 0 up to the 3 GiB MMIO hole and on from 4 GiB; an ELF
//! `vmlinux` booted through its PVH entry (`hvm_start_info` in ebx, the initrd as the
//! first module) or a bzImage through the Linux 32-bit boot protocol (zero page in esi,
//! e820 map); an MP table for the vCPUs and the IOAPIC, the in-kernel PIC/IOAPIC and
//! PIT, COM1 on port 0x3f8 (IRQ 4), the i8042 reset line, virtio-mmio devices announced
//! with `virtio_mmio.device=` on the command line. A guest reboot (i8042 reset or triple
//! fault) ends the VM.

mod kernel;
mod seccomp;
pub use seccomp::*;

use std::sync::Arc;

use dbs_arch::x86_64 as cpu;
use dbs_boot::x86_64::{acpi, layout, mptable, pvh};
use dbs_device::device_manager::IoManager;
use dbs_interrupt::KvmIrqLine;
use dbs_legacy_devices::SerialDevice;
use dbs_legacy_devices::i8042::{I8042_PORT, I8042_PORT_COUNT, I8042Device};
use dbs_legacy_devices::{AcpiPm, Pm1Block};
use kvm_bindings::{KVM_PIT_SPEAKER_DUMMY, kvm_pit_config};
use kvm_ioctls::{VcpuExit, VcpuFd};
use vm_memory::{Bytes, GuestAddress};

use crate::device_manager::MmioSlot;
use crate::vcpu::{ExitInfo, VcpuSpec};
use crate::vm::{Machine, MachineInputs, StartError};

/// Lowest guest RAM a VM may have, in MiB.
pub const MIN_MEM_MIB: usize = 32;
/// Kernel parameters every guest of this machine needs, whatever else its command line
/// says (a reset through the i8042 ends the VM; no PCI bus to probe).
pub const PLATFORM_CMDLINE: &str = "reboot=k pci=off";
/// Command line used when the boot source has none.
pub const DEFAULT_CMDLINE: &str = "console=ttyS0 reboot=k panic=1 pci=off";

/// Per-vCPU state for exits handled in userspace (none on x86_64).
pub struct VcpuState;

/// Per-VM arch state that must live as long as the VM.
pub struct ArchVm;

/// Guest RAM ranges (address, size) for `mem_size` bytes: from 0 up to the MMIO hole at
/// 3 GiB, and whatever remains from 4 GiB up.
pub fn memory_ranges(mem_size: u64) -> Vec<(u64, u64)> {
    layout::ram_ranges(mem_size)
}

fn virtio_slot(index: u32) -> Option<MmioSlot> {
    (index < layout::VIRTIO_MMIO_SLOTS).then(|| MmioSlot {
        base: layout::VIRTIO_MMIO_BASE + u64::from(index) * layout::VIRTIO_MMIO_SIZE,
        size: layout::VIRTIO_MMIO_SIZE,
        irq: layout::VIRTIO_MMIO_IRQ_BASE + index,
    })
}

fn kvm_err(step: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> StartError {
    move |e| StartError::kvm(step, e)
}

/// Builds the machine.
pub fn create_machine(mut inputs: MachineInputs<'_>) -> Result<Machine, StartError> {
    let nr = inputs.config.vcpu_count;
    let mem_size = (inputs.config.mem_size_mib as u64) << 20;
    let vm = inputs.vm_fd;
    vm.set_tss_address(layout::KVM_TSS_ADDR)
        .map_err(kvm_err("KVM_SET_TSS_ADDR"))?;
    vm.create_irq_chip()
        .map_err(kvm_err("KVM_CREATE_IRQCHIP"))?;
    vm.create_pit2(kvm_pit_config {
        flags: KVM_PIT_SPEAKER_DUMMY,
        ..Default::default()
    })
    .map_err(kvm_err("KVM_CREATE_PIT2"))?;

    let mut devices = std::mem::take(&mut inputs.devices);
    let serial = Arc::new(SerialDevice::new(
        Arc::new(KvmIrqLine::new(vm.clone(), layout::SERIAL_IRQ)),
        Box::new(inputs.console.clone()),
    ));
    inputs
        .console
        .set_input(&(serial.clone() as Arc<dyn crate::console::ConsoleInput>));
    devices
        .register_pio("serial", serial, layout::SERIAL_PORT, 8)
        .map_err(|e| StartError::device("serial", e))?;
    let exit = inputs.exit.clone();
    let i8042 = Arc::new(I8042Device::new(Arc::new(move || {
        exit.report(ExitInfo {
            code: 0,
            reason: "guest reset (i8042 reset command)".into(),
        })
    })));
    devices
        .register_pio("i8042", i8042, I8042_PORT, I8042_PORT_COUNT)
        .map_err(|e| StartError::device("i8042", e))?;
    let exit = inputs.exit.clone();
    let pm = AcpiPm::new(
        acpi::S5_SLEEP_TYPE,
        Arc::new(move || {
            exit.report(ExitInfo {
                code: 0,
                reason: "guest power-off (ACPI S5)".into(),
            })
        }),
    );
    for (name, block, port) in [
        ("acpi-pm1-event", Pm1Block::Event, acpi::PM1_EVENT_PORT),
        (
            "acpi-pm1-control",
            Pm1Block::Control,
            acpi::PM1_CONTROL_PORT,
        ),
    ] {
        devices
            .register_pio(name, pm.block(block), port, block.port_count())
            .map_err(|e| StartError::device(name, e))?;
    }
    let mut cmdline = inputs
        .boot
        .boot_args
        .clone()
        .unwrap_or_else(|| DEFAULT_CMDLINE.to_string());
    for (index, (name, device)) in std::mem::take(&mut inputs.virtio_devices)
        .into_iter()
        .enumerate()
    {
        let slot = virtio_slot(index as u32).ok_or_else(|| StartError::NoMmioSlot {
            device: name.to_string(),
        })?;
        let line = Arc::new(KvmIrqLine::new(vm.clone(), slot.irq));
        devices
            .add_virtio(name, vm, inputs.memory, device, slot, line)
            .map_err(|e| StartError::device(name, e))?;
        cmdline.push_str(&format!(
            " virtio_mmio.device=4K@{:#x}:{}",
            slot.base, slot.irq
        ));
    }

    inputs.trace.phase("irqchip and devices placed");
    let kernel_path = &inputs.boot.kernel_path;
    let kernel_err = |reason: String| StartError::Kernel {
        path: kernel_path.clone(),
        reason,
    };
    let kernel = kernel::load(inputs.memory, kernel_path).map_err(kernel_err)?;
    inputs.trace.phase("kernel loaded");
    let initrd = match &inputs.boot.initrd_path {
        None => None,
        Some(path) => Some(crate::vm::load_initrd(
            inputs.memory,
            path,
            kernel.initrd_limit(mem_size),
            kernel.end,
        )?),
    };
    inputs.trace.phase("initrd loaded");
    if cmdline.len() > kernel.cmdline_max() {
        return Err(kernel_err(format!(
            "the command line is {} bytes; this kernel takes at most {}",
            cmdline.len(),
            kernel.cmdline_max()
        )));
    }
    let write = |bytes: &[u8], addr: u64, what: &str| {
        inputs
            .memory
            .write_slice(bytes, GuestAddress(addr))
            .map_err(|e| StartError::boot_data(format!("writing {what}"), e))
    };
    let cmdline_len = cmdline.len();
    let mut cmd_bytes = cmdline.into_bytes();
    cmd_bytes.push(0);
    write(&cmd_bytes, layout::CMDLINE_ADDR, "the command line")?;
    let (entry, boot_info) = match &kernel.entry {
        kernel::Entry::Pvh { addr } => {
            let blobs = pvh::build(mem_size, initrd, acpi::TABLES_ADDR);
            write(&blobs.start_info, layout::START_INFO_ADDR, "hvm_start_info")?;
            write(&blobs.modlist, layout::MODLIST_ADDR, "the module list")?;
            write(&blobs.memmap, layout::MEMMAP_ADDR, "the memory map")?;
            let regs = cpu::BootInfoRegs {
                ebx: layout::START_INFO_ADDR,
                esi: 0,
            };
            (*addr, regs)
        }
        kernel::Entry::BzImage { addr, header } => {
            let params = kernel::zero_page(header, cmdline_len, initrd, mem_size);
            inputs
                .memory
                .write_obj(params, GuestAddress(layout::ZERO_PAGE_ADDR))
                .map_err(|e| StartError::boot_data("writing the zero page", e))?;
            let regs = cpu::BootInfoRegs {
                ebx: 0,
                esi: layout::ZERO_PAGE_ADDR,
            };
            (*addr, regs)
        }
    };
    let gdt: Vec<u8> = cpu::boot_gdt()
        .iter()
        .flat_map(|d| d.to_le_bytes())
        .collect();
    write(&gdt, layout::GDT_ADDR, "the GDT")?;
    let mptable = mptable::build(nr).map_err(|e| StartError::boot_data("the MP table", e))?;
    write(&mptable, mptable::MPTABLE_ADDR, "the MP table")?;
    write(&acpi::build(nr), acpi::TABLES_ADDR, "the ACPI tables")?;
    inputs.trace.phase("boot data written");

    let mut vcpus = Vec::new();
    for id in 0..nr {
        let fd = vm
            .create_vcpu(u64::from(id))
            .map_err(kvm_err("creating vCPUs"))?;
        let setup = |r: Result<(), cpu::SetupError>| {
            r.map_err(|e| StartError::kvm(format!("setting up vCPU {id}"), e))
        };
        setup(cpu::setup_cpuid(inputs.kvm, &fd, id, nr))?;
        setup(cpu::setup_msrs(&fd))?;
        setup(cpu::setup_fpu(&fd))?;
        setup(cpu::setup_lapic(&fd))?;
        if id == 0 {
            setup(cpu::setup_boot32_regs(
                &fd,
                entry,
                layout::GDT_ADDR,
                boot_info,
            ))?;
        }
        vcpus.push(VcpuSpec {
            id: u32::from(id),
            fd,
            arch: VcpuState,
        });
    }
    Ok(Machine {
        vcpus,
        devices,
        arch: ArchVm,
    })
}

/// Maps a KVM system event to the VM's exit.
pub fn system_event(kind: u32, data: &[u64]) -> ExitInfo {
    ExitInfo {
        code: 0,
        reason: format!("guest system event {kind} ({data:?})"),
    }
}

/// Port I/O goes to the bus (unbacked reads return all ones, like an empty ISA bus);
/// a shutdown (triple fault, the `reboot=t` path) ends the VM.
pub fn handle_exit(exit: VcpuExit<'_>, bus: &Arc<IoManager>) -> Option<ExitInfo> {
    match exit {
        VcpuExit::IoIn(port, data) => {
            if bus.pio_read(port, data).is_err() {
                data.fill(0xff);
            }
            None
        }
        VcpuExit::IoOut(port, data) => {
            let _ = bus.pio_write(port, data);
            None
        }
        VcpuExit::Shutdown => Some(ExitInfo {
            code: 0,
            reason: "guest reset (shutdown exit)".into(),
        }),
        VcpuExit::Hlt => Some(ExitInfo {
            code: 0,
            reason: "guest halted".into(),
        }),
        other => Some(ExitInfo {
            code: 1,
            reason: format!("unexpected vCPU exit {other:?}"),
        }),
    }
}

/// Exits kvm-ioctls does not decode.
pub fn handle_unsupported_exit(
    _fd: &mut VcpuFd,
    reason: u32,
    _state: &VcpuState,
) -> Result<(), ExitInfo> {
    Err(ExitInfo {
        code: 1,
        reason: format!("unexpected KVM exit reason {reason}"),
    })
}
