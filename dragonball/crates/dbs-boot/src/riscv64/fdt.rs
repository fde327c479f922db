//! The flattened device tree a riscv64 Linux guest boots with: cpus (with their ISA),
//! memory, chosen (cmdline, initrd, console), the interrupt controller (in-kernel AIA:
//! IMSIC + MSI-mode APLIC, or a PLIC) and one node per MMIO device.

use vm_fdt::{Error as FdtError, FdtWriter};

use super::layout;

const PHANDLE_IRQCHIP: u32 = 1;
const PHANDLE_IMSIC: u32 = 2;
const PHANDLE_CPU_INTC_BASE: u32 = 16;
/// Supervisor external interrupt, as numbered by the hart-local interrupt controller.
const IRQ_S_EXT: u32 = 9;
/// "not connected" in an interrupts-extended list.
const IRQ_NONE: u32 = 0xffff_ffff;
const IRQ_TYPE_EDGE_RISING: u32 = 1;
const UART_CLOCK_HZ: u32 = 3_686_400;

/// The guest's interrupt controller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IrqChip {
    /// In-kernel AIA: per-hart IMSICs plus an APLIC in MSI mode.
    Aia {
        /// Interrupt identities per IMSIC file (KVM's IDS attribute).
        num_ids: u32,
        /// Wired sources of the APLIC (KVM's SRCS attribute).
        num_sources: u32,
    },
    /// Userspace PLIC with `ndev` sources.
    Plic {
        /// Number of sources.
        ndev: u32,
    },
}

/// An MMIO device with one wired interrupt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MmioDevice {
    /// Base guest-physical address.
    pub base: u64,
    /// Window size.
    pub size: u64,
    /// Interrupt source (>= 1).
    pub irq: u32,
}

/// Everything the FDT describes.
#[derive(Debug, Clone)]
pub struct FdtConfig {
    /// Hart ids, one per vCPU (equal to the KVM vCPU ids).
    pub harts: Vec<u32>,
    /// Single-letter ISA extensions, e.g. "imafdc" (the "rv64" prefix is added).
    pub isa_letters: String,
    /// Multi-letter ISA extensions, e.g. ["zicsr", "sstc", "ssaia"].
    pub isa_extensions: Vec<String>,
    /// `mmu-type`, e.g. "riscv,sv57".
    pub mmu_type: Option<String>,
    /// `riscv,cbom-block-size` (Zicbom's block size in bytes), where the guest has Zicbom.
    pub cbom_block_size: Option<u32>,
    /// `riscv,cboz-block-size` (Zicboz's block size in bytes), where the guest has Zicboz.
    pub cboz_block_size: Option<u32>,
    /// Timer frequency (KVM's timer.frequency register).
    pub timebase_frequency: u32,
    /// RAM base and size.
    pub memory: (u64, u64),
    /// Kernel command line.
    pub cmdline: String,
    /// initrd [start, end) in guest memory.
    pub initrd: Option<(u64, u64)>,
    /// Interrupt controller.
    pub irqchip: IrqChip,
    /// The 16550 console, if any.
    pub serial: Option<MmioDevice>,
    /// virtio-mmio transports.
    pub virtio_devices: Vec<MmioDevice>,
}

/// Errors building the FDT.
#[derive(Debug, thiserror::Error)]
pub enum FdtBuildError {
    /// The writer failed (e.g. a string with a NUL byte).
    #[error("building the device tree: {0}")]
    Writer(#[from] FdtError),
    /// The result exceeds what the kernel maps.
    #[error("device tree is {0} bytes, more than the 2 MiB the kernel accepts")]
    TooLarge(usize),
    /// No harts.
    #[error("a VM needs at least one vCPU")]
    NoCpus,
}

/// The ISA string in the `riscv,isa` form: "rv64imafdc_zicsr_sstc".
pub fn isa_string(letters: &str, extensions: &[String]) -> String {
    let mut s = format!("rv64{letters}");
    for e in extensions {
        s.push('_');
        s.push_str(e);
    }
    s
}

/// Builds the device tree blob.
pub fn build(cfg: &FdtConfig) -> Result<Vec<u8>, FdtBuildError> {
    if cfg.harts.is_empty() {
        return Err(FdtBuildError::NoCpus);
    }
    let mut fdt = FdtWriter::new()?;
    let root = fdt.begin_node("")?;
    fdt.property_string("compatible", "linux,dummy-virt")?;
    fdt.property_string("model", "kata-rv,dragonball")?;
    fdt.property_u32("#address-cells", 2)?;
    fdt.property_u32("#size-cells", 2)?;

    let chosen = fdt.begin_node("chosen")?;
    fdt.property_string("bootargs", &cfg.cmdline)?;
    if let Some(serial) = &cfg.serial {
        fdt.property_string("stdout-path", &format!("/soc/serial@{:x}", serial.base))?;
    }
    if let Some((start, end)) = cfg.initrd {
        fdt.property_u64("linux,initrd-start", start)?;
        fdt.property_u64("linux,initrd-end", end)?;
    }
    fdt.end_node(chosen)?;

    let (mem_base, mem_size) = cfg.memory;
    let memory = fdt.begin_node(&format!("memory@{mem_base:x}"))?;
    fdt.property_string("device_type", "memory")?;
    fdt.property_array_u64("reg", &[mem_base, mem_size])?;
    fdt.end_node(memory)?;

    write_cpus(&mut fdt, cfg)?;

    let soc = fdt.begin_node("soc")?;
    fdt.property_string("compatible", "simple-bus")?;
    fdt.property_u32("#address-cells", 2)?;
    fdt.property_u32("#size-cells", 2)?;
    fdt.property_null("ranges")?;
    write_irqchip(&mut fdt, cfg)?;
    let aia = matches!(cfg.irqchip, IrqChip::Aia { .. });
    let irq_cells = |irq: u32, kind: u32| if aia { vec![irq, kind] } else { vec![irq] };
    if let Some(s) = &cfg.serial {
        let node = fdt.begin_node(&format!("serial@{:x}", s.base))?;
        fdt.property_string("compatible", "ns16550a")?;
        fdt.property_array_u64("reg", &[s.base, s.size])?;
        fdt.property_u32("clock-frequency", UART_CLOCK_HZ)?;
        fdt.property_u32("interrupt-parent", PHANDLE_IRQCHIP)?;
        // Edge: interrupts arrive as irqfd pulses, one per new UART event.
        fdt.property_array_u32("interrupts", &irq_cells(s.irq, IRQ_TYPE_EDGE_RISING))?;
        fdt.end_node(node)?;
    }
    for d in &cfg.virtio_devices {
        let node = fdt.begin_node(&format!("virtio_mmio@{:x}", d.base))?;
        fdt.property_string("compatible", "virtio,mmio")?;
        fdt.property_array_u64("reg", &[d.base, d.size])?;
        fdt.property_null("dma-coherent")?;
        fdt.property_u32("interrupt-parent", PHANDLE_IRQCHIP)?;
        fdt.property_array_u32("interrupts", &irq_cells(d.irq, IRQ_TYPE_EDGE_RISING))?;
        fdt.end_node(node)?;
    }
    fdt.end_node(soc)?;
    fdt.end_node(root)?;
    let blob = fdt.finish()?;
    if blob.len() > layout::FDT_MAX_SIZE {
        return Err(FdtBuildError::TooLarge(blob.len()));
    }
    Ok(blob)
}

fn write_cpus(fdt: &mut FdtWriter, cfg: &FdtConfig) -> Result<(), FdtBuildError> {
    let cpus = fdt.begin_node("cpus")?;
    fdt.property_u32("#address-cells", 1)?;
    fdt.property_u32("#size-cells", 0)?;
    fdt.property_u32("timebase-frequency", cfg.timebase_frequency)?;
    let mut isa_list: Vec<String> = cfg.isa_letters.chars().map(|c| c.to_string()).collect();
    isa_list.extend(cfg.isa_extensions.iter().cloned());
    for (i, &hart) in cfg.harts.iter().enumerate() {
        let cpu = fdt.begin_node(&format!("cpu@{hart:x}"))?;
        fdt.property_string("device_type", "cpu")?;
        fdt.property_string("compatible", "riscv")?;
        fdt.property_u32("reg", hart)?;
        fdt.property_string("status", "okay")?;
        fdt.property_string(
            "riscv,isa",
            &isa_string(&cfg.isa_letters, &cfg.isa_extensions),
        )?;
        fdt.property_string("riscv,isa-base", "rv64i")?;
        fdt.property_string_list("riscv,isa-extensions", isa_list.clone())?;
        if let Some(mmu) = &cfg.mmu_type {
            fdt.property_string("mmu-type", mmu)?;
        }
        if let Some(size) = cfg.cbom_block_size {
            fdt.property_u32("riscv,cbom-block-size", size)?;
        }
        if let Some(size) = cfg.cboz_block_size {
            fdt.property_u32("riscv,cboz-block-size", size)?;
        }
        let intc = fdt.begin_node("interrupt-controller")?;
        fdt.property_string("compatible", "riscv,cpu-intc")?;
        fdt.property_u32("#interrupt-cells", 1)?;
        fdt.property_null("interrupt-controller")?;
        fdt.property_phandle(PHANDLE_CPU_INTC_BASE + i as u32)?;
        fdt.end_node(intc)?;
        fdt.end_node(cpu)?;
    }
    fdt.end_node(cpus)?;
    Ok(())
}

fn write_irqchip(fdt: &mut FdtWriter, cfg: &FdtConfig) -> Result<(), FdtBuildError> {
    let nr = cfg.harts.len() as u32;
    match cfg.irqchip {
        IrqChip::Aia {
            num_ids,
            num_sources,
        } => {
            let imsic = fdt.begin_node(&format!("imsics@{:x}", layout::IMSIC_BASE))?;
            fdt.property_string_list("compatible", vec!["riscv,imsics".into()])?;
            fdt.property_array_u64(
                "reg",
                &[layout::IMSIC_BASE, u64::from(nr) * layout::IMSIC_STRIDE],
            )?;
            fdt.property_null("interrupt-controller")?;
            fdt.property_null("msi-controller")?;
            fdt.property_u32("#interrupt-cells", 0)?;
            fdt.property_u32("#msi-cells", 0)?;
            fdt.property_u32("riscv,num-ids", num_ids)?;
            let ext: Vec<u32> = (0..nr)
                .flat_map(|i| [PHANDLE_CPU_INTC_BASE + i, IRQ_S_EXT])
                .collect();
            fdt.property_array_u32("interrupts-extended", &ext)?;
            fdt.property_phandle(PHANDLE_IMSIC)?;
            fdt.end_node(imsic)?;

            let aplic = fdt.begin_node(&format!("aplic@{:x}", layout::APLIC_BASE))?;
            fdt.property_string("compatible", "riscv,aplic")?;
            fdt.property_array_u64("reg", &[layout::APLIC_BASE, layout::APLIC_SIZE])?;
            fdt.property_null("interrupt-controller")?;
            fdt.property_u32("#interrupt-cells", 2)?;
            fdt.property_u32("#address-cells", 0)?;
            fdt.property_u32("riscv,num-sources", num_sources)?;
            fdt.property_u32("msi-parent", PHANDLE_IMSIC)?;
            fdt.property_phandle(PHANDLE_IRQCHIP)?;
            fdt.end_node(aplic)?;
        }
        IrqChip::Plic { ndev } => {
            let plic = fdt.begin_node(&format!("plic@{:x}", layout::PLIC_BASE))?;
            fdt.property_string_list(
                "compatible",
                vec!["sifive,plic-1.0.0".into(), "riscv,plic0".into()],
            )?;
            fdt.property_array_u64("reg", &[layout::PLIC_BASE, layout::PLIC_SIZE])?;
            fdt.property_null("interrupt-controller")?;
            fdt.property_u32("#interrupt-cells", 1)?;
            fdt.property_u32("#address-cells", 0)?;
            fdt.property_u32("riscv,ndev", ndev)?;
            // Two contexts per hart: M-mode (not connected), then S-mode.
            let ext: Vec<u32> = (0..nr)
                .flat_map(|i| {
                    let intc = PHANDLE_CPU_INTC_BASE + i;
                    [intc, IRQ_NONE, intc, IRQ_S_EXT]
                })
                .collect();
            fdt.property_array_u32("interrupts-extended", &ext)?;
            fdt.property_phandle(PHANDLE_IRQCHIP)?;
            fdt.end_node(plic)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(irqchip: IrqChip) -> FdtConfig {
        FdtConfig {
            harts: vec![0, 1],
            isa_letters: "imafdc".into(),
            isa_extensions: vec!["zicsr".into(), "sstc".into()],
            mmu_type: Some("riscv,sv57".into()),
            cbom_block_size: Some(64),
            cboz_block_size: None,
            timebase_frequency: 10_000_000,
            memory: (layout::DRAM_BASE, 256 << 20),
            cmdline: "console=ttyS0".into(),
            initrd: Some((0x8f00_0000, 0x8f10_0000)),
            irqchip,
            serial: Some(MmioDevice {
                base: layout::SERIAL_BASE,
                size: layout::SERIAL_SIZE,
                irq: layout::SERIAL_IRQ,
            }),
            virtio_devices: vec![MmioDevice {
                base: layout::virtio_mmio_base(0),
                size: layout::VIRTIO_MMIO_SIZE,
                irq: layout::VIRTIO_MMIO_IRQ_BASE,
            }],
        }
    }

    fn contains(blob: &[u8], needle: &[u8]) -> bool {
        blob.windows(needle.len()).any(|w| w == needle)
    }

    #[test]
    fn aia_tree_has_the_nodes_linux_needs() {
        let blob = build(&config(IrqChip::Aia {
            num_ids: 255,
            num_sources: 33,
        }))
        .unwrap();
        // No Zicboz in this guest: no block size for it.
        assert!(!contains(&blob, b"riscv,cboz-block-size\0"));
        assert_eq!(&blob[..4], &[0xd0, 0x0d, 0xfe, 0xed], "FDT magic");
        for needle in [
            &b"cpu@1\0"[..],
            b"rv64imafdc_zicsr_sstc\0",
            b"timebase-frequency\0",
            b"riscv,imsics\0",
            b"riscv,aplic\0",
            b"msi-parent\0",
            b"serial@10000000\0",
            b"/soc/serial@10000000\0",
            b"virtio_mmio@10001000\0",
            b"linux,initrd-start\0",
            b"memory@80000000\0",
            b"riscv,cbom-block-size\0",
        ] {
            assert!(
                contains(&blob, needle),
                "missing {:?}",
                String::from_utf8_lossy(needle)
            );
        }
        assert!(!contains(&blob, b"riscv,plic0"));
    }

    #[test]
    fn plic_tree_has_no_aia() {
        let blob = build(&config(IrqChip::Plic { ndev: 33 })).unwrap();
        assert!(contains(&blob, b"riscv,plic0\0"));
        assert!(contains(&blob, b"riscv,ndev\0"));
        assert!(!contains(&blob, b"riscv,imsics"));
    }

    #[test]
    fn no_cpus_is_an_error() {
        let mut c = config(IrqChip::Plic { ndev: 1 });
        c.harts.clear();
        assert!(matches!(build(&c), Err(FdtBuildError::NoCpus)));
    }
}
