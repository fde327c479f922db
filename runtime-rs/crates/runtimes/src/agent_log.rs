//! The agent's log records (JSON lines on vsock port 1025) re-logged into the shim log at
//! their own level, each line bounded.

use slog::Logger;

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
pub fn forward(log: &Logger, line: &str) {
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
}
