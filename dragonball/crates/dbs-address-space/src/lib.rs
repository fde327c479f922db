//! The guest address space: RAM as anonymous mappings, registered with KVM as memory
//! slots, shared by the VM, its vCPUs and its devices.

use std::sync::Arc;

use kvm_bindings::kvm_userspace_memory_region;
use kvm_ioctls::VmFd;
use vm_memory::{FileOffset, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};

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

/// Allocates RAM for `ranges` (guest address, size in bytes) and registers each range
/// with `vm` as its own slot. All ranges share one memfd, at consecutive offsets.
pub fn create(vm: &VmFd, ranges: &[(u64, u64)]) -> Result<GuestMemory, MemoryError> {
    let total: u64 = ranges.iter().map(|&(_, size)| size).sum();
    let alloc_err = |reason: String| MemoryError::Allocate {
        size_mib: (total >> 20) as usize,
        reason,
    };
    // A memfd, mapped shared: vhost-user backends (virtiofsd) map the same pages.
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
    let mem = GuestMemoryMmap::<()>::from_ranges_with_files(mapped)
        .map_err(|e| alloc_err(e.to_string()))?;
    for (slot, region) in mem.iter().enumerate() {
        let slot = slot as u32;
        let host = region
            .get_host_address(vm_memory::MemoryRegionAddress(0))
            .map_err(|e| alloc_err(e.to_string()))?;
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

/// An anonymous memory file of `size` bytes.
fn memfd(size: u64) -> std::io::Result<std::fs::File> {
    use std::os::fd::FromRawFd;
    // SAFETY: a valid NUL-terminated name and flags; the result is checked.
    let fd = unsafe { libc::memfd_create(c"dragonball-guest-ram".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor that nothing else owns.
    let file = unsafe { std::fs::File::from_raw_fd(fd) };
    file.set_len(size)?;
    Ok(file)
}
