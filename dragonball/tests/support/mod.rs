//! Shared helpers of the dragonball integration tests.

pub mod harness;

#[cfg(target_arch = "riscv64")]
pub mod rv_guest;
#[cfg(target_arch = "x86_64")]
pub mod x86_guest;
