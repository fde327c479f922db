//! A process's standard streams on the agent side: non-blocking descriptors (pipe ends
//! or a pty master) read and written by the Read*/Write* RPCs.

use std::os::fd::{AsRawFd, OwnedFd};

use nix::errno::Errno;
use nix::fcntl::{FcntlArg, OFlag, fcntl};
use nix::sys::socket;
use tokio::io::unix::AsyncFd;
use tokio::sync::Mutex;

use crate::spawn::ChildStdio;

/// One non-blocking stream end.
pub struct Stream {
    fd: AsyncFd<OwnedFd>,
}

impl Stream {
    fn new(fd: OwnedFd) -> std::io::Result<Self> {
        let flags = OFlag::from_bits_truncate(fcntl(&fd, FcntlArg::F_GETFL)?);
        fcntl(&fd, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
        // SAFETY: the AsyncFd owns the descriptor, so it stays open while registered.
        let fd = unsafe { AsyncFd::register(fd)? };
        Ok(Self { fd })
    }

    /// Reads up to `len` bytes; empty at end of stream (EIO from a pty whose slave is
    /// gone counts as the end).
    pub async fn read(&self, len: usize) -> std::io::Result<Vec<u8>> {
        let mut buffer = vec![0u8; len.clamp(1, 1 << 20)];
        loop {
            let mut guard = self.fd.readable().await?;
            match guard
                .try_io(|fd| nix::unistd::read(fd.get_ref(), &mut buffer).map_err(Into::into))
            {
                Ok(Ok(n)) => {
                    buffer.truncate(n);
                    return Ok(buffer);
                }
                Ok(Err(e)) if e.raw_os_error() == Some(libc::EIO) => return Ok(Vec::new()),
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => continue,
            }
        }
    }

    /// Writes all of `data`.
    pub async fn write_all(&self, data: &[u8]) -> std::io::Result<()> {
        let mut written = 0;
        while written < data.len() {
            let mut guard = self.fd.writable().await?;
            match guard
                .try_io(|fd| nix::unistd::write(fd.get_ref(), &data[written..]).map_err(Into::into))
            {
                Ok(Ok(n)) => written += n,
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => continue,
            }
        }
        Ok(())
    }
}

/// The agent's side before the child has run: ready (pipes), or waiting for the pty
/// master the child allocates inside the container.
pub enum PendingIo {
    /// Pipes: nothing to wait for.
    Ready(Box<ProcessIo>),
    /// The agent's end of the socket the child sends its pty master over.
    Pty(OwnedFd),
}

impl PendingIo {
    /// The streams, receiving the pty master if there is one. Call once the child has
    /// reported (it sends the master before that); a child that died first closes the
    /// socket, which is an error here.
    pub fn finish(self) -> Result<ProcessIo, String> {
        match self {
            PendingIo::Ready(io) => Ok(*io),
            PendingIo::Pty(socket) => {
                let mut byte = [0u8; 1];
                let mut iov = [std::io::IoSliceMut::new(&mut byte)];
                let mut space = nix::cmsg_space!(std::os::fd::RawFd);
                let message = socket::recvmsg::<()>(
                    socket.as_raw_fd(),
                    &mut iov,
                    Some(&mut space),
                    socket::MsgFlags::MSG_CMSG_CLOEXEC | socket::MsgFlags::MSG_DONTWAIT,
                )
                .map_err(|e| format!("receiving the pty master: {e}"))?;
                let fd = message
                    .cmsgs()
                    .map_err(|e| format!("receiving the pty master: {e}"))?
                    .find_map(|cmsg| match cmsg {
                        socket::ControlMessageOwned::ScmRights(fds) => fds.first().copied(),
                        _ => None,
                    })
                    .ok_or("the process did not send its pty master")?;
                // SAFETY: SCM_RIGHTS gave us a new descriptor that nothing else owns.
                let master = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
                ProcessIo::from_pty_master(master)
            }
        }
    }
}

/// The agent's ends of a process's streams.
pub struct ProcessIo {
    /// Where WriteStdin goes; `None` once closed.
    pub stdin: Mutex<Option<Stream>>,
    /// What ReadStdout reads.
    pub stdout: Mutex<Option<Stream>>,
    /// What ReadStderr reads (`None` with a terminal: it is merged into stdout).
    pub stderr: Mutex<Option<Stream>>,
    /// The pty master, for TtyWinResize.
    pub pty_master: Option<OwnedFd>,
}

impl ProcessIo {
    /// Creates the pipes (or, for a terminal, the socket the child sends its pty master
    /// over) and returns the agent's side plus the child's.
    pub fn create(terminal: bool) -> Result<(PendingIo, ChildStdio), String> {
        let fail = |what: &str, e: Errno| format!("creating {what}: {e}");
        if terminal {
            let (ours, theirs) = socket::socketpair(
                socket::AddressFamily::Unix,
                socket::SockType::Stream,
                None,
                socket::SockFlag::SOCK_CLOEXEC,
            )
            .map_err(|e| fail("the terminal socket", e))?;
            return Ok((PendingIo::Pty(ours), ChildStdio::Pty { socket: theirs }));
        }
        let pipe = || nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| fail("a pipe", e));
        let (stdin_read, stdin_write) = pipe()?;
        let (stdout_read, stdout_write) = pipe()?;
        let (stderr_read, stderr_write) = pipe()?;
        let stream = |fd| Stream::new(fd).map_err(|e| format!("pipe: {e}"));
        let io = Self {
            stdin: Mutex::new(Some(stream(stdin_write)?)),
            stdout: Mutex::new(Some(stream(stdout_read)?)),
            stderr: Mutex::new(Some(stream(stderr_read)?)),
            pty_master: None,
        };
        Ok((
            PendingIo::Ready(Box::new(io)),
            ChildStdio::Pipes {
                stdin: stdin_read,
                stdout: stdout_write,
                stderr: stderr_write,
            },
        ))
    }

    /// Streams over a pty master: stdout and stdin both use it, stderr is merged.
    pub fn from_pty_master(master: OwnedFd) -> Result<Self, String> {
        let clone = |fd: &OwnedFd| {
            fd.try_clone()
                .map_err(|e| format!("duplicating the pty master: {e}"))
        };
        let reader = Stream::new(clone(&master)?).map_err(|e| format!("pty: {e}"))?;
        let writer = Stream::new(clone(&master)?).map_err(|e| format!("pty: {e}"))?;
        Ok(Self {
            stdin: Mutex::new(Some(writer)),
            stdout: Mutex::new(Some(reader)),
            stderr: Mutex::new(None),
            pty_master: Some(master),
        })
    }

    /// Sets the pty window size.
    pub fn resize(&self, rows: u16, cols: u16) -> Result<(), String> {
        let master = self
            .pty_master
            .as_ref()
            .ok_or("the process has no terminal")?;
        let size = libc::winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCSWINSZ reads one winsize from the stack.
        let rc = unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &size) };
        if rc < 0 {
            return Err(format!("TIOCSWINSZ: {}", Errno::last()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn pipes_carry_bytes_and_report_the_end() {
        let (io, child) = ProcessIo::create(false).unwrap();
        let io = io.finish().unwrap();
        let ChildStdio::Pipes {
            stdin,
            stdout,
            stderr,
        } = child
        else {
            panic!("pipes")
        };
        io.stdin
            .lock()
            .await
            .as_ref()
            .unwrap()
            .write_all(b"ping")
            .await
            .unwrap();
        let mut got = [0u8; 4];
        nix::unistd::read(&stdin, &mut got).unwrap();
        assert_eq!(&got, b"ping");
        nix::unistd::write(&stdout, b"pong").unwrap();
        drop(stdout);
        let out = io.stdout.lock().await;
        assert_eq!(out.as_ref().unwrap().read(100).await.unwrap(), b"pong");
        assert!(out.as_ref().unwrap().read(100).await.unwrap().is_empty());
        drop(stderr);
        assert!(
            io.stderr
                .lock()
                .await
                .as_ref()
                .unwrap()
                .read(10)
                .await
                .unwrap()
                .is_empty()
        );
        assert!(io.resize(10, 10).is_err());
    }

    #[tokio::test]
    async fn a_pty_master_sent_over_the_socket_echoes_and_resizes() {
        let (pending, child) = ProcessIo::create(true).unwrap();
        let ChildStdio::Pty { socket } = child else {
            panic!("pty")
        };
        let pty = nix::pty::openpty(None, None).unwrap();
        assert!(
            super::super::spawn::send_fd_for_tests(socket.as_raw_fd(), pty.master.as_raw_fd()) > 0
        );
        drop(pty.master);
        let io = pending.finish().unwrap();
        let slave = pty.slave;
        io.resize(40, 120).unwrap();
        let mut size = libc::winsize {
            ws_row: 0,
            ws_col: 0,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCGWINSZ writes one winsize to the stack.
        unsafe { libc::ioctl(slave.as_raw_fd(), libc::TIOCGWINSZ, &mut size) };
        assert_eq!((size.ws_row, size.ws_col), (40, 120));
        nix::unistd::write(&slave, b"hi\n").unwrap();
        let out = io.stdout.lock().await;
        assert_eq!(out.as_ref().unwrap().read(100).await.unwrap(), b"hi\r\n");
        drop(slave);
        assert!(out.as_ref().unwrap().read(100).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_child_that_never_sent_a_master_is_an_error() {
        let (pending, child) = ProcessIo::create(true).unwrap();
        drop(child);
        assert!(pending.finish().is_err());
    }
}
