//! Legacy devices of a Dragonball microVM: the 16550 UART console, and the i8042
//! controller x86_64 guests reset the machine through.

pub mod i8042;
pub mod serial;

pub use i8042::I8042Device;
pub use serial::{LineTrigger, SerialDevice};
