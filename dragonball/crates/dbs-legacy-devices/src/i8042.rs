//! The i8042 keyboard controller, only as far as a guest uses it to reset the machine:
//! writing 0xfe (pulse the reset line) to the command port, which Linux does for
//! `reboot=k` and on its default reboot path. Ports 0x60 (data) and 0x64 (command,
//! status).
//!
//! There is no keyboard behind it. The status register always reads "output buffer full,
//! input buffer empty" (data reads 0): Linux's i8042 driver then finds that the buffer
//! never drains and reports no controller at once (as on a machine without one), while
//! its reboot path, which only waits for an empty input buffer, sends the reset straight
//! away. A status of 0 instead made the driver wait ~0.9 s of boot for a controller
//! response that never comes.

use std::sync::{Arc, Mutex};

use dbs_device::{DeviceIo, IoAddress, PioAddress};
use vm_superio::{I8042Device as Controller, Trigger};

/// First port of the controller (data); the command port is at +4.
pub const I8042_PORT: u16 = 0x60;
/// Ports the controller spans.
pub const I8042_PORT_COUNT: u16 = 5;

/// Offset of the status register (port 0x64 on reads).
const STATUS_OFFSET: u16 = 4;
/// Status: output buffer full (bit 0), input buffer empty (bit 1 clear).
const STATUS_OUTPUT_FULL: u8 = 0x01;

/// Called when the guest asks for a reset.
pub type ResetHandler = Arc<dyn Fn() + Send + Sync>;

/// Adapts a [`ResetHandler`] to vm-superio's trigger.
pub struct ResetTrigger(ResetHandler);

impl Trigger for ResetTrigger {
    type E = std::convert::Infallible;

    fn trigger(&self) -> Result<(), Self::E> {
        (self.0)();
        Ok(())
    }
}

/// The controller on the port-I/O bus.
pub struct I8042Device {
    controller: Mutex<Controller<ResetTrigger>>,
}

impl I8042Device {
    /// A controller that calls `on_reset` when the guest resets the machine.
    pub fn new(on_reset: ResetHandler) -> Self {
        I8042Device {
            controller: Mutex::new(Controller::new(ResetTrigger(on_reset))),
        }
    }
}

impl DeviceIo for I8042Device {
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }

    fn pio_read(&self, _base: PioAddress, offset: PioAddress, data: &mut [u8]) {
        data.fill(0);
        if data.len() == 1 {
            data[0] = if offset.raw_value() == STATUS_OFFSET {
                STATUS_OUTPUT_FULL
            } else {
                let mut controller = self.controller.lock().unwrap_or_else(|p| p.into_inner());
                controller.read(offset.raw_value() as u8)
            };
        }
    }

    fn pio_write(&self, _base: PioAddress, offset: PioAddress, data: &[u8]) {
        if data.len() == 1 {
            let mut controller = self.controller.lock().unwrap_or_else(|p| p.into_inner());
            let _ = controller.write(offset.raw_value() as u8, data[0]);
        }
    }

    fn read(&self, _base: IoAddress, _offset: IoAddress, data: &mut [u8]) {
        data.fill(0);
    }

    fn write(&self, _base: IoAddress, _offset: IoAddress, _data: &[u8]) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn only_the_reset_command_on_the_command_port_resets() {
        let resets = Arc::new(AtomicUsize::new(0));
        let counter = resets.clone();
        let dev = I8042Device::new(Arc::new(move || {
            counter.fetch_add(1, Ordering::SeqCst);
        }));
        let port = |offset: u16| (PioAddress(I8042_PORT), PioAddress(offset));
        let (base, data) = port(0);
        dev.pio_write(base, data, &[0xfe]); // the data port: not a command
        let (base, cmd) = port(4);
        dev.pio_write(base, cmd, &[0xd1]); // another command
        dev.pio_write(base, cmd, &[0xfe, 0xfe]); // not a byte access
        assert_eq!(resets.load(Ordering::SeqCst), 0);
        let mut status = [0xaa];
        dev.pio_read(base, cmd, &mut status);
        assert_eq!(
            status[0] & 0x02,
            0,
            "input buffer empty: the guest may write"
        );
        assert_eq!(
            status[0] & 0x01,
            1,
            "a buffer that never drains: no controller"
        );
        dev.pio_write(base, cmd, &[0xfe]);
        assert_eq!(resets.load(Ordering::SeqCst), 1);
    }
}
