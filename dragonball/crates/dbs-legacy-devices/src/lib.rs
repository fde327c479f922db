//! Legacy devices of a Dragonball microVM: the 16550 UART console, the i8042
//! controller x86_64 guests reset the machine through, and the ACPI PM1 registers they
//! power it off through.

pub mod acpi_pm;
pub mod i8042;
pub mod serial;

pub use acpi_pm::{AcpiPm, Pm1Block};
pub use i8042::I8042Device;
pub use serial::{LineTrigger, SerialDevice};
