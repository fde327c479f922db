//! Guest physical layout of a riscv64 microVM.
//!
//! ```text
//! 0x0c00_0000  APLIC (in-kernel AIA), or the userspace PLIC (fallback)
//! 0x1000_0000  16550 UART (0x1000)
//! 0x1000_1000  virtio-mmio slots, 0x1000 each
//! 0x2800_0000  IMSIC pages, one 4 KiB page per hart
//! 0x8000_0000  DRAM: FDT at the base, kernel at +2 MiB, initrd at the top
//! ```

/// Start of guest RAM.
pub const DRAM_BASE: u64 = 0x8000_0000;
/// Highest RAM size we lay out (so RAM stays below 2^39 for Sv39 guests).
pub const DRAM_MAX_SIZE: u64 = 0x40_0000_0000 - DRAM_BASE;
/// Smallest RAM that can hold the FDT, a kernel and an initrd.
pub const DRAM_MIN_SIZE: u64 = 32 << 20;

/// The kernel is loaded 2 MiB above the DRAM base (the RV64 `text_offset`).
pub const KERNEL_ALIGN: u64 = 2 << 20;
/// FDT at the DRAM base: below the kernel, inside RAM, 8-byte aligned.
pub const FDT_ADDR: u64 = DRAM_BASE;
/// Largest FDT the kernel maps (PMD_SIZE on rv64).
pub const FDT_MAX_SIZE: usize = 2 << 20;

/// In-kernel AIA APLIC base and size.
pub const APLIC_BASE: u64 = 0x0c00_0000;
/// APLIC register window size (KVM_DEV_RISCV_APLIC_SIZE).
pub const APLIC_SIZE: u64 = 0x4000;
/// Userspace PLIC base (fallback when the host has no AIA).
pub const PLIC_BASE: u64 = 0x0c00_0000;
/// PLIC register window: 0x20_0000 + 0x1000 per context (2 per hart), far more than
/// the harts we allow; it ends where the UART begins.
pub const PLIC_SIZE: u64 = 0x0400_0000;
/// IMSIC pages; aligned to 2^(hart_bits + 12) for up to 2^12 harts.
pub const IMSIC_BASE: u64 = 0x2800_0000;
/// One IMSIC interrupt file per hart.
pub const IMSIC_STRIDE: u64 = 0x1000;

/// The 16550 UART.
pub const SERIAL_BASE: u64 = 0x1000_0000;
/// UART window.
pub const SERIAL_SIZE: u64 = 0x1000;
/// The UART's interrupt source.
pub const SERIAL_IRQ: u32 = 1;

/// First virtio-mmio slot.
pub const VIRTIO_MMIO_BASE: u64 = 0x1000_1000;
/// Size of one virtio-mmio slot.
pub const VIRTIO_MMIO_SIZE: u64 = 0x1000;
/// Number of virtio-mmio slots.
pub const VIRTIO_MMIO_SLOTS: u32 = 32;
/// Interrupt source of virtio-mmio slot 0; slot n uses `VIRTIO_MMIO_IRQ_BASE + n`.
pub const VIRTIO_MMIO_IRQ_BASE: u32 = 2;

/// Wired interrupt sources we use (source 0 is invalid): UART + virtio slots.
pub const IRQ_SOURCES: u32 = VIRTIO_MMIO_IRQ_BASE + VIRTIO_MMIO_SLOTS - 1;

/// Base address of virtio-mmio slot `n`.
pub fn virtio_mmio_base(slot: u32) -> u64 {
    VIRTIO_MMIO_BASE + u64::from(slot) * VIRTIO_MMIO_SIZE
}

/// Base address of the IMSIC page of hart `hart`.
pub fn imsic_addr(hart: u32) -> u64 {
    IMSIC_BASE + u64::from(hart) * IMSIC_STRIDE
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_do_not_overlap() {
        let mut windows = [
            (APLIC_BASE, APLIC_SIZE),
            (SERIAL_BASE, SERIAL_SIZE),
            (
                VIRTIO_MMIO_BASE,
                VIRTIO_MMIO_SIZE * u64::from(VIRTIO_MMIO_SLOTS),
            ),
            (IMSIC_BASE, IMSIC_STRIDE * 4096),
            (DRAM_BASE, DRAM_MAX_SIZE),
        ];
        windows.sort();
        for w in windows.windows(2) {
            assert!(
                w[0].0 + w[0].1 <= w[1].0,
                "{:x?} overlaps {:x?}",
                w[0],
                w[1]
            );
        }
        const { assert!(IMSIC_BASE.is_multiple_of(1 << (12 + 12))) };
        const { assert!(IRQ_SOURCES < 1024) };
    }
}
