//! Guest physical layout of an x86_64 microVM.
//!
//! ```text
//! 0x0000_0500  GDT used for the PVH entry
//! 0x0000_6000  hvm_start_info, then the module list
//! 0x0000_7000  memory map (PVH)
//! 0x0000_8000  zero page (bzImage)
//! 0x0002_0000  kernel command line
//! 0x0009_fc00  end of low RAM (EBDA and the legacy hole above)
//! 0x0010_0000  kernel, then RAM; initrd at the top of RAM below 3 GiB
//! 0xc000_0000  MMIO hole up to 4 GiB: virtio-mmio slots at 0xd000_0000, 0x1000 each
//! 0x1_0000_0000  RAM beyond the first 3 GiB
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
/// Linux zero page (`boot_params`) for a bzImage boot.
pub const ZERO_PAGE_ADDR: u64 = 0x8000;
/// Kernel command line.
pub const CMDLINE_ADDR: u64 = 0x2_0000;
/// Longest command line we place.
pub const CMDLINE_MAX: usize = 0x1_0000;
/// End of low RAM.
pub const LOW_RAM_END: u64 = 0x9_fc00;
/// Where the kernel's high memory starts.
pub const HIMEM_START: u64 = 0x10_0000;
/// Start of the MMIO hole (3 GiB): RAM beyond it continues at [`MMIO_HOLE_END`].
pub const MMIO_HOLE_START: u64 = 0xc000_0000;
/// End of the MMIO hole (4 GiB).
pub const MMIO_HOLE_END: u64 = 0x1_0000_0000;
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

// The virtio-mmio slots lie inside the MMIO hole.
const _: () = assert!(
    VIRTIO_MMIO_BASE >= MMIO_HOLE_START
        && VIRTIO_MMIO_BASE + VIRTIO_MMIO_SIZE * VIRTIO_MMIO_SLOTS as u64 <= MMIO_HOLE_END
);

/// Guest RAM ranges (address, size) for `mem_size` bytes, split around the MMIO hole.
pub fn ram_ranges(mem_size: u64) -> Vec<(u64, u64)> {
    if mem_size <= MMIO_HOLE_START {
        vec![(0, mem_size)]
    } else {
        vec![
            (0, MMIO_HOLE_START),
            (MMIO_HOLE_END, mem_size - MMIO_HOLE_START),
        ]
    }
}

/// Usable RAM as the guest's memory map reports it: low RAM below the EBDA, RAM from
/// 1 MiB to the hole (or the end), and RAM above 4 GiB.
pub fn e820_ram(mem_size: u64) -> Vec<(u64, u64)> {
    let mut map = vec![
        (0, LOW_RAM_END),
        (HIMEM_START, low_ram_end(mem_size) - HIMEM_START),
    ];
    if mem_size > MMIO_HOLE_START {
        map.push((MMIO_HOLE_END, mem_size - MMIO_HOLE_START));
    }
    map
}

/// End of the RAM range that starts at 0 (where the initrd goes).
pub fn low_ram_end(mem_size: u64) -> u64 {
    mem_size.min(MMIO_HOLE_START)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ram_skips_the_mmio_hole() {
        assert_eq!(ram_ranges(256 << 20), vec![(0, 256 << 20)]);
        assert_eq!(ram_ranges(3 << 30), vec![(0, 3 << 30)]);
        assert_eq!(ram_ranges(5 << 30), vec![(0, 3 << 30), (4 << 30, 2 << 30)]);
        assert_eq!(low_ram_end(5 << 30), 3 << 30);
        assert_eq!(
            e820_ram(5 << 30),
            vec![
                (0, LOW_RAM_END),
                (HIMEM_START, (3 << 30) - HIMEM_START),
                (4 << 30, 2 << 30)
            ]
        );
        assert_eq!(e820_ram(64 << 20).len(), 2);
    }
}
