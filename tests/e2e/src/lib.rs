//! End-to-end tests live in `tests/ctr.rs` (feature `e2e`).
