//! Legacy devices of a Dragonball microVM.

pub mod serial;

pub use serial::{LineTrigger, SerialDevice};
