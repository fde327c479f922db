//! Boot support for Dragonball guests: the guest physical layout, kernel image headers
//! and the boot information handed to the kernel.
//!
//! Everything here is plain data and byte formats, compiled for every host so it can be
//! unit-tested anywhere; the KVM side lives in the `dragonball` arch modules.

pub mod riscv64;
pub mod x86_64;
