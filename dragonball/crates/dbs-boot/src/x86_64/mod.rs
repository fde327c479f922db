//! x86_64 boot: the guest layout and the PVH boot information (Xen `hvm_start_info`,
//! module list for the initrd, E820-style memory map), as the kernel's PVH entry reads it.

pub mod layout;
pub mod mptable;
pub mod pvh;
