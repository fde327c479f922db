//! A 16550A UART (vm-superio) behind an MMIO window (riscv64) or at a port-I/O base
//! (x86_64 COM1), with byte-wide registers at offsets
//! 0..=7 (`reg-shift = 0`). Output goes to any writer; the interrupt goes out through an
//! [`InterruptLine`].

use std::io::Write;
use std::sync::Mutex;

use std::sync::Arc;

use dbs_device::{DeviceIo, IoAddress, PioAddress};
use dbs_interrupt::InterruptLine;
use vm_superio::{Serial, Trigger};

/// Adapts an [`InterruptLine`] to vm-superio's trigger.
pub struct LineTrigger(pub Arc<dyn InterruptLine>);

impl Trigger for LineTrigger {
    type E = std::io::Error;

    fn trigger(&self) -> std::io::Result<()> {
        self.0.trigger()
    }
}

/// Where the guest console goes.
pub type ConsoleWriter = Box<dyn Write + Send>;

/// The UART as an MMIO device.
pub struct SerialDevice {
    uart: Mutex<Serial<LineTrigger, vm_superio::serial::NoEvents, ConsoleWriter>>,
}

impl SerialDevice {
    /// A UART writing to `out` and interrupting through `irq`.
    pub fn new(irq: Arc<dyn InterruptLine>, out: ConsoleWriter) -> Self {
        SerialDevice {
            uart: Mutex::new(Serial::new(LineTrigger(irq), out)),
        }
    }

    /// Queues console input for the guest; returns how many bytes fit in the FIFO.
    pub fn enqueue_input(&self, bytes: &[u8]) -> usize {
        let mut uart = self.uart.lock().unwrap_or_else(|p| p.into_inner());
        let room = uart.fifo_capacity().min(bytes.len());
        uart.enqueue_raw_bytes(&bytes[..room]).unwrap_or(0)
    }

    /// Flushes buffered console output.
    pub fn flush(&self) {
        let mut uart = self.uart.lock().unwrap_or_else(|p| p.into_inner());
        let _ = uart.writer_mut().flush();
    }
}

impl DeviceIo for SerialDevice {
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }

    // x86_64 COM1 sits on port I/O; the registers are the same.
    fn pio_read(&self, _base: PioAddress, offset: PioAddress, data: &mut [u8]) {
        self.read(IoAddress(0), IoAddress(u64::from(offset.raw_value())), data);
    }

    fn pio_write(&self, _base: PioAddress, offset: PioAddress, data: &[u8]) {
        self.write(IoAddress(0), IoAddress(u64::from(offset.raw_value())), data);
    }

    fn read(&self, _base: IoAddress, offset: IoAddress, data: &mut [u8]) {
        data.fill(0);
        // Only byte accesses to the eight registers mean anything; others read as 0.
        if data.len() == 1 && offset.raw_value() < 8 {
            let mut uart = self.uart.lock().unwrap_or_else(|p| p.into_inner());
            data[0] = uart.read(offset.raw_value() as u8);
        }
    }

    fn write(&self, _base: IoAddress, offset: IoAddress, data: &[u8]) {
        if data.len() == 1 && offset.raw_value() < 8 {
            let mut uart = self.uart.lock().unwrap_or_else(|p| p.into_inner());
            // A failing console sink must not take the VM down; the byte is dropped.
            let _ = uart.write(offset.raw_value() as u8, data[0]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex as StdMutex;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[derive(Default)]
    struct CountingLine(AtomicUsize);

    impl InterruptLine for CountingLine {
        fn trigger(&self) -> std::io::Result<()> {
            self.0.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
    }

    #[derive(Clone, Default)]
    struct Capture(Arc<StdMutex<Vec<u8>>>);

    impl Write for Capture {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn guest_writes_reach_the_console_and_bad_accesses_are_ignored() {
        let out = Capture::default();
        let dev = SerialDevice::new(Arc::new(CountingLine::default()), Box::new(out.clone()));
        let base = IoAddress(0x1000_0000);
        for b in b"ok" {
            dev.write(base, IoAddress(0), &[*b]);
        }
        dev.write(base, IoAddress(0), &[1, 2, 3, 4]); // wide write: ignored
        dev.write(base, IoAddress(0x800), b"x"); // outside the registers
        let mut wide = [0xffu8; 4];
        dev.read(base, IoAddress(0), &mut wide);
        assert_eq!(wide, [0; 4]);
        assert_eq!(&*out.0.lock().unwrap(), b"ok");
    }

    #[test]
    fn input_raises_an_interrupt_when_enabled() {
        let irq = Arc::new(CountingLine::default());
        let dev = SerialDevice::new(irq.clone(), Box::new(std::io::sink()));
        let base = IoAddress(0);
        dev.write(base, IoAddress(1), &[0x01]); // IER: received data available
        assert_eq!(dev.enqueue_input(b"hi"), 2);
        assert!(irq.0.load(Ordering::SeqCst) >= 1);
        let mut b = [0u8];
        dev.read(base, IoAddress(0), &mut b);
        assert_eq!(b[0], b'h');
    }
}
