//! The agent's log records on vsock port 1025, re-logged by the shim at their own level:
//! any line, JSON or not, of any level and shape.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|line: &str| {
    kata_runtimes::agent_log::forward(&kata_rv_fuzz::discard_logger(), line);
});
