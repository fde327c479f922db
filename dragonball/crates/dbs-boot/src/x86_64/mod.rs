//! x86_64 boot: the guest layout, the PVH boot information (Xen `hvm_start_info`, module
//! list for the initrd, E820-style memory map) as the kernel's PVH entry reads it, the MP
//! table (for guests booted with `acpi=off`), and the ACPI tables a guest powers off
//! through.

pub mod acpi;
pub mod layout;
pub mod mptable;
pub mod pvh;
