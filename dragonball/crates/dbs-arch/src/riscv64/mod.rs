//! riscv64: KVM ONE_REG ids, guest ISA discovery, SBI calls and the in-kernel AIA.

#[cfg(target_arch = "riscv64")]
pub mod aia;
pub mod isa;
pub mod regs;
pub mod sbi;
#[cfg(target_arch = "riscv64")]
pub mod vcpu;
