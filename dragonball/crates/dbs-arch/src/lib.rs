//! Architecture support for Dragonball vCPUs and interrupt controllers.
//!
//! The data parts (register ids, ISA names, SBI call decoding) compile on every host and
//! are unit-tested anywhere; the parts that issue KVM ioctls only exist when building for
//! the architecture itself.

pub mod riscv64;
#[cfg(target_arch = "x86_64")]
pub mod x86_64;
