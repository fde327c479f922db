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

/// Longest agent log line forwarded; the rest of a longer line is discarded.
pub const MAX_AGENT_LINE: usize = 16 * 1024;

/// Reads one line of at most [`MAX_AGENT_LINE`] bytes (a longer one is cut there and its
/// remainder skipped); None at the end of the stream or on an error.
pub async fn read_bounded_line<R: tokio::io::AsyncBufRead + Unpin>(
    reader: &mut R,
) -> Option<String> {
    use tokio::io::AsyncBufReadExt;
    let mut line = Vec::new();
    loop {
        let chunk = reader.fill_buf().await.ok()?;
        if chunk.is_empty() {
            return (!line.is_empty()).then(|| String::from_utf8_lossy(&line).into_owned());
        }
        let (take, end) = match chunk.iter().position(|&b| b == b'\n') {
            Some(i) => (i, true),
            None => (chunk.len(), false),
        };
        let room = MAX_AGENT_LINE.saturating_sub(line.len());
        line.extend_from_slice(&chunk[..take.min(room)]);
        reader.consume(take + usize::from(end));
        if end {
            return Some(String::from_utf8_lossy(&line).into_owned());
        }
    }
}

/// Re-logs one JSON line from the agent's log port at its own level.
pub fn forward_agent_line(log: &Logger, line: &str) {
    let parsed: serde_json::Value =
        serde_json::from_str(line).unwrap_or_else(|_| serde_json::json!({"msg": line}));
    let msg = parsed["msg"].as_str().unwrap_or(line).to_string();
    let level = parsed["level"].as_str().unwrap_or("INFO");
    let record = parsed.to_string();
    match level {
        "ERRO" | "CRIT" => slog::error!(log, "{}", msg; "subsystem" => "agent", "record" => record),
        "WARN" => slog::warn!(log, "{}", msg; "subsystem" => "agent", "record" => record),
        "DEBG" | "TRCE" => slog::debug!(log, "{}", msg; "subsystem" => "agent", "record" => record),
        _ => slog::info!(log, "{}", msg; "subsystem" => "agent", "record" => record),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn agent_lines_are_bounded() {
        let mut input = Vec::new();
        input.extend_from_slice(b"short\n");
        input.extend(std::iter::repeat_n(b'x', 3 * MAX_AGENT_LINE));
        input.extend_from_slice(b"\nlast");
        let mut reader = tokio::io::BufReader::with_capacity(1000, &input[..]);
        assert_eq!(
            read_bounded_line(&mut reader).await.as_deref(),
            Some("short")
        );
        assert_eq!(
            read_bounded_line(&mut reader).await.map(|l| l.len()),
            Some(MAX_AGENT_LINE)
        );
        assert_eq!(
            read_bounded_line(&mut reader).await.as_deref(),
            Some("last")
        );
        assert_eq!(read_bounded_line(&mut reader).await, None);
    }

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
