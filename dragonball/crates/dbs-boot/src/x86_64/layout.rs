//! Guest physical layout of an x86_64 microVM.
//!
//! ```text
//! 0x0000_0500  GDT used for the PVH entry
//! 0x0000_6000  hvm_start_info, then the module list
//! 0x0000_7000  memory map
//! 0x0002_0000  kernel command line
//! 0x0009_fc00  end of low RAM (EBDA and the legacy hole above)
//! 0x0010_0000  kernel (ELF vmlinux, PVH entry), then RAM; initrd at the top of RAM
//! 0xd000_0000  virtio-mmio slots, 0x1000 each (inside the 3–4 GiB MMIO hole)
//! port 0x3f8   16550 COM1, IRQ 4
//! ```

/// GDT for the 32-bit PVH entry.
pub const GDT_ADDR: u64 = 0x500;
/// hvm_start_info.
pub const START_INFO_ADDR: u64 = 0x6000;
/// Module list (the initrd).
pub const MODLIST_ADDR: u64 = 0x6100;
/// Memory map table.
pub const MEMMAP_ADDR: u64 = 0x7000;
/// Kernel command line.
pub const CMDLINE_ADDR: u64 = 0x2_0000;
/// Longest command line we place.
pub const CMDLINE_MAX: usize = 0x1_0000;
/// End of low RAM.
pub const LOW_RAM_END: u64 = 0x9_fc00;
/// Where the kernel's high memory starts.
pub const HIMEM_START: u64 = 0x10_0000;
/// Start of the MMIO hole; RAM stays below it.
pub const MMIO_HOLE_START: u64 = 0xc000_0000;
/// First virtio-mmio slot.
pub const VIRTIO_MMIO_BASE: u64 = 0xd000_0000;
/// Size of one virtio-mmio slot.
pub const VIRTIO_MMIO_SIZE: u64 = 0x1000;
/// Number of virtio-mmio slots (IRQs 5..=15 of the legacy PIC/IOAPIC range).
pub const VIRTIO_MMIO_SLOTS: u32 = 11;
/// IRQ of slot 0.
pub const VIRTIO_MMIO_IRQ_BASE: u32 = 5;
/// COM1.
pub const SERIAL_PORT: u16 = 0x3f8;
/// COM1's IRQ.
pub const SERIAL_IRQ: u32 = 4;
/// KVM's TSS (needed on Intel; harmless elsewhere), just below 4 GiB.
pub const KVM_TSS_ADDR: usize = 0xfffb_d000;
