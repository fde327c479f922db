//! The guest console: output from the UART and the SBI console goes to one sink (stdout,
//! a file, nothing, or a unix socket the VMM listens on); input from a socket client goes
//! to the UART.

use std::io::{self, ErrorKind, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, Weak};

use event_manager::{EventOps, Events, MutEventSubscriber};
use vmm_sys_util::epoll::EventSet;

use crate::config::ConsoleConfig;
use crate::device_manager::Subscriber;

/// Where console input goes (the UART).
pub trait ConsoleInput: Send + Sync {
    /// Queues input bytes; returns how many were taken.
    fn input(&self, bytes: &[u8]) -> usize;
}

/// Console input goes to the UART's receive FIFO.
impl ConsoleInput for dbs_legacy_devices::SerialDevice {
    fn input(&self, bytes: &[u8]) -> usize {
        self.enqueue_input(bytes)
    }
}

/// Most bytes one console file holds before it is rotated to `<file>.1` (so at most twice
/// this is kept on disk, however much the guest writes).
pub const FILE_CAP: u64 = 1 << 20;

/// A console file that never grows past its cap: when full it becomes `<file>.1` (the
/// previous `.1` goes) and writing goes on in a new file.
struct RotatingFile {
    path: PathBuf,
    file: std::fs::File,
    written: u64,
    cap: u64,
}

impl RotatingFile {
    fn open(path: PathBuf, cap: u64) -> io::Result<Self> {
        let file = Self::create(&path)?;
        let written = file.metadata()?.len();
        Ok(Self {
            path,
            file,
            written,
            cap,
        })
    }

    fn create(path: &std::path::Path) -> io::Result<std::fs::File> {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
    }

    /// The older half of the log.
    fn rotated(path: &std::path::Path) -> PathBuf {
        let mut name = path.as_os_str().to_owned();
        name.push(".1");
        PathBuf::from(name)
    }

    fn rotate(&mut self) -> io::Result<()> {
        std::fs::rename(&self.path, Self::rotated(&self.path))?;
        self.file = Self::create(&self.path)?;
        self.written = 0;
        Ok(())
    }
}

impl Write for RotatingFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.written >= self.cap {
            self.rotate()?;
        }
        let room = (self.cap - self.written).max(1) as usize;
        let n = self.file.write(&buf[..buf.len().min(room)])?;
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

/// The last `lines` lines of a console file (reading at most its last 64 KiB, so a
/// flooded console costs nothing to look at).
pub fn file_tail(path: &std::path::Path, lines: usize) -> String {
    use std::io::{Seek, SeekFrom};
    const WINDOW: u64 = 64 * 1024;
    let Ok(mut file) = std::fs::File::open(path) else {
        return String::new();
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = file.seek(SeekFrom::Start(len.saturating_sub(WINDOW)));
    let mut bytes = Vec::new();
    let _ = file.take(WINDOW).read_to_end(&mut bytes);
    let text = String::from_utf8_lossy(&bytes);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

enum Sink {
    Writer(Box<dyn Write + Send>),
    /// The connected socket client, if any. Output is dropped while nobody listens or
    /// the client does not keep up: the console never buffers without bound.
    Socket(Option<UnixStream>),
}

struct Shared {
    sink: Mutex<Sink>,
    /// Weak: the UART owns a writer to this console, so a strong link would be a cycle.
    input: Mutex<Option<Weak<dyn ConsoleInput>>>,
}

/// A cloneable console writer; every clone writes to the same sink.
#[derive(Clone)]
pub struct Console(Arc<Shared>);

impl Console {
    /// Opens the sink `config` names; a socket console also returns the event-loop
    /// subscriber that accepts its client.
    pub fn open(config: &ConsoleConfig) -> io::Result<(Console, Option<Subscriber>)> {
        let sink = match config {
            ConsoleConfig::Stdout => Sink::Writer(Box::new(io::stdout())),
            ConsoleConfig::None => Sink::Writer(Box::new(io::sink())),
            ConsoleConfig::File(path) => Sink::Writer(Box::new(
                RotatingFile::open(path.clone(), FILE_CAP).map_err(|e| {
                    io::Error::new(e.kind(), format!("console file '{}': {e}", path.display()))
                })?,
            )),
            ConsoleConfig::Socket(_) => Sink::Socket(None),
        };
        let console = Console(Arc::new(Shared {
            sink: Mutex::new(sink),
            input: Mutex::new(None),
        }));
        let subscriber: Option<Subscriber> = match config {
            ConsoleConfig::Socket(path) => {
                let _ = std::fs::remove_file(path);
                let listener = UnixListener::bind(path).map_err(|e| {
                    io::Error::new(
                        e.kind(),
                        format!("console socket '{}': {e}", path.display()),
                    )
                })?;
                listener.set_nonblocking(true)?;
                Some(Arc::new(Mutex::new(ConsoleSocket {
                    path: path.clone(),
                    listener,
                    console: console.clone(),
                    reader: None,
                })))
            }
            _ => None,
        };
        Ok((console, subscriber))
    }

    /// Routes console input to `input` (the UART), without keeping it alive.
    pub fn set_input(&self, input: &Arc<dyn ConsoleInput>) {
        *self.0.input.lock().unwrap_or_else(|p| p.into_inner()) = Some(Arc::downgrade(input));
    }

    fn set_client(&self, client: Option<UnixStream>) {
        if let Sink::Socket(slot) = &mut *self.0.sink.lock().unwrap_or_else(|p| p.into_inner()) {
            *slot = client;
        }
    }
}

impl Write for Console {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut sink = self.0.sink.lock().unwrap_or_else(|p| p.into_inner());
        match &mut *sink {
            Sink::Writer(w) => {
                w.write_all(buf)?;
                // Console lines must reach the sink promptly (tests and logs read it live).
                if buf.contains(&b'\n') {
                    w.flush()?;
                }
            }
            Sink::Socket(client) => {
                if let Some(stream) = client {
                    match stream.write(buf) {
                        Ok(_) => {}
                        Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                        Err(_) => *client = None,
                    }
                }
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        match &mut *self.0.sink.lock().unwrap_or_else(|p| p.into_inner()) {
            Sink::Writer(w) => w.flush(),
            Sink::Socket(_) => Ok(()),
        }
    }
}

/// Accepts the console socket's client (a new one replaces the old) and forwards its
/// input to the UART.
struct ConsoleSocket {
    path: PathBuf,
    listener: UnixListener,
    console: Console,
    /// Reading end of the current client.
    reader: Option<UnixStream>,
}

impl ConsoleSocket {
    fn drop_reader(&mut self, ops: &mut EventOps) {
        if let Some(old) = self.reader.take() {
            let _ = ops.remove(Events::empty(&old));
        }
    }
}

impl MutEventSubscriber for ConsoleSocket {
    fn process(&mut self, events: Events, ops: &mut EventOps) {
        if events.fd() == self.listener.as_raw_fd() {
            while let Ok((stream, _)) = self.listener.accept() {
                let Ok(reader) = stream.try_clone() else {
                    continue;
                };
                if stream.set_nonblocking(true).is_err() {
                    continue;
                }
                self.drop_reader(ops);
                let _ = ops.add(Events::new(&reader, EventSet::IN));
                self.reader = Some(reader);
                self.console.set_client(Some(stream));
            }
            return;
        }
        let mut buf = [0u8; 256];
        let n = match self.reader.as_mut().map(|r| r.read(&mut buf)) {
            Some(Ok(n)) if n > 0 => n,
            Some(Err(e)) if e.kind() == ErrorKind::WouldBlock => return,
            _ => {
                self.drop_reader(ops);
                self.console.set_client(None);
                return;
            }
        };
        let input = self
            .console
            .0
            .input
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if let Some(input) = input.and_then(|w| w.upgrade()) {
            input.input(&buf[..n]);
        }
    }

    fn init(&mut self, ops: &mut EventOps) {
        let _ = ops.add(Events::new(&self.listener, EventSet::IN));
    }
}

impl Drop for ConsoleSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_console_writes_through() {
        let path = std::env::temp_dir().join(format!("db-console-{}", std::process::id()));
        let (mut c, sub) = Console::open(&ConsoleConfig::File(path.clone())).unwrap();
        assert!(sub.is_none());
        c.write_all(b"hello\n").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "hello\n");
        std::fs::remove_file(path).unwrap();
    }

    #[test]
    fn a_flooded_file_console_stays_bounded() {
        let dir = std::env::temp_dir().join(format!("db-console-flood-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("console.log");
        let mut file = RotatingFile::open(path.clone(), 4096).unwrap();
        for i in 0..10_000 {
            writeln!(file, "line {i}").unwrap();
        }
        let current = std::fs::metadata(&path).unwrap().len();
        let older = std::fs::metadata(RotatingFile::rotated(&path))
            .unwrap()
            .len();
        assert!(current <= 4096 && older <= 4096, "{current} {older}");
        assert_eq!(file_tail(&path, 2), "line 9998\nline 9999");
        assert_eq!(file_tail(&dir.join("missing"), 2), "");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn socket_console_without_a_client_drops_output() {
        let path = std::env::temp_dir().join(format!("db-console-sock-{}", std::process::id()));
        let (mut c, sub) = Console::open(&ConsoleConfig::Socket(path.clone())).unwrap();
        assert!(sub.is_some());
        c.write_all(&[b'x'; 1 << 20]).unwrap(); // nobody listening: dropped, no growth
        drop(sub);
        assert!(!path.exists(), "the socket is removed with its subscriber");
    }
}
