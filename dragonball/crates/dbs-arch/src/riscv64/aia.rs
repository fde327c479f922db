//! The in-kernel AIA (KVM_DEV_TYPE_RISCV_AIA): per-hart IMSICs and an MSI-mode APLIC.
//!
//! Order the kernel enforces: every vCPU created first, then the device, its config
//! (sources, hart bits, APLIC and IMSIC addresses), then INIT; irqfds only after INIT.

use kvm_bindings::{
    KVM_DEV_RISCV_AIA_ADDR_APLIC, KVM_DEV_RISCV_AIA_CONFIG_HART_BITS, KVM_DEV_RISCV_AIA_CONFIG_IDS,
    KVM_DEV_RISCV_AIA_CONFIG_MODE, KVM_DEV_RISCV_AIA_CONFIG_SRCS, KVM_DEV_RISCV_AIA_CTRL_INIT,
    KVM_DEV_RISCV_AIA_GRP_ADDR, KVM_DEV_RISCV_AIA_GRP_CONFIG, KVM_DEV_RISCV_AIA_GRP_CTRL,
    kvm_create_device, kvm_device_attr, kvm_device_type_KVM_DEV_TYPE_RISCV_AIA,
};
use kvm_ioctls::{DeviceFd, VmFd};

/// Where the AIA lives and how big it is.
#[derive(Debug, Clone, Copy)]
pub struct AiaConfig {
    /// Number of harts (all vCPUs must exist already).
    pub harts: u32,
    /// Wired interrupt sources (1..=sources).
    pub sources: u32,
    /// APLIC base address.
    pub aplic_addr: u64,
    /// IMSIC page of hart i is `imsic_base + i * imsic_stride`.
    pub imsic_base: u64,
    /// Distance between IMSIC pages.
    pub imsic_stride: u64,
}

/// Errors setting up the AIA.
#[derive(Debug, thiserror::Error)]
pub enum AiaError {
    /// The host kernel has no in-kernel AIA (no Ssaia on the host, or KVM too old).
    #[error(
        "the host KVM has no in-kernel AIA irqchip (KVM_CREATE_DEVICE RISCV_AIA: {0}); the userspace PLIC is used instead"
    )]
    Unavailable(kvm_ioctls::Error),
    /// A configuration step failed.
    #[error("configuring the in-kernel AIA ({step}): {source}")]
    Config {
        /// What was being set.
        step: &'static str,
        /// The KVM error.
        source: kvm_ioctls::Error,
    },
}

/// An initialised in-kernel AIA.
#[derive(Debug)]
pub struct Aia {
    _fd: DeviceFd,
    /// Interrupt identities per IMSIC file (goes into the FDT `riscv,num-ids`).
    pub num_ids: u32,
    /// KVM's mode: 0 emul, 1 hwaccel, 2 auto.
    pub mode: u32,
}

fn set(
    fd: &DeviceFd,
    group: u32,
    attr: u64,
    addr: u64,
    step: &'static str,
) -> Result<(), AiaError> {
    fd.set_device_attr(&kvm_device_attr {
        flags: 0,
        group,
        attr,
        addr,
    })
    .map_err(|source| AiaError::Config { step, source })
}

fn get_config(fd: &DeviceFd, attr: u32, step: &'static str) -> Result<u32, AiaError> {
    let mut value = 0u32;
    let mut da = kvm_device_attr {
        flags: 0,
        group: KVM_DEV_RISCV_AIA_GRP_CONFIG,
        attr: u64::from(attr),
        addr: &mut value as *mut u32 as u64,
    };
    // SAFETY: `addr` points at a live u32, the size of every AIA config attribute.
    unsafe { fd.get_device_attr(&mut da) }.map_err(|source| AiaError::Config { step, source })?;
    Ok(value)
}

/// Whether the host offers the in-kernel AIA, without creating it.
pub fn available(vm: &VmFd) -> bool {
    let mut dev = kvm_create_device {
        type_: kvm_device_type_KVM_DEV_TYPE_RISCV_AIA,
        fd: 0,
        flags: kvm_bindings::KVM_CREATE_DEVICE_TEST,
    };
    vm.create_device(&mut dev).is_ok()
}

/// Smallest number of bits that indexes `harts` harts.
pub fn hart_bits(harts: u32) -> u32 {
    32 - harts.saturating_sub(1).leading_zeros()
}

impl Aia {
    /// Creates, configures and initialises the AIA.
    pub fn create(vm: &VmFd, cfg: &AiaConfig) -> Result<Aia, AiaError> {
        let mut dev = kvm_create_device {
            type_: kvm_device_type_KVM_DEV_TYPE_RISCV_AIA,
            fd: 0,
            flags: 0,
        };
        let fd = vm.create_device(&mut dev).map_err(AiaError::Unavailable)?;
        let num_ids = get_config(&fd, KVM_DEV_RISCV_AIA_CONFIG_IDS, "read ids")?;
        let sources = cfg.sources;
        set(
            &fd,
            KVM_DEV_RISCV_AIA_GRP_CONFIG,
            u64::from(KVM_DEV_RISCV_AIA_CONFIG_SRCS),
            &sources as *const u32 as u64,
            "sources",
        )?;
        let bits = hart_bits(cfg.harts);
        set(
            &fd,
            KVM_DEV_RISCV_AIA_GRP_CONFIG,
            u64::from(KVM_DEV_RISCV_AIA_CONFIG_HART_BITS),
            &bits as *const u32 as u64,
            "hart bits",
        )?;
        set(
            &fd,
            KVM_DEV_RISCV_AIA_GRP_ADDR,
            u64::from(KVM_DEV_RISCV_AIA_ADDR_APLIC),
            &cfg.aplic_addr as *const u64 as u64,
            "APLIC address",
        )?;
        for hart in 0..cfg.harts {
            let addr = cfg.imsic_base + u64::from(hart) * cfg.imsic_stride;
            set(
                &fd,
                KVM_DEV_RISCV_AIA_GRP_ADDR,
                1 + u64::from(hart),
                &addr as *const u64 as u64,
                "IMSIC address",
            )?;
        }
        set(
            &fd,
            KVM_DEV_RISCV_AIA_GRP_CTRL,
            u64::from(KVM_DEV_RISCV_AIA_CTRL_INIT),
            0,
            "init",
        )?;
        let mode = get_config(&fd, KVM_DEV_RISCV_AIA_CONFIG_MODE, "read mode")?;
        Ok(Aia {
            _fd: fd,
            num_ids,
            mode,
        })
    }
}
