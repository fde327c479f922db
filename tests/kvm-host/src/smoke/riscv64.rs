//! riscv64: the in-kernel AIA initialises, and a vCPU at DRAM base makes a legacy SBI
//! console putchar (seen as KVM_EXIT_RISCV_SBI) and then an SBI SRST shutdown (seen as
//! KVM_EXIT_SYSTEM_EVENT).

use anyhow::{Context, Result, bail};
use kvm_bindings::{
    KVM_DEV_RISCV_AIA_ADDR_APLIC, KVM_DEV_RISCV_AIA_CONFIG_IDS, KVM_DEV_RISCV_AIA_CONFIG_MODE,
    KVM_DEV_RISCV_AIA_CONFIG_SRCS, KVM_DEV_RISCV_AIA_CTRL_INIT, KVM_DEV_RISCV_AIA_GRP_ADDR,
    KVM_DEV_RISCV_AIA_GRP_CONFIG, KVM_DEV_RISCV_AIA_GRP_CTRL, kvm_create_device, kvm_device_attr,
    kvm_device_type_KVM_DEV_TYPE_RISCV_AIA, kvm_userspace_memory_region,
};
use kvm_ioctls::{Cap, DeviceFd, Kvm, VcpuExit};

use super::GuestRam;

const DRAM_BASE: u64 = 0x8000_0000;
const APLIC_BASE: u64 = 0x0c00_0000;
const IMSIC_BASE: u64 = 0x2800_0000;
const REG_PC: u64 = 0x8030_0000_0200_0000;
const KVM_EXIT_RISCV_SBI: u32 = 35;
const SBI_EXT_LEGACY_PUTCHAR: u64 = 0x01;
const SBI_EXT_SRST: u64 = 0x5352_5354;
const SYSTEM_EVENT_SHUTDOWN: u32 = 1;

// Register numbers.
const ZERO: u32 = 0;
const A0: u32 = 10;
const A1: u32 = 11;
const A6: u32 = 16;
const A7: u32 = 17;

fn addi(rd: u32, rs1: u32, imm: i32) -> u32 {
    (((imm as u32) & 0xfff) << 20) | (rs1 << 15) | (rd << 7) | 0x13
}

fn lui(rd: u32, imm20: u32) -> u32 {
    (imm20 << 12) | (rd << 7) | 0x37
}

const ECALL: u32 = 0x0000_0073;
const JUMP_TO_SELF: u32 = 0x0000_006f;

/// putchar('K'); system_reset(shutdown, no reason); spin.
fn program() -> Vec<u8> {
    let srst = SBI_EXT_SRST as u32;
    let (hi, lo) = (srst >> 12, (srst & 0xfff) as i32);
    assert!(lo < 0x800, "SRST id needs no sign correction");
    [
        addi(A7, ZERO, SBI_EXT_LEGACY_PUTCHAR as i32),
        addi(A0, ZERO, b'K' as i32),
        ECALL,
        lui(A7, hi),
        addi(A7, A7, lo),
        addi(A6, ZERO, 0),
        addi(A0, ZERO, 0),
        addi(A1, ZERO, 0),
        ECALL,
        JUMP_TO_SELF,
    ]
    .iter()
    .flat_map(|i| i.to_le_bytes())
    .collect()
}

fn set_attr(dev: &DeviceFd, group: u32, attr: u64, value: *const u8) -> Result<()> {
    dev.set_device_attr(&kvm_device_attr {
        group,
        attr,
        addr: value as u64,
        flags: 0,
    })
    .with_context(|| format!("AIA set attr group {group} attr {attr}"))
}

fn get_config(dev: &DeviceFd, attr: u64) -> Result<u32> {
    let mut value = 0u32;
    let mut da = kvm_device_attr {
        group: KVM_DEV_RISCV_AIA_GRP_CONFIG,
        attr,
        addr: &mut value as *mut u32 as u64,
        flags: 0,
    };
    // SAFETY: `addr` points to a live u32, the size of every AIA config attribute.
    unsafe { dev.get_device_attr(&mut da) }.with_context(|| format!("AIA get config {attr}"))?;
    Ok(value)
}

pub(super) fn run(report: &mut super::Report) -> Result<()> {
    let kvm = Kvm::new().context("opening /dev/kvm")?;
    report.push(format!(
        "kvm: /dev/kvm api version {}",
        kvm.get_api_version()
    ));
    let irqchip = kvm.check_extension(Cap::Irqchip);
    report.push(format!("kvm: KVM_CAP_IRQCHIP (in-kernel AIA) = {irqchip}"));
    if !irqchip {
        bail!("the host KVM has no in-kernel AIA (KVM_CAP_IRQCHIP = 0)");
    }

    let vm = kvm.create_vm().context("KVM_CREATE_VM")?;
    let mut ram = GuestRam::new(1 << 20)?;
    ram.write(0, &program());
    let region = kvm_userspace_memory_region {
        slot: 0,
        flags: 0,
        guest_phys_addr: DRAM_BASE,
        memory_size: ram.len as u64,
        userspace_addr: ram.host_addr(),
    };
    // SAFETY: the region is our own mapping and outlives the VM (dropped after it).
    unsafe { vm.set_user_memory_region(region) }.context("KVM_SET_USER_MEMORY_REGION")?;
    let mut vcpu = vm.create_vcpu(0).context("KVM_CREATE_VCPU")?;

    // The AIA device wants every vCPU created first, then its config, then INIT.
    let mut dev = kvm_create_device {
        type_: kvm_device_type_KVM_DEV_TYPE_RISCV_AIA,
        fd: 0,
        flags: 0,
    };
    let aia = vm
        .create_device(&mut dev)
        .context("KVM_CREATE_DEVICE(RISCV_AIA)")?;
    let srcs: u32 = 1;
    set_attr(
        &aia,
        KVM_DEV_RISCV_AIA_GRP_CONFIG,
        KVM_DEV_RISCV_AIA_CONFIG_SRCS as u64,
        (&srcs as *const u32).cast(),
    )?;
    set_attr(
        &aia,
        KVM_DEV_RISCV_AIA_GRP_ADDR,
        KVM_DEV_RISCV_AIA_ADDR_APLIC as u64,
        (&APLIC_BASE as *const u64).cast(),
    )?;
    set_attr(
        &aia,
        KVM_DEV_RISCV_AIA_GRP_ADDR,
        1,
        (&IMSIC_BASE as *const u64).cast(),
    )?;
    set_attr(
        &aia,
        KVM_DEV_RISCV_AIA_GRP_CTRL,
        KVM_DEV_RISCV_AIA_CTRL_INIT as u64,
        std::ptr::null(),
    )?;
    let mode = match get_config(&aia, KVM_DEV_RISCV_AIA_CONFIG_MODE as u64)? {
        0 => "emul",
        1 => "hwaccel",
        2 => "auto",
        _ => "unknown",
    };
    let ids = get_config(&aia, KVM_DEV_RISCV_AIA_CONFIG_IDS as u64)?;
    report.push(format!(
        "aia: APLIC + IMSIC initialised (mode {mode}, {ids} ids)"
    ));

    vcpu.set_one_reg(REG_PC, &DRAM_BASE.to_le_bytes())
        .context("set pc")?;
    let mut console = String::new();
    for _ in 0..16 {
        match vcpu.run() {
            Ok(VcpuExit::Unsupported(KVM_EXIT_RISCV_SBI)) => {
                // SAFETY: the exit reason says the `riscv_sbi` member is the live one.
                let sbi = unsafe { &mut vcpu.get_kvm_run().__bindgen_anon_1.riscv_sbi };
                if sbi.extension_id != SBI_EXT_LEGACY_PUTCHAR {
                    bail!("unexpected SBI call: extension {:#x}", sbi.extension_id);
                }
                let c = sbi.args[0] as u8 as char;
                console.push(c);
                sbi.ret = [0, 0];
                report.push(format!(
                    "exit: KVM_EXIT_RISCV_SBI legacy console putchar {c:?}"
                ));
            }
            Ok(VcpuExit::SystemEvent(kind, data)) => {
                report.push(format!(
                    "exit: KVM_EXIT_SYSTEM_EVENT type {kind} data {data:?}"
                ));
                if kind != SYSTEM_EVENT_SHUTDOWN {
                    bail!("expected a shutdown system event, got type {kind}");
                }
                if console != "K" {
                    bail!("guest console said {console:?}, expected \"K\"");
                }
                report.push("smoke: PASS");
                return Ok(());
            }
            Ok(other) => bail!("unexpected vCPU exit: {other:?}"),
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => continue,
            Err(e) => bail!("KVM_RUN: {e}"),
        }
    }
    bail!("the vCPU did not shut down within 16 exits")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodings_match_the_isa_manual() {
        assert_eq!(addi(A7, ZERO, 1), 0x0010_0893); // li a7, 1
        assert_eq!(addi(A0, ZERO, 75), 0x04b0_0513); // li a0, 75
        assert_eq!(lui(A7, 0x53525), 0x5352_58b7); // lui a7, 0x53525
        assert_eq!(program().len(), 40);
    }
}
