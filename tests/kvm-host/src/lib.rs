//! KVM test hosts.
//!
//! This machine's `/dev/kvm` cannot run stock guests, so every test that needs KVM runs
//! inside an emulated "L1" Linux (QEMU TCG with the RISC-V H extension + AIA, or x86_64
//! with emulated AMD SVM) that has a working `/dev/kvm`. On a machine with real KVM the
//! same command runs natively instead. [`harness`] is the host side, the
//! `kvm-host-init` binary is the L1's PID 1, and [`job`] is the contract between them.

pub mod arch;
pub mod artifacts;
pub mod harness;
pub mod job;
pub use kata_netcfg as netcfg;
pub mod pid1;
pub mod smoke;
pub mod testing;

pub use arch::Arch;
pub use harness::{HarnessError, Invocation, Mode, Outcome, Share};
