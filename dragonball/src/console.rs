//! The guest console sink shared by the UART and the SBI console.

use std::io::{self, Write};
use std::sync::{Arc, Mutex};

use crate::config::ConsoleConfig;

/// A cloneable writer; every clone writes to the same sink.
#[derive(Clone)]
pub struct Console(Arc<Mutex<Box<dyn Write + Send>>>);

impl Console {
    /// Opens the sink `config` names.
    pub fn open(config: &ConsoleConfig) -> io::Result<Console> {
        let sink: Box<dyn Write + Send> = match config {
            ConsoleConfig::Stdout => Box::new(io::stdout()),
            ConsoleConfig::None => Box::new(io::sink()),
            ConsoleConfig::File(path) => Box::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|e| {
                        io::Error::new(e.kind(), format!("console file '{}': {e}", path.display()))
                    })?,
            ),
            ConsoleConfig::Socket(path) => {
                return Err(io::Error::new(
                    io::ErrorKind::Unsupported,
                    format!(
                        "console socket '{}': socket consoles are not implemented yet; use stdout, file:PATH or none",
                        path.display()
                    ),
                ));
            }
        };
        Ok(Console(Arc::new(Mutex::new(sink))))
    }
}

impl Write for Console {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut sink = self.0.lock().unwrap_or_else(|p| p.into_inner());
        sink.write_all(buf)?;
        // Console lines must reach the sink promptly (tests and logs read it live).
        if buf.contains(&b'\n') {
            sink.flush()?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).flush()
    }
}
