//! The `log` crate's records (Dragonball and the rust-vmm crates log through it) into the
//! shim's slog logger, at their own level, so they reach containerd's log FIFO as JSON.

use std::sync::{Arc, Mutex};

use slog::Logger;

/// Forwards `log` records to the shim logger it shares.
struct Bridge(Arc<Mutex<Logger>>);

impl log::Log for Bridge {
    fn enabled(&self, _: &log::Metadata) -> bool {
        true
    }

    fn log(&self, record: &log::Record) {
        let log = self.0.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let target = record.target().to_string();
        let args = record.args();
        match record.level() {
            log::Level::Error => {
                slog::error!(log, "{}", args; "subsystem" => "vmm", "target" => target)
            }
            log::Level::Warn => {
                slog::warn!(log, "{}", args; "subsystem" => "vmm", "target" => target)
            }
            log::Level::Info => {
                slog::info!(log, "{}", args; "subsystem" => "vmm", "target" => target)
            }
            log::Level::Debug => {
                slog::debug!(log, "{}", args; "subsystem" => "vmm", "target" => target)
            }
            log::Level::Trace => {
                slog::trace!(log, "{}", args; "subsystem" => "vmm", "target" => target)
            }
        }
    }

    fn flush(&self) {}
}

/// Installs the bridge as the process's `log` backend (once; later calls do nothing).
/// The slog drain filters by the configured level, so `log` itself passes everything.
pub fn install(shim_log: Arc<Mutex<Logger>>) {
    if log::set_boxed_logger(Box::new(Bridge(shim_log))).is_ok() {
        log::set_max_level(log::LevelFilter::Trace);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use slog::Drain;

    /// Collects formatted messages with their level.
    struct Collect(Arc<Mutex<Vec<String>>>);

    impl Drain for Collect {
        type Ok = ();
        type Err = slog::Never;
        fn log(&self, record: &slog::Record, _: &slog::OwnedKVList) -> Result<(), slog::Never> {
            self.0.lock().unwrap().push(format!(
                "{} {}",
                record.level().as_short_str(),
                record.msg()
            ));
            Ok(())
        }
    }

    #[test]
    fn vmm_records_reach_the_shim_log_at_their_level() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let logger = Logger::root(Collect(seen.clone()).fuse(), slog::o!());
        install(Arc::new(Mutex::new(logger)));
        log::warn!("irqchip: no AIA, falling back to the userspace PLIC");
        log::info!("VM ended: status {}", 0);
        let seen = seen.lock().unwrap();
        assert!(
            seen.contains(&"WARN irqchip: no AIA, falling back to the userspace PLIC".to_string()),
            "{seen:?}"
        );
        assert!(
            seen.contains(&"INFO VM ended: status 0".to_string()),
            "{seen:?}"
        );
    }
}
