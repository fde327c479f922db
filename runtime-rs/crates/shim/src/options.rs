//! containerd's runtime options for this shim: `runtimeoptions.v1.Options`, of which
//! `config_path` is honoured.

use containerd_shim_protos::protobuf::MessageField;
use containerd_shim_protos::protobuf::well_known_types::any::Any;

/// The protobuf type of the runtime options kata-rv understands.
pub const RUNTIME_OPTIONS_TYPE: &str = "runtimeoptions.v1.Options";

/// The runtime options containerd sends: `runtimeoptions.v1.Options` (type_url = 1,
/// config_path = 2) is understood; anything else is an error naming what was sent.
pub fn config_path_from_options(options: &MessageField<Any>) -> Result<Option<String>, String> {
    let Some(any) = options.as_ref() else {
        return Ok(None);
    };
    if !any.type_url.ends_with(RUNTIME_OPTIONS_TYPE) {
        return Err(format!(
            "runtime options of type '{}' are not understood by kata-rv (expected runtimeoptions.v1.Options)",
            any.type_url
        ));
    }
    let malformed = || "runtime options: malformed runtimeoptions.v1.Options".to_string();
    let mut input = containerd_shim_protos::protobuf::CodedInputStream::from_bytes(&any.value);
    let mut config_path = None;
    while let Some(tag) = input.read_raw_tag_or_eof().map_err(|_| malformed())? {
        match (tag >> 3, tag & 7) {
            (1, 2) => {
                input.read_string().map_err(|_| malformed())?;
            }
            (2, 2) => config_path = Some(input.read_string().map_err(|_| malformed())?),
            (field, _) => {
                return Err(format!(
                    "runtime options: field {field} of runtimeoptions.v1.Options is not supported"
                ));
            }
        }
    }
    Ok(config_path.filter(|p| !p.is_empty()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_path_is_read_from_runtime_options() {
        // runtimeoptions.v1.Options { type_url = 1: "x", config_path = 2: "/etc/k.toml" }
        let mut value = vec![0x0a, 1, b'x', 0x12, 11];
        value.extend_from_slice(b"/etc/k.toml");
        let any = Any {
            type_url: "type.googleapis.com/runtimeoptions.v1.Options".into(),
            value,
            ..Default::default()
        };
        assert_eq!(
            config_path_from_options(&MessageField::some(any))
                .unwrap()
                .as_deref(),
            Some("/etc/k.toml")
        );
        assert_eq!(
            config_path_from_options(&MessageField::none()).unwrap(),
            None
        );
    }

    #[test]
    fn unknown_runtime_options_are_errors() {
        let runc = Any {
            type_url: "containerd.runc.v1.Options".into(),
            value: vec![8, 1],
            ..Default::default()
        };
        let err = config_path_from_options(&MessageField::some(runc)).unwrap_err();
        assert!(err.contains("containerd.runc.v1.Options"), "{err}");
        // config_body (field 3) is a newer option this runtime does not take.
        let body = Any {
            type_url: "runtimeoptions.v1.Options".into(),
            value: vec![0x1a, 1, b'x'],
            ..Default::default()
        };
        assert!(
            config_path_from_options(&MessageField::some(body))
                .unwrap_err()
                .contains("field 3")
        );
        let truncated = Any {
            type_url: "runtimeoptions.v1.Options".into(),
            value: vec![0x12, 9, b'/'],
            ..Default::default()
        };
        assert!(
            config_path_from_options(&MessageField::some(truncated))
                .unwrap_err()
                .contains("malformed")
        );
    }
}
