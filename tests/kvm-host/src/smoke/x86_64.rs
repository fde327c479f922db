//! x86_64: the in-kernel irqchip can be created, and a real-mode vCPU writes 'K' to COM1
//! (seen as KVM_EXIT_IO) and halts (seen as KVM_EXIT_HLT).

use anyhow::{Context, Result, bail};
use kvm_bindings::kvm_userspace_memory_region;
use kvm_ioctls::{Cap, Kvm, VcpuExit};

use super::GuestRam;

const CODE_ADDR: u64 = 0x1000;
const COM1: u16 = 0x3f8;

/// mov dx, 0x3f8; mov al, 'K'; out dx, al; hlt
const PROGRAM: [u8; 7] = [0xba, 0xf8, 0x03, 0xb0, b'K', 0xee, 0xf4];

pub(super) fn run(report: &mut super::Report) -> Result<()> {
    let kvm = Kvm::new().context("opening /dev/kvm")?;
    report.push(format!(
        "kvm: /dev/kvm api version {}",
        kvm.get_api_version()
    ));
    let irqchip = kvm.check_extension(Cap::Irqchip);
    report.push(format!("kvm: KVM_CAP_IRQCHIP = {irqchip}"));
    if !irqchip {
        bail!("the host KVM has no in-kernel irqchip");
    }
    let probe = kvm.create_vm().context("KVM_CREATE_VM")?;
    probe.create_irq_chip().context("KVM_CREATE_IRQCHIP")?;
    drop(probe);
    report.push("irqchip: in-kernel PIC + IOAPIC created");

    // With an in-kernel LAPIC, KVM handles HLT itself; the vCPU VM has none so that
    // the halt comes back to us as an exit.
    let vm = kvm.create_vm().context("KVM_CREATE_VM")?;

    let mut ram = GuestRam::new(0x10000)?;
    ram.write(CODE_ADDR as usize, &PROGRAM);
    let region = kvm_userspace_memory_region {
        slot: 0,
        flags: 0,
        guest_phys_addr: 0,
        memory_size: ram.len as u64,
        userspace_addr: ram.host_addr(),
    };
    // SAFETY: the region is our own mapping and outlives the VM (dropped after it).
    unsafe { vm.set_user_memory_region(region) }.context("KVM_SET_USER_MEMORY_REGION")?;
    let mut vcpu = vm.create_vcpu(0).context("KVM_CREATE_VCPU")?;
    let mut sregs = vcpu.get_sregs().context("KVM_GET_SREGS")?;
    sregs.cs.base = 0;
    sregs.cs.selector = 0;
    vcpu.set_sregs(&sregs).context("KVM_SET_SREGS")?;
    let mut regs = vcpu.get_regs().context("KVM_GET_REGS")?;
    regs.rip = CODE_ADDR;
    regs.rflags = 2;
    vcpu.set_regs(&regs).context("KVM_SET_REGS")?;

    let mut console = Vec::new();
    for _ in 0..16 {
        match vcpu.run() {
            Ok(VcpuExit::IoOut(port, data)) => {
                if port != COM1 {
                    bail!("unexpected port write to {port:#x}");
                }
                console.extend_from_slice(data);
                report.push(format!(
                    "exit: KVM_EXIT_IO out port {port:#x} data {:?}",
                    String::from_utf8_lossy(data)
                ));
            }
            Ok(VcpuExit::Hlt) => {
                report.push("exit: KVM_EXIT_HLT");
                if console != b"K" {
                    bail!("guest wrote {console:?} to COM1, expected \"K\"");
                }
                report.push("smoke: PASS");
                return Ok(());
            }
            Ok(other) => bail!("unexpected vCPU exit: {other:?}"),
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => continue,
            Err(e) => bail!("KVM_RUN: {e}"),
        }
    }
    bail!("the vCPU did not halt within 16 exits")
}
