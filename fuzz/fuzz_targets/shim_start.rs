//! What containerd writes on the shim's stdin at `start` (nothing, runtime options as a
//! protobuf `Any`, or 2.3+'s BootstrapParams) and the runtime options' `config_path`:
//! every input is understood or refused with an error, and an accepted BootstrapParams
//! always names the instance on the command line.
#![no_main]

// The shim is a binary crate: its two parser modules are compiled in here as they are.
#[allow(dead_code)]
#[path = "../../runtime-rs/crates/shim/src/bootstrap.rs"]
mod bootstrap;
#[allow(dead_code)]
#[path = "../../runtime-rs/crates/shim/src/options.rs"]
mod options;

use bootstrap::StartInput;
use containerd_shim_protos::protobuf::MessageField;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(input) = StartInput::parse(data, "fuzz-id", "k8s.io") else {
        return;
    };
    if let StartInput::Bootstrap(params) = &input {
        assert_eq!(
            (params.instance_id.as_str(), params.namespace.as_str()),
            ("fuzz-id", "k8s.io")
        );
        let _ = input.reply("unix:///run/fuzz.sock");
    }
    let _ = input.socket_dir();
    let _ = input.ttrpc_address();
    if let Some(any) = input.runtime_options() {
        let _ = options::config_path_from_options(&MessageField::some(any.clone()));
    }
});
