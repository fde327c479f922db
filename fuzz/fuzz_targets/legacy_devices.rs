//! The legacy devices a guest reaches through port I/O: the 16550 UART, the i8042
//! (reset line) and the ACPI PM1 blocks (power-off). Any access sequence, any width,
//! with host input arriving on the UART in between.
#![no_main]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use arbitrary::Arbitrary;
use dbs_device::{DeviceIo, IoAddress};
use dbs_legacy_devices::acpi_pm::{AcpiPm, Pm1Block};
use dbs_legacy_devices::i8042::I8042Device;
use dbs_legacy_devices::serial::SerialDevice;
use libfuzzer_sys::fuzz_target;

/// A console that keeps no more than it must: counts bytes.
struct CountingConsole(Arc<AtomicUsize>);
impl std::io::Write for CountingConsole {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.fetch_add(buf.len(), Ordering::Relaxed);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

struct SilentLine;
impl dbs_interrupt::InterruptLine for SilentLine {
    fn trigger(&self) -> std::io::Result<()> {
        Ok(())
    }
}

#[derive(Arbitrary, Debug)]
enum Access {
    Read {
        device: u8,
        offset: u8,
        width: u8,
    },
    Write {
        device: u8,
        offset: u8,
        data: Vec<u8>,
    },
    HostInput(Vec<u8>),
}

fuzz_target!(|accesses: Vec<Access>| {
    let written = Arc::new(AtomicUsize::new(0));
    let serial = SerialDevice::new(
        Arc::new(SilentLine),
        Box::new(CountingConsole(written.clone())),
    );
    let resets = Arc::new(AtomicUsize::new(0));
    let r = resets.clone();
    let i8042 = I8042Device::new(Arc::new(move || {
        r.fetch_add(1, Ordering::Relaxed);
    }));
    let pm = AcpiPm::new(5, Arc::new(|| {}));
    let (event, control) = (pm.block(Pm1Block::Event), pm.block(Pm1Block::Control));
    let devices: [&dyn DeviceIo; 4] = [&serial, &i8042, &*event, &*control];
    let base = IoAddress(0);
    let mut guest_writes = 0usize;
    for access in accesses {
        match access {
            Access::Read {
                device,
                offset,
                width,
            } => {
                let mut buf = vec![0u8; usize::from(width % 9)];
                devices[usize::from(device) % 4].read(
                    base,
                    IoAddress(u64::from(offset % 16)),
                    &mut buf,
                );
            }
            Access::Write {
                device,
                offset,
                data,
            } => {
                let data = &data[..data.len().min(8)];
                guest_writes += data.len();
                devices[usize::from(device) % 4].write(
                    base,
                    IoAddress(u64::from(offset % 16)),
                    data,
                );
            }
            Access::HostInput(bytes) => {
                serial.enqueue_input(&bytes);
            }
        }
    }
    serial.flush();
    assert!(
        written.load(Ordering::Relaxed) <= guest_writes,
        "the console received more bytes than the guest wrote"
    );
});
