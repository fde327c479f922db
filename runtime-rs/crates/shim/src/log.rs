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
    let json = slog_json::Json::new(sink)
        .add_default_keys()
        .set_newlines(true)
        .build();
    let level = if debug {
        slog::Level::Debug
    } else {
        slog::Level::Info
    };
    let drain = Mutex::new(json).filter_level(level).fuse();
    Logger::root(
        drain,
        o!("source" => "kata-rv-shim", "id" => id.to_string(), "pid" => std::process::id()),
    )
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
