//! The runtime's connection to the guest agent: a ttrpc client over the VMM's hybrid
//! vsock unix socket (`CONNECT <port>\n` → `OK <host port>\n`) or, for the agent's host
//! mode, a plain unix socket. Connecting retries until the agent listens or a deadline;
//! with a [`ReadyListener`] it waits for the agent to announce itself instead of polling.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use kata_agent_protocols::agent_ttrpc::AgentServiceClient;
use kata_agent_protocols::health::{CheckRequest, health_check_response::ServingStatus};
use kata_agent_protocols::health_ttrpc::HealthClient;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};

pub use kata_agent_protocols::{AGENT_LOG_VSOCK_PORT, AGENT_READY_HOST_PORT, AGENT_VSOCK_PORT};

mod agent;
pub use agent::{Agent, RpcError, RpcResult, TtrpcAgent};

/// Where the agent listens, seen from the host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Endpoint {
    /// The VMM's hybrid vsock socket and the guest port.
    HybridVsock {
        /// The unix socket the VMM listens on.
        uds: PathBuf,
        /// The guest vsock port.
        port: u32,
    },
    /// A unix socket the agent itself listens on (host mode).
    Unix(PathBuf),
}

/// Why the agent could not be reached.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// Nothing answered before the deadline.
    #[error("the agent at {endpoint} did not answer within {waited:?}: {last}")]
    Timeout {
        /// The endpoint, for the message.
        endpoint: String,
        /// How long we tried.
        waited: Duration,
        /// The last failure seen.
        #[source]
        last: AttemptError,
    },
    /// The readiness listener could not be bound.
    #[error("listening for the agent's readiness at {}: {source}", path.display())]
    Listen {
        /// The socket path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// Why one attempt to reach the agent failed.
#[derive(Debug, thiserror::Error)]
pub enum AttemptError {
    /// No attempt fitted in the deadline.
    #[error("no attempt was made")]
    NotTried,
    /// The hybrid vsock stream could not be opened.
    #[error(transparent)]
    HybridVsock(#[from] HybridVsockError),
    /// The agent's own unix socket could not be connected.
    #[error("connecting {}: {source}", path.display())]
    Unix {
        /// The socket.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The stream opened but the agent is not serving.
    #[error(transparent)]
    Health(#[from] HealthError),
}

/// Why a stream through the VMM's hybrid vsock socket could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum HybridVsockError {
    /// A socket operation failed.
    #[error("hybrid vsock {}: {step}: {source}", uds.display())]
    Io {
        /// The VMM socket.
        uds: PathBuf,
        /// What was being done.
        step: &'static str,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The answer to CONNECT did not end within [`MAX_ANSWER`] bytes.
    #[error("hybrid vsock {}: the CONNECT answer is longer than {MAX_ANSWER} bytes", uds.display())]
    AnswerTooLong {
        /// The VMM socket.
        uds: PathBuf,
    },
    /// The VMM answered something other than `OK <port>`.
    #[error("hybrid vsock {}: handshake answer '{answer}' instead of OK", uds.display())]
    Refused {
        /// The VMM socket.
        uds: PathBuf,
        /// What it said.
        answer: String,
    },
    /// The exchange did not finish within its bound.
    #[error("hybrid vsock {}: no answer to CONNECT {port} within {timeout:?}", uds.display())]
    Timeout {
        /// The VMM socket.
        uds: PathBuf,
        /// The guest port asked for.
        port: u32,
        /// The bound.
        timeout: Duration,
    },
}

/// Why Health.Check did not report SERVING.
#[derive(Debug, thiserror::Error)]
pub enum HealthError {
    /// The call failed.
    #[error("Health.Check: {0}")]
    Rpc(#[source] ttrpc::Error),
    /// The agent answered, but not SERVING.
    #[error("Health.Check answered {0}")]
    NotServing(String),
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Endpoint::HybridVsock { uds, port } => write!(f, "hvsock://{}:{port}", uds.display()),
            Endpoint::Unix(path) => write!(f, "unix://{}", path.display()),
        }
    }
}

/// Longest handshake answer accepted (`OK 4294967295\n` is 14 bytes).
pub const MAX_ANSWER: usize = 32;

/// How long the VMM (and the guest behind it) may take to answer `CONNECT`.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The pause after the first failed attempt to reach a booting agent; it doubles after
/// each failure up to [`RETRY_MAX`].
pub const RETRY_FIRST: Duration = Duration::from_millis(10);

/// The longest pause between attempts. Every attempt costs the host and the booting guest
/// a vsock connect and its reset, so N sandboxes starting at once must not poll at a
/// fixed fast rate: at a fixed 20 ms, 10 started at once in the emulated x86_64 test host
/// had 9 of 10 miss a 600 s agent timeout; with this backoff all 10 ran in 441 s.
pub const RETRY_MAX: Duration = Duration::from_millis(100);

/// The pause between attempts while a [`ReadyListener`] waits for the agent's announce:
/// the announce ends the wait, so these attempts are only the fallback for an agent that
/// does not announce (or announced before the listener was bound).
pub const ANNOUNCED_RETRY: Duration = Duration::from_secs(1);

/// Where the VMM delivers the guest's connections to host vsock port `port`: a unix
/// socket at `<uds>_<port>`. The agent dials it once its ttrpc server serves
/// (`agent.ready_vport=`), so the runtime connects then instead of polling the guest.
/// The socket file goes with the value.
pub struct ReadyListener {
    listener: UnixListener,
    path: PathBuf,
}

impl ReadyListener {
    /// Binds `<uds>_<port>`, replacing a stale socket file.
    pub fn bind(uds: &Path, port: u32) -> Result<Self, ConnectError> {
        let path = PathBuf::from(format!("{}_{port}", uds.display()));
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path).map_err(|source| ConnectError::Listen {
            path: path.clone(),
            source,
        })?;
        Ok(Self { listener, path })
    }

    /// Waits up to `limit` for a connection (the announce) and hangs it up; true if one came.
    async fn announced_within(&self, limit: Duration) -> bool {
        tokio::select! {
            accepted = self.listener.accept() => accepted.is_ok(),
            _ = tokio::time::sleep(limit) => false,
        }
    }
}

impl Drop for ReadyListener {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Opens a stream to `port` through the VMM's hybrid vsock socket; a handshake that is
/// not answered within [`HANDSHAKE_TIMEOUT`] fails.
pub async fn connect_hybrid_vsock(uds: &Path, port: u32) -> Result<UnixStream, HybridVsockError> {
    connect_hybrid_vsock_within(uds, port, HANDSHAKE_TIMEOUT).await
}

/// [`connect_hybrid_vsock`] with its own bound on the whole exchange.
pub async fn connect_hybrid_vsock_within(
    uds: &Path,
    port: u32,
    timeout: Duration,
) -> Result<UnixStream, HybridVsockError> {
    tokio::time::timeout(timeout, handshake(uds, port))
        .await
        .map_err(|_| HybridVsockError::Timeout {
            uds: uds.to_path_buf(),
            port,
            timeout,
        })?
}

async fn handshake(uds: &Path, port: u32) -> Result<UnixStream, HybridVsockError> {
    let io = |step: &'static str| {
        move |source| HybridVsockError::Io {
            uds: uds.to_path_buf(),
            step,
            source,
        }
    };
    let mut stream = UnixStream::connect(uds).await.map_err(io("connecting"))?;
    stream
        .write_all(format!("CONNECT {port}\n").as_bytes())
        .await
        .map_err(io("sending CONNECT"))?;
    // Byte by byte: whatever follows the newline belongs to the guest's stream.
    let mut answer = Vec::new();
    loop {
        let byte = stream
            .read_u8()
            .await
            .map_err(io("reading the CONNECT answer"))?;
        if byte == b'\n' {
            break;
        }
        answer.push(byte);
        if answer.len() > MAX_ANSWER {
            return Err(HybridVsockError::AnswerTooLong {
                uds: uds.to_path_buf(),
            });
        }
    }
    let answer = String::from_utf8_lossy(&answer).into_owned();
    if !answer.starts_with("OK ") {
        return Err(HybridVsockError::Refused {
            uds: uds.to_path_buf(),
            answer,
        });
    }
    Ok(stream)
}

async fn open(endpoint: &Endpoint, timeout: Duration) -> Result<UnixStream, AttemptError> {
    match endpoint {
        Endpoint::HybridVsock { uds, port } => {
            Ok(connect_hybrid_vsock_within(uds, *port, timeout.min(HANDSHAKE_TIMEOUT)).await?)
        }
        Endpoint::Unix(path) => {
            UnixStream::connect(path)
                .await
                .map_err(|source| AttemptError::Unix {
                    path: path.clone(),
                    source,
                })
        }
    }
}

/// A connected agent.
#[derive(Clone)]
pub struct AgentClient {
    /// grpc.AgentService.
    pub agent: AgentServiceClient,
    /// grpc.Health.
    pub health: HealthClient,
}

/// A ttrpc context with a timeout (0 = none, as Kata uses for wait/read/write calls).
pub fn context(timeout: Duration) -> ttrpc::context::Context {
    ttrpc::context::with_timeout(timeout.as_nanos().min(i64::MAX as u128) as i64)
}

impl AgentClient {
    /// Connects and waits for Health.Check to answer SERVING, retrying until `deadline`.
    pub async fn connect(endpoint: &Endpoint, deadline: Duration) -> Result<Self, ConnectError> {
        Self::connect_when_ready(endpoint, None, deadline).await
    }

    /// [`AgentClient::connect`], but with `ready` the first attempt waits for the agent's
    /// announce and later ones come every [`ANNOUNCED_RETRY`] or at the next announce
    /// (at least [`RETRY_FIRST`] apart, whatever the guest sends); without it, attempts
    /// start at once and back off from [`RETRY_FIRST`] to [`RETRY_MAX`].
    pub async fn connect_when_ready(
        endpoint: &Endpoint,
        ready: Option<&ReadyListener>,
        deadline: Duration,
    ) -> Result<Self, ConnectError> {
        let started = Instant::now();
        let mut last = AttemptError::NotTried;
        let mut pause = RETRY_FIRST;
        if let Some(ready) = ready {
            ready.announced_within(ANNOUNCED_RETRY.min(deadline)).await;
        }
        while started.elapsed() < deadline {
            let remaining = deadline.saturating_sub(started.elapsed());
            match open(endpoint, remaining).await {
                Ok(stream) => {
                    let client =
                        ttrpc::r#async::Client::new(ttrpc::r#async::transport::Socket::new(stream));
                    let this = Self {
                        agent: AgentServiceClient::new(client.clone()),
                        health: HealthClient::new(client),
                    };
                    match this.check(Duration::from_secs(5)).await {
                        Ok(()) => return Ok(this),
                        Err(e) => last = e.into(),
                    }
                }
                Err(e) => last = e,
            }
            let left = deadline.saturating_sub(started.elapsed());
            match ready {
                Some(ready) => {
                    tokio::time::sleep(RETRY_FIRST.min(left)).await;
                    let left = deadline.saturating_sub(started.elapsed());
                    ready.announced_within(ANNOUNCED_RETRY.min(left)).await;
                }
                None => {
                    tokio::time::sleep(pause.min(left)).await;
                    pause = (pause * 2).min(RETRY_MAX);
                }
            }
        }
        Err(ConnectError::Timeout {
            endpoint: endpoint.to_string(),
            waited: deadline,
            last,
        })
    }

    /// One Health.Check.
    pub async fn check(&self, timeout: Duration) -> Result<(), HealthError> {
        let response = self
            .health
            .check(context(timeout), &CheckRequest::new())
            .await
            .map_err(HealthError::Rpc)?;
        match response.status.enum_value() {
            Ok(ServingStatus::SERVING) => Ok(()),
            other => Err(HealthError::NotServing(format!("{other:?}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::UnixListener;

    #[tokio::test]
    async fn the_hybrid_vsock_handshake_is_checked() {
        let dir = std::env::temp_dir().join(format!("agent-client-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let uds = dir.join("hv.sock");
        let listener = UnixListener::bind(&uds).unwrap();
        let server = tokio::spawn(async move {
            for answer in [&b"OK 1073741824\nrest"[..], b"NO\n"] {
                let (mut stream, _) = listener.accept().await.unwrap();
                let mut request = [0u8; 13];
                stream.read_exact(&mut request).await.unwrap();
                assert_eq!(&request, b"CONNECT 1024\n");
                stream.write_all(answer).await.unwrap();
            }
        });
        let mut stream = connect_hybrid_vsock(&uds, 1024).await.unwrap();
        let mut rest = [0u8; 4];
        stream.read_exact(&mut rest).await.unwrap();
        assert_eq!(&rest, b"rest");
        let err = connect_hybrid_vsock(&uds, 1024).await.unwrap_err();
        assert!(
            matches!(&err, HybridVsockError::Refused { answer, .. } if answer == "NO"),
            "{err}"
        );
        server.await.unwrap();
        let err = AgentClient::connect(
            &Endpoint::HybridVsock {
                uds: uds.clone(),
                port: 1024,
            },
            Duration::from_millis(100),
        )
        .await
        .err()
        .unwrap();
        assert!(err.to_string().contains("did not answer within"), "{err}");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn an_announcing_agent_is_tried_only_after_its_announce() {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
        let dir = std::env::temp_dir().join(format!("agent-client-ready-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let uds = dir.join("hv.sock");
        let vmm = UnixListener::bind(&uds).unwrap();
        let announced = Arc::new(AtomicBool::new(false));
        let (attempts, early) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        // A VMM whose guest refuses every CONNECT; it counts them, and those made before
        // the guest announced itself.
        let server = {
            let (announced, attempts, early) = (announced.clone(), attempts.clone(), early.clone());
            tokio::spawn(async move {
                loop {
                    let (mut stream, _) = vmm.accept().await.unwrap();
                    let mut request = [0u8; 13];
                    stream.read_exact(&mut request).await.unwrap();
                    attempts.fetch_add(1, Ordering::SeqCst);
                    if !announced.load(Ordering::SeqCst) {
                        early.fetch_add(1, Ordering::SeqCst);
                    }
                    stream.write_all(b"NO\n").await.unwrap();
                }
            })
        };
        let ready = ReadyListener::bind(&uds, AGENT_READY_HOST_PORT).unwrap();
        let announce_path = dir.join(format!("hv.sock_{AGENT_READY_HOST_PORT}"));
        assert!(announce_path.exists());
        let guest = {
            let (announced, path) = (announced.clone(), announce_path.clone());
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(200)).await;
                announced.store(true, Ordering::SeqCst);
                UnixStream::connect(path).await.unwrap();
            })
        };
        let endpoint = Endpoint::HybridVsock {
            uds: uds.clone(),
            port: 1024,
        };
        // The deadline ends before the 1 s fallback attempt would come.
        let err =
            AgentClient::connect_when_ready(&endpoint, Some(&ready), Duration::from_millis(600))
                .await
                .err()
                .unwrap();
        assert!(err.to_string().contains("instead of OK"), "{err}");
        assert_eq!(
            attempts.load(Ordering::SeqCst),
            1,
            "one attempt, at the announce"
        );
        assert_eq!(
            early.load(Ordering::SeqCst),
            0,
            "no attempt before the announce"
        );
        guest.await.unwrap();
        drop(ready);
        assert!(
            !announce_path.exists(),
            "the listener's socket file goes with it"
        );
        server.abort();
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn an_unanswered_handshake_times_out() {
        let dir = std::env::temp_dir().join(format!("agent-client-mute-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let uds = dir.join("hv.sock");
        let listener = UnixListener::bind(&uds).unwrap();
        // Accepts and reads, never answers (a guest that never takes the connection).
        let server = tokio::spawn(async move {
            let mut held = Vec::new();
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                held.push(stream);
            }
        });
        let err = connect_hybrid_vsock_within(&uds, 1024, Duration::from_millis(200))
            .await
            .unwrap_err();
        assert!(
            err.to_string().contains("no answer to CONNECT 1024"),
            "{err}"
        );
        let started = Instant::now();
        let endpoint = Endpoint::HybridVsock {
            uds: uds.clone(),
            port: 1024,
        };
        let err = AgentClient::connect(&endpoint, Duration::from_millis(300))
            .await
            .err()
            .unwrap();
        assert!(err.to_string().contains("did not answer within"), "{err}");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
        server.abort();
        std::fs::remove_dir_all(dir).unwrap();
    }
}
