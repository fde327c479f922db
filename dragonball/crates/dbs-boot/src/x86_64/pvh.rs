//! The PVH boot information block, built as plain bytes (little endian, the layouts of
//! Xen's `hvm_start_info`, `hvm_modlist_entry` and `hvm_memmap_table_entry`).

use super::layout;

/// `XEN_HVM_START_MAGIC_VALUE`.
pub const START_MAGIC: u32 = 0x336e_c578;
const E820_RAM: u32 = 1;

/// What goes where in guest memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PvhBlobs {
    /// hvm_start_info at [`layout::START_INFO_ADDR`].
    pub start_info: Vec<u8>,
    /// Module list at [`layout::MODLIST_ADDR`] (empty without an initrd).
    pub modlist: Vec<u8>,
    /// Memory map at [`layout::MEMMAP_ADDR`].
    pub memmap: Vec<u8>,
}

/// Builds the PVH blobs for `mem_size` bytes of RAM at 0, an optional initrd and the
/// ACPI RSDP address (0 for none).
pub fn build(mem_size: u64, initrd: Option<(u64, u64)>, rsdp: u64) -> PvhBlobs {
    let ram = layout::e820_ram(mem_size);
    let mut memmap = Vec::new();
    for &(addr, size) in &ram {
        memmap.extend_from_slice(&addr.to_le_bytes());
        memmap.extend_from_slice(&size.to_le_bytes());
        memmap.extend_from_slice(&E820_RAM.to_le_bytes());
        memmap.extend_from_slice(&0u32.to_le_bytes());
    }
    let mut modlist = Vec::new();
    if let Some((start, size)) = initrd {
        modlist.extend_from_slice(&start.to_le_bytes());
        modlist.extend_from_slice(&size.to_le_bytes());
        modlist.extend_from_slice(&0u64.to_le_bytes()); // cmdline_paddr
        modlist.extend_from_slice(&0u64.to_le_bytes()); // reserved
    }
    let mut si = Vec::with_capacity(56);
    si.extend_from_slice(&START_MAGIC.to_le_bytes());
    si.extend_from_slice(&1u32.to_le_bytes()); // version
    si.extend_from_slice(&0u32.to_le_bytes()); // flags
    si.extend_from_slice(&u32::from(initrd.is_some()).to_le_bytes()); // nr_modules
    si.extend_from_slice(&layout::MODLIST_ADDR.to_le_bytes());
    si.extend_from_slice(&layout::CMDLINE_ADDR.to_le_bytes());
    si.extend_from_slice(&rsdp.to_le_bytes()); // rsdp_paddr
    si.extend_from_slice(&layout::MEMMAP_ADDR.to_le_bytes());
    si.extend_from_slice(&(ram.len() as u32).to_le_bytes());
    si.extend_from_slice(&0u32.to_le_bytes());
    PvhBlobs {
        start_info: si,
        modlist,
        memmap,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_matches_the_xen_structs() {
        let b = build(256 << 20, Some((0x0f00_0000, 0x1000)), 0xe_0000);
        assert_eq!(b.start_info.len(), 56);
        assert_eq!(&b.start_info[0..4], &START_MAGIC.to_le_bytes());
        assert_eq!(
            u64::from_le_bytes(b.start_info[32..40].try_into().unwrap()),
            0xe_0000
        );
        assert_eq!(b.modlist.len(), 32);
        assert_eq!(b.memmap.len(), 48);
        // Second RAM range: 1 MiB up to the end of RAM.
        assert_eq!(
            u64::from_le_bytes(b.memmap[24..32].try_into().unwrap()),
            0x10_0000
        );
        assert_eq!(
            u64::from_le_bytes(b.memmap[32..40].try_into().unwrap()),
            (256 << 20) - 0x10_0000
        );
        assert!(build(64 << 20, None, 0).modlist.is_empty());
        // Above 3 GiB, a third range starts at 4 GiB.
        let big = build(5 << 30, None, 0);
        assert_eq!(big.memmap.len(), 72);
        assert_eq!(
            u32::from_le_bytes(big.start_info[48..52].try_into().unwrap()),
            3
        );
        assert_eq!(
            u64::from_le_bytes(big.memmap[48..56].try_into().unwrap()),
            4 << 30
        );
    }
}
