//! The Intel MultiProcessor table (spec 1.4), for guests without ACPI: it announces the
//! vCPUs (their LAPIC ids), the IOAPIC and the ISA interrupt routing.

use super::layout;

/// Where the table goes: the last KiB of base memory, which Linux scans.
pub const MPTABLE_ADDR: u64 = layout::LOW_RAM_END;
const LAPIC_ADDR: u32 = 0xfee0_0000;
const IOAPIC_ADDR: u32 = 0xfec0_0000;
const APIC_VERSION: u8 = 0x14;
const IOAPIC_VERSION: u8 = 0x11;
const IRQS: u8 = 24;

/// Errors building the table.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MptableError {
    /// The table announces 1..=254 vCPUs.
    #[error("an MP table describes 1 to 254 vCPUs, not {0}")]
    BadCpuCount(u8),
}

fn checksum(bytes: &[u8]) -> u8 {
    0u8.wrapping_sub(bytes.iter().fold(0u8, |a, b| a.wrapping_add(*b)))
}

/// The floating pointer followed by the configuration table, to be written at
/// [`MPTABLE_ADDR`].
pub fn build(cpus: u8) -> Result<Vec<u8>, MptableError> {
    if cpus == 0 || cpus > 254 {
        return Err(MptableError::BadCpuCount(cpus));
    }
    let ioapic_id = cpus + 1;
    let mut entries = Vec::new();
    for id in 0..cpus {
        let mut e = vec![0u8, id, APIC_VERSION, 1 | if id == 0 { 2 } else { 0 }];
        e.extend_from_slice(&0x600u32.to_le_bytes()); // family 6 signature
        e.extend_from_slice(&0x201u32.to_le_bytes()); // FPU + APIC
        e.extend_from_slice(&[0; 8]);
        entries.push(e);
    }
    entries.push(vec![1, 0, b'I', b'S', b'A', b' ', b' ', b' ']);
    let mut ioapic = vec![2, ioapic_id, IOAPIC_VERSION, 1];
    ioapic.extend_from_slice(&IOAPIC_ADDR.to_le_bytes());
    entries.push(ioapic);
    for irq in 0..IRQS {
        // INT, conforming polarity/trigger, ISA bus irq -> IOAPIC pin irq.
        entries.push(vec![3, 0, 0, 0, 0, irq, ioapic_id, irq]);
    }
    // ExtINT on LINT0 and NMI on LINT1 of every LAPIC.
    entries.push(vec![4, 3, 0, 0, 0, 0, 0xff, 0]);
    entries.push(vec![4, 1, 0, 0, 0, 0, 0xff, 1]);

    let body: Vec<u8> = entries.concat();
    let table_len = 44 + body.len();
    let mut table = Vec::with_capacity(table_len);
    table.extend_from_slice(b"PCMP");
    table.extend_from_slice(&(table_len as u16).to_le_bytes());
    table.push(4); // spec revision 1.4
    table.push(0); // checksum, below
    table.extend_from_slice(b"KATA-RV ");
    table.extend_from_slice(b"DRAGONBALL  ");
    table.extend_from_slice(&0u32.to_le_bytes()); // OEM table
    table.extend_from_slice(&0u16.to_le_bytes());
    table.extend_from_slice(&(entries.len() as u16).to_le_bytes());
    table.extend_from_slice(&LAPIC_ADDR.to_le_bytes());
    table.extend_from_slice(&0u16.to_le_bytes()); // extended table length
    table.push(0); // extended checksum
    table.push(0);
    table.extend_from_slice(&body);
    table[7] = checksum(&table);

    let config_addr = MPTABLE_ADDR as u32 + 16;
    let mut fp = Vec::with_capacity(16);
    fp.extend_from_slice(b"_MP_");
    fp.extend_from_slice(&config_addr.to_le_bytes());
    fp.push(1); // length in 16-byte units
    fp.push(4);
    fp.push(0); // checksum
    fp.extend_from_slice(&[0; 5]);
    fp[10] = checksum(&fp);
    fp.extend_from_slice(&table);
    Ok(fp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksums_and_counts() {
        let t = build(2).unwrap();
        assert_eq!(&t[0..4], b"_MP_");
        assert_eq!(t[..16].iter().fold(0u8, |a, b| a.wrapping_add(*b)), 0);
        let len = u16::from_le_bytes([t[20], t[21]]) as usize;
        assert_eq!(&t[16..20], b"PCMP");
        assert_eq!(
            t[16..16 + len].iter().fold(0u8, |a, b| a.wrapping_add(*b)),
            0
        );
        let count = u16::from_le_bytes([t[16 + 34], t[16 + 35]]);
        assert_eq!(count, 2 + 1 + 1 + 24 + 2);
        // Fits below 640 KiB.
        assert!(MPTABLE_ADDR as usize + t.len() <= 0xa_0000);
        assert_eq!(build(0), Err(MptableError::BadCpuCount(0)));
    }
}
