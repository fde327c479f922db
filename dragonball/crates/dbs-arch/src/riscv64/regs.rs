//! KVM ONE_REG ids for riscv64 (Linux uapi asm/kvm.h): `KVM_REG_RISCV | size | type | index`.

const KVM_REG_RISCV: u64 = 0x8000_0000_0000_0000;
const KVM_REG_SIZE_U64: u64 = 0x0030_0000_0000_0000;
const TYPE_CONFIG: u64 = 0x0100_0000;
const TYPE_CORE: u64 = 0x0200_0000;
const TYPE_TIMER: u64 = 0x0400_0000;
const TYPE_ISA_EXT: u64 = 0x0700_0000;
const TYPE_SBI_EXT: u64 = 0x0800_0000;

const fn reg(kind: u64, index: u64) -> u64 {
    KVM_REG_RISCV | KVM_REG_SIZE_U64 | kind | index
}

/// `config.isa`: single-letter extensions, bit n = letter 'a' + n.
pub const CONFIG_ISA: u64 = reg(TYPE_CONFIG, 0);
/// `config.zicbom_block_size`: the cache-block management block size in bytes.
pub const CONFIG_ZICBOM_BLOCK_SIZE: u64 = reg(TYPE_CONFIG, 1);
/// `config.zicboz_block_size`: the cache-block zero block size in bytes.
pub const CONFIG_ZICBOZ_BLOCK_SIZE: u64 = reg(TYPE_CONFIG, 5);
/// `config.satp_mode`: 8 = sv39, 9 = sv48, 10 = sv57.
pub const CONFIG_SATP_MODE: u64 = reg(TYPE_CONFIG, 6);
/// `core.pc`.
pub const CORE_PC: u64 = reg(TYPE_CORE, 0);
/// `core.a0` (index 10 in `user_regs_struct`).
pub const CORE_A0: u64 = reg(TYPE_CORE, 10);
/// `core.a1`.
pub const CORE_A1: u64 = reg(TYPE_CORE, 11);
/// `timer.frequency` (read-only): the FDT `timebase-frequency`.
pub const TIMER_FREQUENCY: u64 = reg(TYPE_TIMER, 0);

/// The id of ISA extension register `ext` (KVM_RISCV_ISA_EXT_*).
pub const fn isa_ext(ext: u64) -> u64 {
    reg(TYPE_ISA_EXT, ext)
}

/// The id of SBI extension register `ext` (KVM_RISCV_SBI_EXT_*).
pub const fn sbi_ext(ext: u64) -> u64 {
    reg(TYPE_SBI_EXT, ext)
}

/// KVM_RISCV_SBI_EXT_DBCN: the debug console, disabled by default in KVM.
pub const SBI_EXT_DBCN: u64 = 9;

/// `mmu-type` for a `config.satp_mode` value.
pub fn mmu_type(satp_mode: u64) -> Option<&'static str> {
    match satp_mode {
        8 => Some("riscv,sv39"),
        9 => Some("riscv,sv48"),
        10 => Some("riscv,sv57"),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_match_the_uapi() {
        assert_eq!(CORE_PC, 0x8030_0000_0200_0000);
        assert_eq!(CORE_A0, 0x8030_0000_0200_000a);
        assert_eq!(CORE_A1, 0x8030_0000_0200_000b);
        assert_eq!(TIMER_FREQUENCY, 0x8030_0000_0400_0000);
        assert_eq!(CONFIG_SATP_MODE, 0x8030_0000_0100_0006);
        assert_eq!(CONFIG_ZICBOM_BLOCK_SIZE, 0x8030_0000_0100_0001);
        assert_eq!(CONFIG_ZICBOZ_BLOCK_SIZE, 0x8030_0000_0100_0005);
        assert_eq!(sbi_ext(SBI_EXT_DBCN), 0x8030_0000_0800_0009);
        assert_eq!(isa_ext(14), 0x8030_0000_0700_000e);
        assert_eq!(mmu_type(10), Some("riscv,sv57"));
    }
}
