//! Structured JSON logs (slog): every record goes to stderr (the VM console) and to each
//! reader connected to the log vsock port. Records written before the first reader
//! connects are kept (bounded) and replayed to it.

use std::io::{self, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::{Arc, Mutex};

use nix::sys::socket::{self, AddressFamily, SockFlag, SockType, VsockAddr};
use slog::{Drain, Logger, o};

use crate::config::LogLevel;

/// Bytes of early log kept for the first reader.
const BACKLOG_LIMIT: usize = 64 * 1024;

/// Where log bytes go: stderr plus the connected readers.
#[derive(Default)]
struct Fanout {
    readers: Vec<std::fs::File>,
    backlog: Vec<u8>,
    had_reader: bool,
    to_stderr: bool,
}

impl Fanout {
    fn write_all(&mut self, bytes: &[u8]) {
        if self.to_stderr {
            let _ = io::stderr().write_all(bytes);
        }
        if !self.had_reader && self.backlog.len() + bytes.len() <= BACKLOG_LIMIT {
            self.backlog.extend_from_slice(bytes);
        }
        // A reader that cannot take the record right now (non-blocking socket) or has
        // gone away is dropped: logging never stalls the agent.
        self.readers
            .retain_mut(|reader| reader.write_all(bytes).is_ok());
    }

    fn add_reader(&mut self, mut reader: std::fs::File) {
        if !self.had_reader {
            self.had_reader = true;
            let backlog = std::mem::take(&mut self.backlog);
            if reader.write_all(&backlog).is_err() {
                return;
            }
        }
        self.readers.push(reader);
    }
}

/// The `io::Write` slog-json writes into.
#[derive(Clone)]
struct SharedFanout(Arc<Mutex<Fanout>>);

impl Write for SharedFanout {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .write_all(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The agent's logger plus the handle that accepts log readers.
pub struct AgentLog {
    /// The root logger.
    pub logger: Logger,
    fanout: SharedFanout,
}

impl AgentLog {
    /// A JSON logger at `level`, echoing to stderr when `to_stderr`.
    pub fn new(level: LogLevel, to_stderr: bool) -> Self {
        let fanout = SharedFanout(Arc::new(Mutex::new(Fanout {
            to_stderr,
            ..Default::default()
        })));
        let json = slog_json::Json::new(fanout.clone())
            .add_default_keys()
            .set_newlines(true)
            .build();
        let min = match level {
            LogLevel::Error => slog::Level::Error,
            LogLevel::Warn => slog::Level::Warning,
            LogLevel::Info => slog::Level::Info,
            LogLevel::Debug => slog::Level::Debug,
        };
        let drain = Mutex::new(json).filter_level(min).fuse();
        let logger = Logger::root(drain, o!("source" => "agent", "pid" => std::process::id()));
        Self { logger, fanout }
    }

    /// Starts a thread that accepts log readers on vsock `port` (any CID).
    pub fn serve_vsock(&self, port: u32) -> io::Result<()> {
        let listener = socket::socket(
            AddressFamily::Vsock,
            SockType::Stream,
            SockFlag::SOCK_CLOEXEC,
            None,
        )?;
        socket::bind(
            listener.as_raw_fd(),
            &VsockAddr::new(libc::VMADDR_CID_ANY, port),
        )?;
        socket::listen(&listener, socket::Backlog::new(4)?)?;
        let fanout = self.fanout.clone();
        std::thread::Builder::new()
            .name("log-vsock".into())
            .spawn(move || {
                loop {
                    let Ok(fd) = socket::accept4(
                        listener.as_raw_fd(),
                        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
                    ) else {
                        continue;
                    };
                    // SAFETY: accept4 returned a fresh descriptor that nothing else owns.
                    let reader = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) });
                    fanout
                        .0
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .add_reader(reader);
                }
            })?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::unix::net::UnixStream;

    #[test]
    fn records_are_json_lines_and_early_ones_reach_the_first_reader() {
        let log = AgentLog::new(LogLevel::Info, false);
        slog::info!(log.logger, "before any reader"; "n" => 1);
        slog::debug!(log.logger, "filtered out");
        let (ours, theirs) = UnixStream::pair().unwrap();
        log.fanout
            .0
            .lock()
            .unwrap()
            .add_reader(std::fs::File::from(OwnedFd::from(ours)));
        slog::warn!(log.logger, "after"; "container" => "c1");
        drop(log);
        let mut text = String::new();
        let mut theirs = theirs;
        theirs.set_nonblocking(true).unwrap();
        let _ = theirs.read_to_string(&mut text);
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert_eq!(lines[0]["msg"], "before any reader");
        assert_eq!(lines[0]["n"], 1);
        assert_eq!(lines[1]["container"], "c1");
        assert_eq!(lines[1]["level"], "WARN");
    }
}
