//! The start-path trace: each phase of a sandbox or container operation logged at debug
//! level as `{"msg":"trace","op":…,"id":…,"phase":…,"ms":…}`, `ms` counted from the
//! operation's start. `make bench BENCH=trace` takes the medians per phase.

use std::time::Instant;

use slog::Logger;

/// One traced operation.
pub struct Trace {
    log: Logger,
    op: &'static str,
    id: String,
    started: Instant,
}

impl Trace {
    /// Starts tracing `op` on `id` (the clock starts now).
    pub fn start(log: &Logger, op: &'static str, id: &str) -> Self {
        Self {
            log: log.clone(),
            op,
            id: id.to_string(),
            started: Instant::now(),
        }
    }

    /// Records that `phase` has just ended.
    pub fn phase(&self, phase: &'static str) {
        let ms = self.started.elapsed().as_secs_f64() * 1000.0;
        slog::debug!(self.log, "trace"; "op" => self.op, "id" => &self.id, "phase" => phase, "ms" => format!("{ms:.1}"));
    }
}
