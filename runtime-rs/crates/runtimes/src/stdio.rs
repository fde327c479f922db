//! stdio between containerd's FIFOs and the agent (ReadStdout/ReadStderr/WriteStdin,
//! empty data = EOF), and the wait for a process's exit.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use agent_client::Agent;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;

use crate::process::{Exit, StdioPaths};

/// How long output may keep flowing after a process has exited (a daemonised child can
/// hold its stdout open forever).
pub const DRAIN_AFTER_EXIT: Duration = Duration::from_secs(10);

/// Bytes asked for per read, and sent per write.
const CHUNK: usize = 32 * 1024;

async fn copy_out(agent: Arc<dyn Agent>, id: String, exec: String, path: String, stderr: bool) {
    let mut sink = if path.is_empty() {
        None
    } else {
        tokio::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .await
            .ok()
    };
    while let Ok(data) = agent.read_output(&id, &exec, stderr, CHUNK as u32).await {
        if data.is_empty() {
            break;
        }
        if let Some(out) = sink.as_mut()
            && out.write_all(&data).await.is_err()
        {
            sink = None;
        }
    }
    if let Some(mut out) = sink {
        let _ = out.flush().await;
    }
}

async fn copy_in(
    agent: Arc<dyn Agent>,
    id: String,
    exec: String,
    path: String,
    done: watch::Sender<bool>,
) {
    if let Ok(mut source) = tokio::fs::File::open(&path).await {
        let mut buffer = vec![0u8; CHUNK];
        loop {
            match source.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if agent
                        .write_stdin(&id, &exec, buffer[..n].to_vec())
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            }
        }
    }
    // End of input: empty data closes the process's stdin.
    let _ = agent.write_stdin(&id, &exec, Vec::new()).await;
    done.send_replace(true);
}

/// Starts copying stdio; the returned task ends when the output has been drained, and
/// the watch turns true once stdin has been forwarded to its end and closed.
pub fn start_io(
    agent: &Arc<dyn Agent>,
    id: &str,
    exec: &str,
    stdio: &StdioPaths,
) -> (tokio::task::JoinHandle<()>, watch::Receiver<bool>) {
    let (done_tx, done) = watch::channel(stdio.stdin.is_empty());
    if !stdio.stdin.is_empty() {
        tokio::spawn(copy_in(
            agent.clone(),
            id.into(),
            exec.into(),
            stdio.stdin.clone(),
            done_tx,
        ));
    }
    let out = tokio::spawn(copy_out(
        agent.clone(),
        id.into(),
        exec.into(),
        stdio.stdout.clone(),
        false,
    ));
    let err = (!stdio.terminal).then(|| {
        tokio::spawn(copy_out(
            agent.clone(),
            id.into(),
            exec.into(),
            stdio.stderr.clone(),
            true,
        ))
    });
    let drained = tokio::spawn(async move {
        let _ = out.await;
        if let Some(err) = err {
            let _ = err.await;
        }
    });
    (drained, done)
}

/// Waits for the process in the guest, then for its output (bounded), and returns its
/// exit.
pub async fn wait_exit(
    agent: &Arc<dyn Agent>,
    id: &str,
    exec: &str,
    io: tokio::task::JoinHandle<()>,
) -> Exit {
    let status = match agent.wait_process(id, exec).await {
        Ok(status) => status as u32,
        // The agent (or the VM) is gone: report the process as killed.
        Err(_) => 128 + 9,
    };
    let at = SystemTime::now();
    let _ = tokio::time::timeout(DRAIN_AFTER_EXIT, io).await;
    Exit { status, at }
}
