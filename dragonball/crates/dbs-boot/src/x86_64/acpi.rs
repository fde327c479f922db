//! The ACPI tables a guest powers off through: RSDP → XSDT → FADT (+ FACS) → DSDT holding
//! `_S5_`, and the MADT.
//!
//! The FADT describes the full (not hardware-reduced) hardware model with only a PM1 event
//! block and a PM1 control block: in hardware-reduced mode Linux drops the legacy PIC and
//! the ISA IRQs, which the COM1 console (IRQ 4) and the command-line virtio-mmio devices
//! (IRQs 5..=15) rely on. No SMI command port (the machine is always in ACPI mode), no PM
//! timer, no GPE blocks; the SCI sits on a GSI no device uses. The reset register is the
//! i8042's command port. With ACPI on, Linux ignores the MP table, so the MADT announces
//! the LAPICs and the IOAPIC with the same ids. Layout facts from the ACPI 6.x spec.

use super::layout;

/// Where the tables go (the BIOS area, outside the e820 RAM map, where Linux also
/// scans for the RSDP).
pub const TABLES_ADDR: u64 = 0x000e_0000;
/// First port of the PM1 event block (PM1_STS, then PM1_EN; two bytes each).
pub const PM1_EVENT_PORT: u16 = 0x600;
/// Length of the PM1 event block.
pub const PM1_EVENT_LEN: u8 = 4;
/// Port of the PM1 control register (two bytes).
pub const PM1_CONTROL_PORT: u16 = 0x604;
/// Length of the PM1 control block.
pub const PM1_CONTROL_LEN: u8 = 2;
/// The SLP_TYP value `_S5_` announces.
pub const S5_SLEEP_TYPE: u8 = 5;
/// The GSI of the SCI: the IOAPIC's last pin, outside the ISA range the devices use.
pub const SCI_GSI: u16 = 23;
/// The reset register: the i8042 command port, written with [`RESET_VALUE`].
pub const RESET_PORT: u16 = 0x64;
/// The i8042 "pulse reset line" command.
pub const RESET_VALUE: u8 = 0xfe;

// The SCI is an IOAPIC pin (24 of them) and shares no line with COM1 or a virtio slot.
const _: () = assert!(
    SCI_GSI < 24
        && SCI_GSI as u32 != layout::SERIAL_IRQ
        && ((SCI_GSI as u32) < layout::VIRTIO_MMIO_IRQ_BASE
            || SCI_GSI as u32 >= layout::VIRTIO_MMIO_IRQ_BASE + layout::VIRTIO_MMIO_SLOTS)
);

const OEM_ID: &[u8; 6] = b"KATARV";
const OEM_TABLE_ID: &[u8; 8] = b"DRAGONBL";
/// FADT flags: WBINVD works (bit 0), no fixed power/sleep buttons (bits 4, 5), the reset
/// register is supported (bit 10).
const FADT_FLAGS: u32 = 1 | (1 << 4) | (1 << 5) | (1 << 10);
/// IA-PC boot architecture flags: VGA not present (bit 2), CMOS RTC not present (bit 5);
/// no 8042 for the keyboard driver to probe (bit 1 clear), no legacy devices (bit 0 clear).
const IAPC_BOOT_ARCH: u16 = (1 << 2) | (1 << 5);
/// C2/C3 latencies above these limits mean "not supported".
const C2_LATENCY_NONE: u16 = 101;
const C3_LATENCY_NONE: u16 = 1001;
const GAS_SYSTEM_IO: u8 = 1;
const GAS_ACCESS_BYTE: u8 = 1;
const RSDP_LEN: usize = 36;
const FACS_LEN: usize = 64;

fn checksum(bytes: &[u8]) -> u8 {
    bytes.iter().fold(0u8, |sum, b| sum.wrapping_sub(*b))
}

/// A system description table: the 36-byte header, then `body`.
fn sdt(signature: &[u8; 4], revision: u8, body: &[u8]) -> Vec<u8> {
    let mut t = Vec::with_capacity(36 + body.len());
    t.extend_from_slice(signature);
    t.extend_from_slice(&((36 + body.len()) as u32).to_le_bytes());
    t.push(revision);
    t.push(0); // checksum, below
    t.extend_from_slice(OEM_ID);
    t.extend_from_slice(OEM_TABLE_ID);
    t.extend_from_slice(&1u32.to_le_bytes()); // OEM revision
    t.extend_from_slice(b"KTRV"); // creator id
    t.extend_from_slice(&1u32.to_le_bytes()); // creator revision
    t.extend_from_slice(body);
    t[9] = checksum(&t);
    t
}

/// A generic address structure for a one-byte I/O port.
fn io_register(port: u16) -> [u8; 12] {
    let mut g = [0u8; 12];
    g[0] = GAS_SYSTEM_IO;
    g[1] = 8; // register bit width
    g[3] = GAS_ACCESS_BYTE;
    g[4..12].copy_from_slice(&u64::from(port).to_le_bytes());
    g
}

fn dsdt() -> Vec<u8> {
    // Name (_S5_, Package (2) { 5, 0 })
    let aml = [
        0x08,
        b'_',
        b'S',
        b'5',
        b'_', // NameOp "_S5_"
        0x12,
        0x05,
        0x02, // PackageOp, PkgLength 5, 2 elements
        0x0a,
        S5_SLEEP_TYPE, // BytePrefix 5
        0x00,          // ZeroOp
    ];
    sdt(b"DSDT", 2, &aml)
}

/// LAPIC ids 0..cpus, the IOAPIC (id cpus + 1, GSI base 0), NMI on LINT1 of every LAPIC.
fn madt(cpus: u8) -> Vec<u8> {
    const LAPIC_ADDR: u32 = 0xfee0_0000;
    const IOAPIC_ADDR: u32 = 0xfec0_0000;
    const PCAT_COMPAT: u32 = 1; // the dual 8259 PIC is there too
    let mut body = Vec::new();
    body.extend_from_slice(&LAPIC_ADDR.to_le_bytes());
    body.extend_from_slice(&PCAT_COMPAT.to_le_bytes());
    for id in 0..cpus {
        // Processor local APIC: type 0, length 8, UID, APIC id, flags = enabled.
        body.extend_from_slice(&[0, 8, id, id]);
        body.extend_from_slice(&1u32.to_le_bytes());
    }
    // I/O APIC: type 1, length 12, id, reserved, address, GSI base.
    body.extend_from_slice(&[1, 12, cpus + 1, 0]);
    body.extend_from_slice(&IOAPIC_ADDR.to_le_bytes());
    body.extend_from_slice(&0u32.to_le_bytes());
    // Local APIC NMI: type 4, length 6, all processors, flags 0, LINT1.
    body.extend_from_slice(&[4, 6, 0xff, 0, 0, 1]);
    sdt(b"APIC", 5, &body)
}

fn fadt(facs_addr: u64, dsdt_addr: u64) -> Vec<u8> {
    // The FADT body after its header: offsets below are from the table start.
    let mut body = vec![0u8; 276 - 36];
    let mut put = |offset: usize, bytes: &[u8]| {
        body[offset - 36..offset - 36 + bytes.len()].copy_from_slice(bytes);
    };
    put(40, &(dsdt_addr as u32).to_le_bytes()); // DSDT
    put(46, &SCI_GSI.to_le_bytes()); // SCI_INT; SMI_CMD (48) stays 0
    put(56, &u32::from(PM1_EVENT_PORT).to_le_bytes()); // PM1a_EVT_BLK
    put(64, &u32::from(PM1_CONTROL_PORT).to_le_bytes()); // PM1a_CNT_BLK
    put(88, &[PM1_EVENT_LEN, PM1_CONTROL_LEN]); // PM1_EVT_LEN, PM1_CNT_LEN
    put(96, &C2_LATENCY_NONE.to_le_bytes()); // P_LVL2_LAT
    put(98, &C3_LATENCY_NONE.to_le_bytes()); // P_LVL3_LAT
    put(109, &IAPC_BOOT_ARCH.to_le_bytes());
    put(112, &FADT_FLAGS.to_le_bytes());
    put(116, &io_register(RESET_PORT)); // RESET_REG
    put(128, &[RESET_VALUE]);
    put(131, &[5]); // FADT minor version (6.5)
    put(132, &facs_addr.to_le_bytes()); // X_FIRMWARE_CTRL (FIRMWARE_CTRL stays 0)
    put(140, &dsdt_addr.to_le_bytes()); // X_DSDT
    put(268, b"KATARVDB"); // hypervisor vendor identity
    sdt(b"FACP", 6, &body)
}

/// The firmware ACPI control structure: no waking vector, no global lock owner.
fn facs() -> Vec<u8> {
    let mut t = vec![0u8; FACS_LEN];
    t[0..4].copy_from_slice(b"FACS");
    t[4..8].copy_from_slice(&(FACS_LEN as u32).to_le_bytes());
    t[32] = 2; // version
    t
}

/// The tables for `cpus` vCPUs, to be written at [`TABLES_ADDR`]; the RSDP comes first,
/// so its address is `TABLES_ADDR`, then the FACS on its 64-byte boundary.
pub fn build(cpus: u8) -> Vec<u8> {
    let facs_addr = TABLES_ADDR + FACS_LEN as u64; // the RSDP padded to 64 bytes
    let dsdt = dsdt();
    let dsdt_addr = facs_addr + FACS_LEN as u64;
    let fadt = fadt(facs_addr, dsdt_addr);
    let fadt_addr = dsdt_addr + dsdt.len() as u64;
    let madt = madt(cpus);
    let madt_addr = fadt_addr + fadt.len() as u64;
    let xsdt_addr = madt_addr + madt.len() as u64;
    let pointers = [fadt_addr.to_le_bytes(), madt_addr.to_le_bytes()].concat();
    let xsdt = sdt(b"XSDT", 1, &pointers);

    let mut rsdp = Vec::with_capacity(FACS_LEN);
    rsdp.extend_from_slice(b"RSD PTR ");
    rsdp.push(0); // checksum of the first 20 bytes, below
    rsdp.extend_from_slice(OEM_ID);
    rsdp.push(2); // revision: ACPI 2.0+ (XSDT)
    rsdp.extend_from_slice(&0u32.to_le_bytes()); // no RSDT
    rsdp.extend_from_slice(&(RSDP_LEN as u32).to_le_bytes());
    rsdp.extend_from_slice(&xsdt_addr.to_le_bytes());
    rsdp.extend_from_slice(&[0; 4]); // extended checksum + reserved
    rsdp[8] = checksum(&rsdp[..20]);
    rsdp[32] = checksum(&rsdp);

    let mut out = rsdp;
    out.resize(FACS_LEN, 0);
    out.extend_from_slice(&facs());
    out.extend_from_slice(&dsdt);
    out.extend_from_slice(&fadt);
    out.extend_from_slice(&madt);
    out.extend_from_slice(&xsdt);
    debug_assert!(TABLES_ADDR + out.len() as u64 <= layout::HIMEM_START);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table_at(tables: &[u8], addr: u64) -> &[u8] {
        let off = (addr - TABLES_ADDR) as usize;
        let len = u32::from_le_bytes(tables[off + 4..off + 8].try_into().unwrap()) as usize;
        &tables[off..off + len]
    }

    #[test]
    fn tables_chain_from_the_rsdp_and_every_checksum_holds() {
        let t = build(2);
        assert_eq!(&t[0..8], b"RSD PTR ");
        let sum = |b: &[u8]| b.iter().fold(0u8, |s, x| s.wrapping_add(*x));
        assert_eq!(sum(&t[..20]), 0);
        assert_eq!(sum(&t[..36]), 0);
        let xsdt = table_at(&t, u64::from_le_bytes(t[24..32].try_into().unwrap()));
        assert_eq!(&xsdt[..4], b"XSDT");
        assert_eq!(sum(xsdt), 0);
        let fadt = table_at(&t, u64::from_le_bytes(xsdt[36..44].try_into().unwrap()));
        assert_eq!(&fadt[..4], b"FACP");
        assert_eq!(fadt.len(), 276);
        assert_eq!(sum(fadt), 0);
        let u32_at = |t: &[u8], off: usize| u32::from_le_bytes(t[off..off + 4].try_into().unwrap());
        let flags = u32_at(fadt, 112);
        assert_eq!(
            flags & (1 << 20),
            0,
            "not hardware-reduced: Linux keeps the ISA IRQs"
        );
        assert_eq!(
            u32_at(fadt, 48),
            0,
            "no SMI command port: always in ACPI mode"
        );
        assert_eq!(u32_at(fadt, 56), u32::from(PM1_EVENT_PORT));
        assert_eq!(u32_at(fadt, 64), u32::from(PM1_CONTROL_PORT));
        assert_eq!(&fadt[88..90], &[4, 2]);
        assert_eq!(u16::from_le_bytes([fadt[46], fadt[47]]), SCI_GSI);
        assert_ne!(flags & (1 << 10), 0, "reset register supported");
        assert_eq!(fadt[116], GAS_SYSTEM_IO);
        assert_eq!(u32_at(fadt, 120), u32::from(RESET_PORT));
        assert_eq!(fadt[128], RESET_VALUE);
        let facs_addr = u64::from_le_bytes(fadt[132..140].try_into().unwrap());
        assert_eq!(facs_addr % 64, 0, "the FACS is 64-byte aligned");
        assert_eq!(
            u32_at(fadt, 36),
            0,
            "only X_FIRMWARE_CTRL points at the FACS"
        );
        let facs = table_at(&t, facs_addr);
        assert_eq!(&facs[..4], b"FACS");
        assert_eq!(facs.len(), 64);
        let dsdt = table_at(&t, u64::from_le_bytes(fadt[140..148].try_into().unwrap()));
        assert_eq!(&dsdt[..4], b"DSDT");
        assert_eq!(sum(dsdt), 0);
        assert_eq!(&dsdt[36..41], &[0x08, b'_', b'S', b'5', b'_']);
        let madt = table_at(&t, u64::from_le_bytes(xsdt[44..52].try_into().unwrap()));
        assert_eq!(&madt[..4], b"APIC");
        assert_eq!(sum(madt), 0);
        // Two LAPICs (ids 0, 1), the IOAPIC (id 3), the NMI entry.
        assert_eq!(madt.len(), 44 + 2 * 8 + 12 + 6);
        assert_eq!(&madt[44..48], &[0, 8, 0, 0]);
        assert_eq!(&madt[52..56], &[0, 8, 1, 1]);
        assert_eq!(&madt[60..64], &[1, 12, 3, 0]);
    }
}
