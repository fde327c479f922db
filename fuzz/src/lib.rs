//! Shared parts of kata-rv's fuzz targets (`fuzz_targets/`, run with `make fuzz`).

pub mod virtio;

/// A slog logger that drops everything (the parsers under test log as they go).
pub fn discard_logger() -> slog::Logger {
    slog::Logger::root(slog::Discard, slog::o!())
}
