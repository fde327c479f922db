//! The architectures a KVM test host can be built for.

use std::fmt;
use std::str::FromStr;

/// A guest/host CPU architecture.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Arch {
    /// RISC-V 64-bit (the mission's architecture).
    Riscv64,
    /// x86_64.
    X86_64,
}

impl Arch {
    /// Every supported architecture.
    pub const ALL: [Arch; 2] = [Arch::Riscv64, Arch::X86_64];

    /// The name used in paths, make variables and Rust target triples.
    pub fn name(self) -> &'static str {
        match self {
            Arch::Riscv64 => "riscv64",
            Arch::X86_64 => "x86_64",
        }
    }

    /// The architecture this program was compiled for, if supported.
    pub fn native() -> Option<Arch> {
        match std::env::consts::ARCH {
            "riscv64" => Some(Arch::Riscv64),
            "x86_64" => Some(Arch::X86_64),
            _ => None,
        }
    }

    /// The Rust target triple of static binaries for this architecture.
    pub fn static_target(self) -> &'static str {
        match self {
            Arch::Riscv64 => "riscv64gc-unknown-linux-gnu",
            Arch::X86_64 => "x86_64-unknown-linux-musl",
        }
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Arch {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "riscv64" => Ok(Arch::Riscv64),
            "x86_64" | "amd64" => Ok(Arch::X86_64),
            other => Err(format!(
                "unknown architecture '{other}' (expected riscv64 or x86_64)"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for a in Arch::ALL {
            assert_eq!(a.name().parse::<Arch>().unwrap(), a);
        }
        assert!("arm64".parse::<Arch>().unwrap_err().contains("arm64"));
    }
}
