//! Loading an x86_64 guest kernel: an ELF `vmlinux` entered through its PVH note, or a
//! `bzImage` entered through the Linux 32-bit boot protocol with a zero page.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use dbs_address_space::GuestMemory;
use dbs_boot::x86_64::{acpi, layout};
use linux_loader::loader::bootparam::{boot_e820_entry, boot_params, setup_header};
use linux_loader::loader::bzimage::BzImage;
use linux_loader::loader::elf::{Elf, PvhBootCapability};
use linux_loader::loader::{Error as LoaderError, KernelLoader, bzimage};
use vm_memory::GuestAddress;

use crate::sparse_image::SparseImage;

/// `type_of_loader` for a boot loader without an assigned id.
const LOADER_OTHER: u8 = 0xff;
/// Boot protocol versions that added the fields we rely on.
const PROTOCOL_CMDLINE_SIZE: u16 = 0x206;
const PROTOCOL_INIT_SIZE: u16 = 0x20a;
/// Longest command line before boot protocol 2.06 said otherwise.
const OLD_CMDLINE_MAX: usize = 255;

/// How the vCPU enters the kernel.
pub enum Entry {
    /// PVH: 32-bit entry point, `hvm_start_info` in ebx.
    Pvh {
        /// The PVH entry address.
        addr: u64,
    },
    /// Linux boot protocol: 32-bit entry at `code32_start`, the zero page in esi.
    BzImage {
        /// The 32-bit entry address.
        addr: u64,
        /// The image's setup header, copied into the zero page.
        header: Box<setup_header>,
    },
}

/// A kernel placed in guest memory.
pub struct LoadedKernel {
    /// Where and how to enter it.
    pub entry: Entry,
    /// First byte past what the kernel needs (a bzImage decompresses beyond its image).
    pub end: u64,
}

impl LoadedKernel {
    /// The longest command line (without its NUL) this kernel accepts.
    pub fn cmdline_max(&self) -> usize {
        match &self.entry {
            Entry::Pvh { .. } => layout::CMDLINE_MAX - 1,
            Entry::BzImage { header, .. } if header.version >= PROTOCOL_CMDLINE_SIZE => {
                (header.cmdline_size as usize).min(layout::CMDLINE_MAX - 1)
            }
            Entry::BzImage { .. } => OLD_CMDLINE_MAX,
        }
    }

    /// The highest address (exclusive) the initrd may reach.
    pub fn initrd_limit(&self, mem_size: u64) -> u64 {
        let ram_end = layout::low_ram_end(mem_size);
        match &self.entry {
            Entry::Pvh { .. } => ram_end,
            Entry::BzImage { header, .. } => ram_end.min(u64::from(header.initrd_addr_max) + 1),
        }
    }
}

/// Loads the kernel at `path`, telling the two formats apart by their magic.
pub fn load(memory: &GuestMemory, path: &Path) -> Result<LoadedKernel, String> {
    let mut file = File::open(path).map_err(|e| e.to_string())?;
    let mut magic = [0u8; 4];
    file.read_exact(&mut magic)
        .map_err(|e| format!("reading its header: {e}"))?;
    file.seek(SeekFrom::Start(0)).map_err(|e| e.to_string())?;
    if magic == *b"\x7fELF" {
        load_elf(memory, &mut file)
    } else {
        load_bzimage(memory, &mut file)
    }
}

fn load_elf(memory: &GuestMemory, file: &mut File) -> Result<LoadedKernel, String> {
    // Into the VM's fresh (zero) RAM: the zero padding after the text is skipped.
    let loaded = Elf::load(
        memory.as_ref(),
        None,
        &mut SparseImage::new(file),
        Some(GuestAddress(layout::HIMEM_START)),
    )
    .map_err(|e| format!("loading the ELF vmlinux: {e}"))?;
    match loaded.pvh_boot_cap {
        PvhBootCapability::PvhEntryPresent(addr) => Ok(LoadedKernel {
            entry: Entry::Pvh { addr: addr.0 },
            end: loaded.kernel_end,
        }),
        _ => Err("the ELF vmlinux has no PVH entry point (build it with CONFIG_PVH=y)".into()),
    }
}

fn load_bzimage(memory: &GuestMemory, file: &mut File) -> Result<LoadedKernel, String> {
    let loaded = BzImage::load(
        memory.as_ref(),
        None,
        file,
        Some(GuestAddress(layout::HIMEM_START)),
    )
    .map_err(|e| match e {
        LoaderError::Bzimage(bzimage::Error::InvalidBzImage) => {
            "neither an ELF vmlinux nor a bzImage (no boot protocol header)".to_string()
        }
        other => format!("loading the bzImage: {other}"),
    })?;
    let header = loaded
        .setup_header
        .ok_or("the bzImage has no setup header")?;
    let mut end = loaded.kernel_end;
    if header.version >= PROTOCOL_INIT_SIZE {
        // The decompressor needs init_size bytes from the preferred load address.
        let pref = header.pref_address;
        end = end.max(pref.saturating_add(u64::from(header.init_size)));
    }
    Ok(LoadedKernel {
        entry: Entry::BzImage {
            addr: loaded.kernel_load.0,
            header: Box::new(header),
        },
        end,
    })
}

/// The zero page for a bzImage boot: its setup header plus what the loader fills in
/// (command line, initrd, memory map, the ACPI RSDP).
pub fn zero_page(
    header: &setup_header,
    cmdline_len: usize,
    initrd: Option<(u64, u64)>,
    mem_size: u64,
) -> boot_params {
    let mut params = boot_params {
        hdr: *header,
        ..Default::default()
    };
    params.hdr.type_of_loader = LOADER_OTHER;
    params.hdr.cmd_line_ptr = layout::CMDLINE_ADDR as u32;
    params.hdr.cmdline_size = cmdline_len as u32;
    if let Some((addr, size)) = initrd {
        // Both fit in 32 bits: the initrd lies below initrd_addr_max.
        params.hdr.ramdisk_image = addr as u32;
        params.hdr.ramdisk_size = size as u32;
    }
    let ram = layout::e820_ram(mem_size);
    for (slot, &(addr, size)) in params.e820_table.iter_mut().zip(&ram) {
        *slot = boot_e820_entry {
            addr,
            size,
            r#type: 1, // E820_TYPE_RAM
        };
    }
    params.e820_entries = ram.len() as u8;
    params.acpi_rsdp_addr = acpi::TABLES_ADDR;
    params
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_page_carries_cmdline_initrd_and_the_memory_map() {
        let header = setup_header {
            version: 0x20f,
            initrd_addr_max: 0x7fff_ffff,
            ..Default::default()
        };
        let p = zero_page(&header, 42, Some((0x7000_0000, 0x1234)), 5 << 30);
        let hdr = p.hdr;
        assert_eq!(hdr.type_of_loader, LOADER_OTHER);
        assert_eq!({ hdr.cmd_line_ptr }, layout::CMDLINE_ADDR as u32);
        assert_eq!({ hdr.cmdline_size }, 42);
        assert_eq!({ hdr.ramdisk_image }, 0x7000_0000);
        assert_eq!({ hdr.ramdisk_size }, 0x1234);
        assert_eq!(p.e820_entries, 3);
        let third = p.e820_table[2];
        assert_eq!(({ third.addr }, { third.size }), (4 << 30, 2 << 30));
    }

    #[test]
    fn initrd_stays_below_the_kernels_limit_and_the_hole() {
        let bz = |max: u32| LoadedKernel {
            entry: Entry::BzImage {
                addr: 0x10_0000,
                header: Box::new(setup_header {
                    version: 0x20f,
                    initrd_addr_max: max,
                    cmdline_size: 2047,
                    ..Default::default()
                }),
            },
            end: 0x200_0000,
        };
        assert_eq!(bz(0x7fff_ffff).initrd_limit(5 << 30), 0x8000_0000);
        assert_eq!(bz(0x7fff_ffff).initrd_limit(256 << 20), 256 << 20);
        assert_eq!(bz(0x7fff_ffff).cmdline_max(), 2047);
        let pvh = LoadedKernel {
            entry: Entry::Pvh { addr: 0x100_0000 },
            end: 0x200_0000,
        };
        assert_eq!(pvh.initrd_limit(5 << 30), 3 << 30);
    }
}
