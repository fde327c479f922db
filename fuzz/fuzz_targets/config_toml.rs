//! The runtime configuration file (`configuration.toml`): any text parses to a valid
//! configuration or to an error naming the key; annotations (`key=value` lines after a
//! NUL byte in the input) then apply, or are refused leaving the configuration as it
//! was.
#![no_main]

use std::collections::HashMap;
use std::path::Path;

use kata_config::Config;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (toml, rest) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let Ok(toml) = std::str::from_utf8(toml) else {
        return;
    };
    let Ok(mut config) = Config::parse(toml, Path::new("fuzz.toml")) else {
        return;
    };
    let _ = config.vcpus();
    let _ = config.agent_kernel_params();
    let annotations: HashMap<String, String> = String::from_utf8_lossy(rest)
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| {
            (
                format!("io.katacontainers.config.hypervisor.{k}"),
                v.to_string(),
            )
        })
        .collect();
    let before = format!("{config:?}");
    if config.apply_annotations(&annotations).is_err() {
        assert_eq!(
            format!("{config:?}"),
            before,
            "a refused annotation changed the configuration"
        );
    }
});
