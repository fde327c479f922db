//! riscv64 vCPU setup through ONE_REG: boot registers, SBI extensions, ISA discovery.

use kvm_ioctls::VcpuFd;

use super::{isa, regs};

/// A ONE_REG access that failed, naming the register.
#[derive(Debug, thiserror::Error)]
#[error("vCPU register {name} ({id:#x}): {source}")]
pub struct RegError {
    /// Human name of the register.
    pub name: &'static str,
    /// ONE_REG id.
    pub id: u64,
    /// The KVM error.
    pub source: kvm_ioctls::Error,
}

/// Reads a 64-bit ONE_REG.
pub fn get_u64(vcpu: &VcpuFd, id: u64, name: &'static str) -> Result<u64, RegError> {
    let mut buf = [0u8; 8];
    vcpu.get_one_reg(id, &mut buf)
        .map_err(|source| RegError { name, id, source })?;
    Ok(u64::from_le_bytes(buf))
}

/// Writes a 64-bit ONE_REG.
pub fn set_u64(vcpu: &VcpuFd, id: u64, value: u64, name: &'static str) -> Result<(), RegError> {
    vcpu.set_one_reg(id, &value.to_le_bytes())
        .map(|_| ())
        .map_err(|source| RegError { name, id, source })
}

/// Boot state of a hart: pc = kernel entry, a0 = hart id, a1 = FDT address. KVM's reset
/// state already has S-mode and satp = 0.
pub fn set_boot_regs(vcpu: &VcpuFd, hart: u64, entry: u64, fdt: u64) -> Result<(), RegError> {
    set_u64(vcpu, regs::CORE_PC, entry, "pc")?;
    set_u64(vcpu, regs::CORE_A0, hart, "a0")?;
    set_u64(vcpu, regs::CORE_A1, fdt, "a1")
}

/// Enables the SBI debug console (DBCN), which KVM forwards to us; must happen before the
/// vCPU first runs.
pub fn enable_dbcn(vcpu: &VcpuFd) -> Result<(), RegError> {
    set_u64(vcpu, regs::sbi_ext(regs::SBI_EXT_DBCN), 1, "sbi.dbcn")
}

/// The guest ISA as KVM reports it for this vCPU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestIsa {
    /// Single letters, e.g. "imafdc".
    pub letters: String,
    /// Multi-letter extensions KVM enables, e.g. ["sstc", "zicsr"].
    pub extensions: Vec<String>,
    /// `mmu-type` from satp_mode.
    pub mmu_type: Option<&'static str>,
    /// Zicbom's block size in bytes, where the guest has Zicbom (`riscv,cbom-block-size`:
    /// without it Linux turns the extension off, with an error on the console).
    pub cbom_block_size: Option<u64>,
    /// Zicboz's block size in bytes, where the guest has Zicboz (`riscv,cboz-block-size`).
    pub cboz_block_size: Option<u64>,
}

/// Reads the ISA from `config.isa` and every known ISA_EXT register. `ssaia` is left out
/// when the guest gets no in-kernel AIA.
pub fn discover_isa(vcpu: &VcpuFd, with_aia: bool) -> Result<GuestIsa, RegError> {
    let bitmap = get_u64(vcpu, regs::CONFIG_ISA, "config.isa")?;
    let mut extensions = Vec::new();
    for (id, name) in isa::known_extension_ids() {
        if id == isa::EXT_SSAIA && !with_aia {
            continue;
        }
        // ENOENT/EINVAL: the host kernel does not know this extension.
        if let Ok(1) = get_u64(vcpu, regs::isa_ext(id), "isa_ext") {
            extensions.push(name.to_string());
        }
    }
    let satp = get_u64(vcpu, regs::CONFIG_SATP_MODE, "config.satp_mode").unwrap_or(0);
    let block_size = |ext: &str, id: u64, name: &'static str| {
        extensions
            .iter()
            .any(|e| e == ext)
            .then(|| get_u64(vcpu, id, name).ok())
            .flatten()
            .filter(|&size| size > 0)
    };
    let cbom_block_size = block_size(
        "zicbom",
        regs::CONFIG_ZICBOM_BLOCK_SIZE,
        "config.zicbom_block_size",
    );
    let cboz_block_size = block_size(
        "zicboz",
        regs::CONFIG_ZICBOZ_BLOCK_SIZE,
        "config.zicboz_block_size",
    );
    Ok(GuestIsa {
        letters: isa::letters_from_bitmap(bitmap),
        extensions,
        mmu_type: regs::mmu_type(satp),
        cbom_block_size,
        cboz_block_size,
    })
}

/// The guest timer frequency (FDT `timebase-frequency`).
pub fn timer_frequency(vcpu: &VcpuFd) -> Result<u64, RegError> {
    get_u64(vcpu, regs::TIMER_FREQUENCY, "timer.frequency")
}
