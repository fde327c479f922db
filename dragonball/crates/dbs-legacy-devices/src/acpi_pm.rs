//! The ACPI PM1 register blocks of an x86_64 microVM, at the ports the FADT names: the
//! event block (PM1_STS, PM1_EN) and the control block (PM1_CNT). Writing SLP_EN with the
//! S5 sleep type (what Linux's `acpi_power_off` does) powers the machine off; no other
//! sleep state is offered and no event is ever raised, so the status register stays 0.

use std::sync::{Arc, Mutex};

use dbs_device::{DeviceIo, IoAddress, PioAddress};

/// SCI_EN in PM1_CNT: the machine is in ACPI mode (always, there is no SMI port).
pub const SCI_ENABLE: u16 = 1;
/// SLP_EN in PM1_CNT (write-only: reads as 0).
pub const SLEEP_ENABLE: u16 = 1 << 13;
const SLEEP_TYPE_SHIFT: u16 = 10;
const SLEEP_TYPE_MASK: u16 = 0x7;

/// Called when the guest enters S5.
pub type PowerOffHandler = Arc<dyn Fn() + Send + Sync>;

/// Which block a device instance serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pm1Block {
    /// PM1_STS at offset 0, PM1_EN at offset 2.
    Event,
    /// PM1_CNT at offset 0.
    Control,
}

impl Pm1Block {
    /// Number of ports (bytes) the block spans.
    pub fn port_count(self) -> u16 {
        match self {
            Pm1Block::Event => 4,
            Pm1Block::Control => 2,
        }
    }
}

#[derive(Default)]
struct Registers {
    enable: u16,
    control: u16,
}

/// Both PM1 blocks; register each block's port range with [`AcpiPm::block`].
pub struct AcpiPm {
    s5_sleep_type: u16,
    on_power_off: PowerOffHandler,
    registers: Mutex<Registers>,
}

impl AcpiPm {
    /// PM1 registers whose S5 is the sleep type `s5_sleep_type` (as `_S5_` in the DSDT
    /// says); `on_power_off` runs when the guest enters it.
    pub fn new(s5_sleep_type: u8, on_power_off: PowerOffHandler) -> Arc<Self> {
        Arc::new(AcpiPm {
            s5_sleep_type: u16::from(s5_sleep_type),
            on_power_off,
            registers: Mutex::new(Registers::default()),
        })
    }

    /// The I/O device for one of the blocks.
    pub fn block(self: &Arc<Self>, block: Pm1Block) -> Arc<Pm1BlockDevice> {
        Arc::new(Pm1BlockDevice {
            pm: self.clone(),
            block,
        })
    }

    fn registers(&self) -> std::sync::MutexGuard<'_, Registers> {
        self.registers.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The 16-bit register at `offset` of `block` (offsets are even), as the guest reads it.
    fn read16(&self, block: Pm1Block, offset: u16) -> u16 {
        let r = self.registers();
        match (block, offset) {
            (Pm1Block::Event, 2) => r.enable,
            (Pm1Block::Control, 0) => r.control | SCI_ENABLE,
            _ => 0, // PM1_STS: no event is ever pending
        }
    }

    fn write16(&self, block: Pm1Block, offset: u16, value: u16) {
        let power_off = {
            let mut r = self.registers();
            match (block, offset) {
                (Pm1Block::Event, 2) => r.enable = value,
                (Pm1Block::Control, 0) => r.control = value & !SLEEP_ENABLE,
                _ => {} // PM1_STS: write-1-to-clear of bits that are never set
            }
            block == Pm1Block::Control
                && offset == 0
                && value & SLEEP_ENABLE != 0
                && (value >> SLEEP_TYPE_SHIFT) & SLEEP_TYPE_MASK == self.s5_sleep_type
        };
        if power_off {
            (self.on_power_off)();
        }
    }
}

/// One PM1 block as an I/O device. Accesses of any width and offset inside the block are
/// served byte by byte from its 16-bit registers; bytes outside it read as 0xff.
pub struct Pm1BlockDevice {
    pm: Arc<AcpiPm>,
    block: Pm1Block,
}

impl Pm1BlockDevice {
    fn byte_offsets(&self, offset: PioAddress, len: usize) -> impl Iterator<Item = Option<u16>> {
        let block_len = self.block.port_count();
        (0..len).map(move |i| {
            u16::try_from(i)
                .ok()
                .and_then(|i| offset.raw_value().checked_add(i))
                .filter(|&at| at < block_len)
        })
    }
}

impl DeviceIo for Pm1BlockDevice {
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }

    fn pio_read(&self, _base: PioAddress, offset: PioAddress, data: &mut [u8]) {
        let offsets = self.byte_offsets(offset, data.len());
        for (byte, at) in data.iter_mut().zip(offsets) {
            *byte = match at {
                Some(at) => self.pm.read16(self.block, at & !1).to_le_bytes()[usize::from(at & 1)],
                None => 0xff,
            };
        }
    }

    fn pio_write(&self, _base: PioAddress, offset: PioAddress, data: &[u8]) {
        // Gather the bytes per 16-bit register, so a word write lands as one write.
        let mut pending: Option<(u16, u16)> = None;
        for (&byte, at) in data.iter().zip(self.byte_offsets(offset, data.len())) {
            let Some(at) = at else { break };
            let reg = at & !1;
            let (reg, mut value) = match pending {
                Some((r, v)) if r == reg => (r, v),
                Some((r, v)) => {
                    self.pm.write16(self.block, r, v);
                    (reg, self.pm.read16(self.block, reg))
                }
                None => (reg, self.pm.read16(self.block, reg)),
            };
            let shift = 8 * (at & 1);
            value = (value & !(0xff << shift)) | (u16::from(byte) << shift);
            pending = Some((reg, value));
        }
        if let Some((reg, value)) = pending {
            self.pm.write16(self.block, reg, value);
        }
    }

    fn read(&self, _base: IoAddress, _offset: IoAddress, data: &mut [u8]) {
        data.fill(0xff);
    }

    fn write(&self, _base: IoAddress, _offset: IoAddress, _data: &[u8]) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn counting() -> (Arc<AcpiPm>, Arc<AtomicUsize>) {
        let count = Arc::new(AtomicUsize::new(0));
        let c = count.clone();
        let pm = AcpiPm::new(
            5,
            Arc::new(move || {
                c.fetch_add(1, Ordering::SeqCst);
            }),
        );
        (pm, count)
    }

    const BASE: PioAddress = PioAddress(0x604);

    #[test]
    fn only_slp_en_with_the_s5_type_powers_off() {
        let (pm, count) = counting();
        let control = pm.block(Pm1Block::Control);
        let word = |v: u16| v.to_le_bytes();
        control.pio_write(BASE, PioAddress(0), &word(5 << 10)); // SLP_TYP alone
        control.pio_write(BASE, PioAddress(0), &word((3 << 10) | SLEEP_ENABLE)); // S3
        let events = pm.block(Pm1Block::Event);
        events.pio_write(BASE, PioAddress(0), &word((5 << 10) | SLEEP_ENABLE)); // PM1_STS
        assert_eq!(count.load(Ordering::SeqCst), 0);
        // Linux: write SLP_TYP, then SLP_TYP | SLP_EN, both as words.
        control.pio_write(BASE, PioAddress(0), &word(5 << 10));
        control.pio_write(BASE, PioAddress(0), &word((5 << 10) | SLEEP_ENABLE));
        assert_eq!(count.load(Ordering::SeqCst), 1);
        // The same as two byte writes, high byte last.
        control.pio_write(BASE, PioAddress(0), &[0]);
        control.pio_write(
            BASE,
            PioAddress(1),
            &[(((5 << 10) | SLEEP_ENABLE) >> 8) as u8],
        );
        assert_eq!(count.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn registers_read_back_as_acpi_expects() {
        let (pm, _) = counting();
        let control = pm.block(Pm1Block::Control);
        let events = pm.block(Pm1Block::Event);
        let mut word = [0u8; 2];
        control.pio_read(BASE, PioAddress(0), &mut word);
        assert_eq!(u16::from_le_bytes(word), SCI_ENABLE, "always in ACPI mode");
        control.pio_write(
            BASE,
            PioAddress(0),
            &((5 << 10) | SLEEP_ENABLE).to_le_bytes(),
        );
        control.pio_read(BASE, PioAddress(0), &mut word);
        assert_eq!(
            u16::from_le_bytes(word),
            (5 << 10) | SCI_ENABLE,
            "SLP_EN reads 0"
        );
        events.pio_write(BASE, PioAddress(2), &0x0121u16.to_le_bytes());
        let mut all = [0u8; 4];
        events.pio_read(BASE, PioAddress(0), &mut all);
        assert_eq!(all, [0, 0, 0x21, 0x01], "PM1_STS 0, PM1_EN as written");
    }

    #[test]
    fn accesses_past_the_block_are_harmless() {
        let (pm, count) = counting();
        let control = pm.block(Pm1Block::Control);
        let mut data = [0u8; 8];
        control.pio_read(BASE, PioAddress(1), &mut data);
        assert_eq!(data, [0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]);
        control.pio_read(BASE, PioAddress(u16::MAX), &mut data);
        assert_eq!(data, [0xff; 8]);
        control.pio_write(BASE, PioAddress(u16::MAX), &[0xff; 8]);
        control.pio_write(BASE, PioAddress(2), &[0xff; 4]);
        assert_eq!(count.load(Ordering::SeqCst), 0);
    }
}
