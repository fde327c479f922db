//! x86_64 vCPU setup: CPUID (with the APIC id), MSRs, FPU, LAPIC wiring,
//! and the 32-bit protected-mode register state the PVH entry and the Linux 32-bit boot
//! protocol expect.

use kvm_bindings::{
    CpuId, KVM_MAX_CPUID_ENTRIES, Msrs, kvm_fpu, kvm_msr_entry, kvm_regs, kvm_segment,
};
use kvm_ioctls::{Kvm, VcpuFd};

/// A vCPU setup step that failed.
#[derive(Debug, thiserror::Error)]
#[error("vCPU {step}: {source}")]
pub struct SetupError {
    /// What was being set.
    pub step: &'static str,
    /// The KVM error.
    pub source: kvm_ioctls::Error,
}

fn step(step: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> SetupError {
    move |source| SetupError { step, source }
}

/// CPUID leaf 1 ECX: the local APIC's TSC-deadline timer mode.
const LEAF1_ECX_TSC_DEADLINE: u32 = 1 << 24;
/// CPUID leaf 1 ECX: running under a hypervisor.
const LEAF1_ECX_HYPERVISOR: u32 = 1 << 31;

/// CPUID: what KVM supports, with this vCPU's APIC id, the hypervisor bit and, where KVM
/// emulates it, the TSC-deadline timer (KVM leaves that bit to userspace; without it
/// Linux calibrates the LAPIC timer against jiffies, 100 ms and more on every boot).
pub fn setup_cpuid(kvm: &Kvm, vcpu: &VcpuFd, id: u8, count: u8) -> Result<(), SetupError> {
    let mut cpuid: CpuId = kvm
        .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
        .map_err(step("KVM_GET_SUPPORTED_CPUID"))?;
    let tsc_deadline = kvm.check_extension(kvm_ioctls::Cap::TscDeadlineTimer);
    for e in cpuid.as_mut_slice() {
        match e.function {
            1 => {
                e.ebx = (e.ebx & 0x0000_ffff) | (u32::from(id) << 24) | (u32::from(count) << 16);
                e.ecx |= LEAF1_ECX_HYPERVISOR;
                if tsc_deadline {
                    e.ecx |= LEAF1_ECX_TSC_DEADLINE;
                }
            }
            0xb => e.edx = u32::from(id),
            _ => {}
        }
    }
    vcpu.set_cpuid2(&cpuid).map_err(step("KVM_SET_CPUID2"))
}

/// MSRs Linux expects sane at boot: fast strings, MTRRs enabled with write-back default.
pub fn setup_msrs(vcpu: &VcpuFd) -> Result<(), SetupError> {
    let entries = [
        kvm_msr_entry {
            index: 0x1a0, // IA32_MISC_ENABLE
            data: 1,
            ..Default::default()
        },
        kvm_msr_entry {
            index: 0x2ff, // IA32_MTRR_DEF_TYPE: enabled, write-back
            data: (1 << 11) | 6,
            ..Default::default()
        },
    ];
    let msrs = Msrs::from_entries(&entries).map_err(|_| SetupError {
        step: "building MSR list",
        source: kvm_ioctls::Error::new(libc::EINVAL),
    })?;
    vcpu.set_msrs(&msrs)
        .map_err(step("KVM_SET_MSRS"))
        .map(|_| ())
}

/// x87/SSE defaults.
pub fn setup_fpu(vcpu: &VcpuFd) -> Result<(), SetupError> {
    let fpu = kvm_fpu {
        fcw: 0x37f,
        mxcsr: 0x1f80,
        ..Default::default()
    };
    vcpu.set_fpu(&fpu).map_err(step("KVM_SET_FPU"))
}

/// LAPIC LINT0 = ExtINT (the PIC), LINT1 = NMI: virtual-wire mode.
pub fn setup_lapic(vcpu: &VcpuFd) -> Result<(), SetupError> {
    const LVT_LINT0: usize = 0x350;
    const LVT_LINT1: usize = 0x360;
    let mut lapic = vcpu.get_lapic().map_err(step("KVM_GET_LAPIC"))?;
    let mut set_mode = |offset: usize, mode: u32| {
        let raw = &mut lapic.regs[offset..offset + 4];
        let mut v = u32::from_le_bytes([raw[0] as u8, raw[1] as u8, raw[2] as u8, raw[3] as u8]);
        v = (v & !0x700) | (mode << 8);
        for (i, b) in v.to_le_bytes().iter().enumerate() {
            raw[i] = *b as i8 as _;
        }
    };
    set_mode(LVT_LINT0, 7);
    set_mode(LVT_LINT1, 4);
    vcpu.set_lapic(&lapic).map_err(step("KVM_SET_LAPIC"))
}

/// A flat GDT for both 32-bit entries (PVH and the Linux 32-bit boot protocol, which
/// wants code at 0x10 and data at 0x18): null, unused, code, data, TSS (0x20).
pub fn boot_gdt() -> [u64; 5] {
    [
        0,
        0,
        0x00cf_9b00_0000_ffff,
        0x00cf_9300_0000_ffff,
        0x0000_8b00_0000_0067,
    ]
}

/// General registers a 32-bit entry passes its boot information in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BootInfoRegs {
    /// PVH: the `hvm_start_info` address.
    pub ebx: u64,
    /// Linux boot protocol: the zero page (`boot_params`) address.
    pub esi: u64,
}

fn segment(selector: u16, type_: u8, s: u8, db: u8, g: u8, limit: u32) -> kvm_segment {
    kvm_segment {
        base: 0,
        limit,
        selector,
        type_,
        present: 1,
        dpl: 0,
        db,
        s,
        l: 0,
        g,
        avl: 0,
        unusable: 0,
        padding: 0,
    }
}

/// 32-bit protected mode, no paging, interrupts off, flat segments from [`boot_gdt`];
/// eip = `entry`, boot information in ebx/esi.
pub fn setup_boot32_regs(
    vcpu: &VcpuFd,
    entry: u64,
    gdt_addr: u64,
    info: BootInfoRegs,
) -> Result<(), SetupError> {
    let mut sregs = vcpu.get_sregs().map_err(step("KVM_GET_SREGS"))?;
    let code = segment(0x10, 0xb, 1, 1, 1, 0xffff_ffff);
    let data = segment(0x18, 0x3, 1, 1, 1, 0xffff_ffff);
    sregs.cs = code;
    sregs.ds = data;
    sregs.es = data;
    sregs.fs = data;
    sregs.gs = data;
    sregs.ss = data;
    sregs.tr = segment(0x20, 0xb, 0, 0, 0, 0x67);
    sregs.gdt.base = gdt_addr;
    sregs.gdt.limit = (std::mem::size_of_val(&boot_gdt()) - 1) as u16;
    sregs.cr0 = 0x1 | 0x10; // PE | ET
    sregs.cr4 = 0;
    sregs.efer = 0;
    vcpu.set_sregs(&sregs).map_err(step("KVM_SET_SREGS"))?;
    let regs = kvm_regs {
        rflags: 0x2,
        rip: entry,
        rbx: info.ebx,
        rsi: info.esi,
        ..Default::default()
    };
    vcpu.set_regs(&regs).map_err(step("KVM_SET_REGS"))
}
