//! The architecture seam: everything that differs between riscv64 and x86_64 sits in the
//! sibling modules below, which export the same names. Shared code has no other
//! `target_arch` conditions.

#[cfg(target_arch = "riscv64")]
mod riscv64;
#[cfg(target_arch = "riscv64")]
pub use riscv64::*;

#[cfg(target_arch = "x86_64")]
mod x86_64;
#[cfg(target_arch = "x86_64")]
pub use x86_64::*;
