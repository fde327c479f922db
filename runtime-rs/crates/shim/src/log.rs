//! The shim's structured log: slog JSON records into containerd's `log` FIFO (in the
//! bundle directory, which is the server's cwd), or stderr when there is none.

use std::fs::OpenOptions;
use std::io::Write;
use std::sync::Mutex;

use slog::{Drain, Logger, o};

/// Opens the log destination and returns the root logger at `debug` or info level.
pub fn open(id: &str, debug: bool) -> Logger {
    let sink: Box<dyn Write + Send> = match OpenOptions::new().write(true).open("log") {
        Ok(fifo) => Box::new(fifo),
        Err(_) => Box::new(std::io::stderr()),
    };
    with_sink(sink, id, debug)
}

/// The root logger writing JSON records into `sink`.
fn with_sink(sink: Box<dyn Write + Send>, id: &str, debug: bool) -> Logger {
    let json = slog_json::Json::new(sink)
        .add_default_keys()
        .set_newlines(true)
        .build();
    let level = if debug {
        slog::Level::Debug
    } else {
        slog::Level::Info
    };
    // Never `fuse()`: with panic = "abort", a write error (containerd restarting and its
    // log FIFO gone: EPIPE) would kill the shim and its VM. A record that cannot be
    // written is dropped.
    let drain = Mutex::new(json).filter_level(level).ignore_res();
    Logger::root(
        drain,
        o!("source" => "kata-rv-shim", "id" => id.to_string(), "pid" => std::process::id()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A log sink that fails (the FIFO's reader gone) drops records; logging goes on.
    #[test]
    fn a_failing_log_sink_does_not_panic() {
        struct Broken;
        impl Write for Broken {
            fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
                Err(std::io::Error::from(std::io::ErrorKind::BrokenPipe))
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let log = with_sink(Box::new(Broken), "t", true);
        slog::info!(log, "dropped");
        slog::info!(log, "dropped again");
    }
}
