//! The guest address space: RAM as anonymous mappings, registered with KVM as memory
//! slots, shared by the VM, its vCPUs and its devices.
//!
//! RAM is private anonymous memory unless a vhost-user backend must map it too (then one
//! memfd, mapped shared). Either may ask for transparent huge pages: the host then faults
//! guest RAM in 2 MiB at a time (one fault where there were 512, for the kernel image the
//! VMM copies in as for the guest's first touches), and KVM can map those pages whole in
//! the stage-2 tables where the architecture supports it (x86_64; riscv64 as of Linux
//! 6.12 maps 4 KiB regardless). The cost: RAM the guest touched is committed in 2 MiB
//! steps.

use std::sync::Arc;

use kvm_bindings::kvm_userspace_memory_region;
use kvm_ioctls::VmFd;
use vm_memory::bitmap::BitmapSlice;
use vm_memory::{
    FileOffset, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion, VolatileSlice,
};

/// Guest memory shared by the VM, vCPUs and devices.
pub type GuestMemory = Arc<GuestMemoryMmap<()>>;

/// Errors creating guest memory.
#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    /// mmap failed.
    #[error("allocating {size_mib} MiB of guest memory: {reason}")]
    Allocate {
        /// Requested size.
        size_mib: usize,
        /// Why.
        reason: String,
    },
    /// KVM refused the slot.
    #[error("registering guest memory slot {slot} with KVM: {source}")]
    Register {
        /// Slot number.
        slot: u32,
        /// The KVM error.
        source: kvm_ioctls::Error,
    },
}

/// How guest RAM is backed on the host.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RamBacking {
    /// One memfd mapped shared, which a vhost-user backend (virtiofsd) can map as well;
    /// private anonymous memory otherwise.
    pub shared: bool,
    /// Asks the host for transparent huge pages (`madvise(MADV_HUGEPAGE)`). A host
    /// without them (or, for shared RAM, without shmem huge pages) ignores it.
    pub transparent_huge_pages: bool,
}

/// The name guest RAM carries in the host's `/proc/<pid>/smaps`: the memfd's
/// (`memfd:dragonball-guest-ram`), or the anonymous mapping's
/// (`[anon:dragonball-guest-ram]`, where the host kernel names anonymous mappings).
const RAM_NAME: &std::ffi::CStr = c"dragonball-guest-ram";

/// Allocates RAM for `ranges` (guest address, size in bytes), backed as `backing` says,
/// and registers each range with `vm` as its own slot.
pub fn create(
    vm: &VmFd,
    ranges: &[(u64, u64)],
    backing: RamBacking,
) -> Result<GuestMemory, MemoryError> {
    let mem = map(ranges, backing)?;
    let total: u64 = ranges.iter().map(|&(_, size)| size).sum();
    for (slot, region) in mem.iter().enumerate() {
        let slot = slot as u32;
        let host = region
            .get_host_address(vm_memory::MemoryRegionAddress(0))
            .map_err(|e| MemoryError::Allocate {
                size_mib: (total >> 20) as usize,
                reason: e.to_string(),
            })?;
        let kvm_region = kvm_userspace_memory_region {
            slot,
            flags: 0,
            guest_phys_addr: region.start_addr().0,
            memory_size: region.len(),
            userspace_addr: host as u64,
        };
        // SAFETY: the mapping belongs to `mem`, which the returned Arc keeps alive for as
        // long as the VM (the VM holds it and is dropped first).
        unsafe { vm.set_user_memory_region(kvm_region) }
            .map_err(|source| MemoryError::Register { slot, source })?;
    }
    Ok(Arc::new(mem))
}

/// Maps RAM for `ranges` as `backing` says (shared RAM: one memfd, the ranges at
/// consecutive offsets), named and advised.
fn map(ranges: &[(u64, u64)], backing: RamBacking) -> Result<GuestMemoryMmap<()>, MemoryError> {
    let total: u64 = ranges.iter().map(|&(_, size)| size).sum();
    let alloc_err = |reason: String| MemoryError::Allocate {
        size_mib: (total >> 20) as usize,
        reason,
    };
    let mem = if backing.shared {
        let file = memfd(total).map_err(|e| alloc_err(format!("memfd: {e}")))?;
        let mut offset = 0;
        let mut mapped = Vec::with_capacity(ranges.len());
        for &(base, size) in ranges {
            let file = file
                .try_clone()
                .map_err(|e| alloc_err(format!("memfd: {e}")))?;
            mapped.push((
                GuestAddress(base),
                size as usize,
                Some(FileOffset::new(file, offset)),
            ));
            offset += size;
        }
        GuestMemoryMmap::<()>::from_ranges_with_files(mapped)
    } else {
        let plain: Vec<_> = ranges
            .iter()
            .map(|&(base, size)| (GuestAddress(base), size as usize))
            .collect();
        GuestMemoryMmap::<()>::from_ranges(&plain)
    }
    .map_err(|e| alloc_err(e.to_string()))?;
    for region in mem.iter() {
        let host = region
            .get_host_address(vm_memory::MemoryRegionAddress(0))
            .map_err(|e| alloc_err(e.to_string()))?;
        let len = region.len() as usize;
        if !backing.shared {
            name_anonymous(host, len);
        }
        if backing.transparent_huge_pages {
            // SAFETY: advice on a mapping `mem` owns, for its exact extent; it changes how
            // the kernel backs it, not its contents.
            // A host kernel without transparent huge pages refuses (EINVAL): RAM stays in
            // small pages, as asked for by nobody else.
            let _ = unsafe { libc::madvise(host.cast(), len, libc::MADV_HUGEPAGE) };
        }
    }
    Ok(mem)
}

/// A transparent huge page (x86_64 and riscv64 Sv39/48 PMD size).
const HUGE_PAGE: usize = 2 << 20;

/// Asks for transparent huge pages under the whole 2 MiB pages of `slice`: guest RAM the
/// VMM is about to write in full (the kernel, the initrd), where a huge page commits no
/// more memory than the copy does, but takes one host fault instead of 512 and lets KVM
/// map it whole. The advice stays inside the slice, so it never reaches past guest RAM;
/// a host without transparent huge pages ignores it.
pub fn advise_huge_pages<B: BitmapSlice>(slice: &VolatileSlice<B>) {
    let start = slice.ptr_guard().as_ptr() as usize;
    let first = start.next_multiple_of(HUGE_PAGE);
    let last = (start + slice.len()) & !(HUGE_PAGE - 1);
    if last > first {
        // SAFETY: advice on memory the slice covers; it changes how the kernel backs the
        // pages, not their contents.
        let _ = unsafe {
            libc::madvise(
                first as *mut libc::c_void,
                last - first,
                libc::MADV_HUGEPAGE,
            )
        };
    }
}

/// Names an anonymous mapping [`RAM_NAME`] in smaps; a host kernel that cannot (no
/// CONFIG_ANON_VMA_NAME) leaves it unnamed.
fn name_anonymous(host: *mut u8, len: usize) {
    let name = RAM_NAME;
    // SAFETY: names a mapping this process owns, for its exact extent; the kernel copies
    // the NUL-terminated name.
    let _ = unsafe {
        libc::prctl(
            libc::PR_SET_VMA,
            libc::PR_SET_VMA_ANON_NAME as libc::c_ulong,
            host as libc::c_ulong,
            len as libc::c_ulong,
            name.as_ptr() as libc::c_ulong,
        )
    };
}

/// An anonymous memory file of `size` bytes.
fn memfd(size: u64) -> std::io::Result<std::fs::File> {
    use std::os::fd::FromRawFd;
    // SAFETY: a valid NUL-terminated name and flags; the result is checked.
    let fd = unsafe { libc::memfd_create(RAM_NAME.as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor that nothing else owns.
    let file = unsafe { std::fs::File::from_raw_fd(fd) };
    file.set_len(size)?;
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::Bytes;

    const MIB: u64 = 1 << 20;

    /// The smaps record of the mapping that holds `host` (the kernel may have merged
    /// neighbouring anonymous mappings into one).
    fn smaps_of(host: *mut u8) -> String {
        let at = host as usize;
        let holds = |line: &str| {
            let Some((range, _)) = line.split_once(' ') else {
                return false;
            };
            let Some((start, end)) = range.split_once('-') else {
                return false;
            };
            match (
                usize::from_str_radix(start, 16),
                usize::from_str_radix(end, 16),
            ) {
                (Ok(start), Ok(end)) => start <= at && at < end,
                _ => false,
            }
        };
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let mut lines = smaps.lines().skip_while(|l| !holds(l));
        let mut record = lines.next().expect("the mapping is in smaps").to_string();
        // Its fields ("Name:   value") up to the next mapping's line.
        for line in lines.take_while(|l| {
            l.split_whitespace()
                .next()
                .is_some_and(|k| k.ends_with(':'))
        }) {
            record.push('\n');
            record.push_str(line);
        }
        record
    }

    fn host_address(mem: &GuestMemoryMmap<()>) -> *mut u8 {
        mem.iter()
            .next()
            .unwrap()
            .get_host_address(vm_memory::MemoryRegionAddress(0))
            .unwrap()
    }

    #[test]
    fn private_ram_is_zeroed_writable_and_not_a_memfd() {
        let mem = map(&[(0, 4 * MIB), (16 * MIB, 4 * MIB)], RamBacking::default()).unwrap();
        let mut byte = [0xffu8];
        mem.read_slice(&mut byte, GuestAddress(17 * MIB)).unwrap();
        assert_eq!(byte, [0]);
        mem.write_obj(0xabu8, GuestAddress(17 * MIB)).unwrap();
        assert_eq!(mem.read_obj::<u8>(GuestAddress(17 * MIB)).unwrap(), 0xab);
        assert!(mem.iter().all(|r| r.file_offset().is_none()));
        let record = smaps_of(host_address(&mem));
        assert!(!record.contains("memfd:"), "{record}");
    }

    #[test]
    fn shared_ram_is_one_memfd_at_consecutive_offsets() {
        let backing = RamBacking {
            shared: true,
            transparent_huge_pages: false,
        };
        let mem = map(&[(0, 4 * MIB), (16 * MIB, 4 * MIB)], backing).unwrap();
        let offsets: Vec<u64> = mem
            .iter()
            .map(|r| r.file_offset().unwrap().start())
            .collect();
        assert_eq!(offsets, [0, 4 * MIB]);
        let record = smaps_of(host_address(&mem));
        assert!(record.contains("memfd:dragonball-guest-ram"), "{record}");
    }

    /// Only the whole huge pages inside an advised slice are advised, and, where the host
    /// gives huge pages on advice, the write that follows is backed by them.
    #[test]
    fn an_advised_slice_gets_huge_pages_only_inside_it() {
        let mem = map(&[(0, 16 * MIB)], RamBacking::default()).unwrap();
        let region = mem.iter().next().unwrap();
        // From 3 MiB to 11 MiB: whole huge pages [4, 10) MiB at most (the mapping's own
        // alignment decides where they fall).
        let slice = region
            .get_slice(vm_memory::MemoryRegionAddress(3 * MIB), (8 * MIB) as usize)
            .unwrap();
        advise_huge_pages(&slice);
        slice
            .write_slice(&vec![1u8; (8 * MIB) as usize], 0)
            .unwrap();
        let mode = std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled")
            .unwrap_or_default();
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let base = host_address(&mem) as usize;
        // Sum the huge pages of every mapping inside guest RAM (advice splits it).
        let mut huge_kib = 0u64;
        let mut inside = false;
        for line in smaps.lines() {
            if let Some((range, _)) = line.split_once(' ')
                && let Some((a, b)) = range.split_once('-')
                && let (Ok(a), Ok(b)) = (usize::from_str_radix(a, 16), usize::from_str_radix(b, 16))
            {
                inside = a >= base && b <= base + (16 * MIB) as usize;
                continue;
            }
            if inside && let Some(v) = line.strip_prefix("AnonHugePages:") {
                huge_kib += v
                    .trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse::<u64>()
                    .unwrap();
            }
        }
        // 8 MiB unaligned holds at least 3 whole huge pages, at most 4.
        assert!(huge_kib <= 4 * 2048, "{huge_kib} kB");
        if mode.contains("[madvise]") {
            assert!(huge_kib >= 3 * 2048, "{huge_kib} kB of huge pages");
        }
        assert_eq!(mem.read_obj::<u8>(GuestAddress(3 * MIB)).unwrap(), 1);
        assert_eq!(mem.read_obj::<u8>(GuestAddress(11 * MIB - 1)).unwrap(), 1);
        assert_eq!(mem.read_obj::<u8>(GuestAddress(11 * MIB)).unwrap(), 0);
    }

    /// Where the host has transparent huge pages for what asks (madvise or always),
    /// advised guest RAM gets them on first touch; unadvised RAM does not in madvise mode.
    #[test]
    fn advised_private_ram_is_faulted_in_huge_pages_where_the_host_has_them() {
        let mode = std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled")
            .unwrap_or_default();
        let touch_and_measure = |thp: bool| {
            let backing = RamBacking {
                shared: false,
                transparent_huge_pages: thp,
            };
            let mem = map(&[(0, 16 * MIB)], backing).unwrap();
            for mib in 4..12 {
                mem.write_obj(1u8, GuestAddress(mib * MIB)).unwrap();
            }
            let record = smaps_of(host_address(&mem));
            let huge_kib: u64 = record
                .lines()
                .find_map(|l| l.strip_prefix("AnonHugePages:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
                .unwrap_or(0);
            (huge_kib, record)
        };
        if mode.contains("[madvise]") || mode.contains("[always]") {
            let (huge_kib, record) = touch_and_measure(true);
            assert!(huge_kib >= 2048, "no huge page after advice: {record}");
        }
        if mode.contains("[madvise]") {
            let (huge_kib, record) = touch_and_measure(false);
            assert_eq!(huge_kib, 0, "huge pages without advice: {record}");
        }
        if !mode.contains("[madvise]") && !mode.contains("[always]") {
            // The advice is refused or ignored, and RAM still works.
            let (huge_kib, _) = touch_and_measure(true);
            assert_eq!(huge_kib, 0);
        }
    }
}
