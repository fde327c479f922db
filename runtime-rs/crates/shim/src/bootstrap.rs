//! What containerd writes on the shim's stdin at `start`, in every version, and what the
//! shim prints back.
//!
//! - containerd 1.6–2.2: nothing, or the runtime options as a protobuf `Any`; the shim
//!   prints its address as plain text.
//! - containerd 2.3+: a protobuf `containerd.runtime.bootstrap.v1.BootstrapParams`
//!   (instance_id = 1, namespace = 2, log_level = 3, containerd_version = 4,
//!   containerd_ttrpc_address = 5, containerd_grpc_address = 6, containerd_binary = 7,
//!   extensions = 8 (each `Extension { Any value = 1 }`, the runtime options among them),
//!   socket_dir = 9); the shim prints a protobuf `BootstrapResult` (version = 1,
//!   address = 2, protocol = 3).
//!
//! An `Any` can decode as `BootstrapParams` too (type_url and value land in fields 1 and
//! 2), so the input is `BootstrapParams` only when it also carries what containerd always
//! sends (its version and addresses); its instance id and namespace must then be the
//! ones on the command line, as containerd's own shims check.

use std::io::Read;

use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::{CodedInputStream, CodedOutputStream, Message};

/// Most bytes accepted on stdin (containerd sends a few hundred).
pub const MAX_INPUT: u64 = 1 << 20;

/// containerd 2.3+'s start parameters (the fields the shim uses).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BootstrapParams {
    /// The container or sandbox id.
    pub instance_id: String,
    /// containerd namespace.
    pub namespace: String,
    /// Requested log level (0 info, negative more verbose).
    pub log_level: i32,
    /// containerd's version.
    pub containerd_version: String,
    /// containerd's ttrpc address (events are published there).
    pub containerd_ttrpc_address: String,
    /// containerd's gRPC address.
    pub containerd_grpc_address: String,
    /// containerd's binary.
    pub containerd_binary: String,
    /// Typed extensions; the runtime options are one of them.
    pub extensions: Vec<Any>,
    /// Where the shim's socket goes (None: `/run/containerd/s`).
    pub socket_dir: Option<String>,
}

/// What `start` was given.
#[derive(Clone, Debug, PartialEq)]
pub enum StartInput {
    /// Nothing (1.6–2.2 without runtime options).
    Empty,
    /// 1.6–2.2: the runtime options.
    Options(Any),
    /// 2.3+.
    Bootstrap(BootstrapParams),
}

/// Why the stdin of `start` was refused.
#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    /// Neither BootstrapParams for this instance nor an `Any`.
    #[error(
        "start: stdin is neither containerd's BootstrapParams for {namespace}/{id} nor runtime options ({len} bytes)"
    )]
    Unrecognised {
        /// The id on the command line.
        id: String,
        /// The namespace on the command line.
        namespace: String,
        /// How many bytes were read.
        len: usize,
    },
    /// BootstrapParams for another instance than the command line names.
    #[error("start: BootstrapParams are for {given}, the command line for {expected}")]
    Mismatch {
        /// namespace/id in the parameters.
        given: String,
        /// namespace/id on the command line.
        expected: String,
    },
    /// More than [`MAX_INPUT`] bytes.
    #[error("start: more than {MAX_INPUT} bytes on stdin")]
    TooLong,
    /// Reading stdin failed.
    #[error("start: reading stdin: {0}")]
    Read(#[source] std::io::Error),
}

impl StartInput {
    /// Reads all of `reader` (at most [`MAX_INPUT`] bytes) and parses it for instance
    /// `id` in `namespace`.
    pub fn read(reader: impl Read, id: &str, namespace: &str) -> Result<Self, BootstrapError> {
        let mut bytes = Vec::new();
        reader
            .take(MAX_INPUT + 1)
            .read_to_end(&mut bytes)
            .map_err(BootstrapError::Read)?;
        if bytes.len() as u64 > MAX_INPUT {
            return Err(BootstrapError::TooLong);
        }
        Self::parse(&bytes, id, namespace)
    }

    /// Tells the versions apart (see the module doc).
    pub fn parse(bytes: &[u8], id: &str, namespace: &str) -> Result<Self, BootstrapError> {
        if bytes.is_empty() {
            return Ok(Self::Empty);
        }
        if let Ok(params) = BootstrapParams::decode(bytes)
            && params.sent_by_containerd()
        {
            if params.instance_id != id || params.namespace != namespace {
                return Err(BootstrapError::Mismatch {
                    given: format!("{}/{}", params.namespace, params.instance_id),
                    expected: format!("{namespace}/{id}"),
                });
            }
            return Ok(Self::Bootstrap(params));
        }
        match Any::parse_from_bytes(bytes) {
            Ok(any) if !any.type_url.is_empty() => Ok(Self::Options(any)),
            _ => Err(BootstrapError::Unrecognised {
                id: id.to_string(),
                namespace: namespace.to_string(),
                len: bytes.len(),
            }),
        }
    }

    /// The runtime options, wherever they came.
    pub fn runtime_options(&self) -> Option<&Any> {
        match self {
            Self::Empty => None,
            Self::Options(any) => Some(any),
            Self::Bootstrap(params) => params
                .extensions
                .iter()
                .find(|any| any.type_url.ends_with(crate::options::RUNTIME_OPTIONS_TYPE)),
        }
    }

    /// The socket directory containerd asked for, if any.
    pub fn socket_dir(&self) -> Option<&str> {
        match self {
            Self::Bootstrap(params) => params.socket_dir.as_deref().filter(|d| !d.is_empty()),
            _ => None,
        }
    }

    /// containerd's ttrpc address, when it came in the parameters.
    pub fn ttrpc_address(&self) -> Option<&str> {
        match self {
            Self::Bootstrap(params) => {
                Some(params.containerd_ttrpc_address.as_str()).filter(|a| !a.is_empty())
            }
            _ => None,
        }
    }

    /// What `start` prints for a shim serving `address` (`unix://…`).
    pub fn reply(&self, address: &str) -> Vec<u8> {
        match self {
            Self::Bootstrap(_) => bootstrap_result(address),
            _ => address.as_bytes().to_vec(),
        }
    }
}

impl BootstrapParams {
    /// Whether this came from containerd rather than being an `Any` read as parameters
    /// (an `Any` only has fields 1 and 2; containerd always sends its version and
    /// addresses).
    pub fn sent_by_containerd(&self) -> bool {
        !self.containerd_version.is_empty()
            || !self.containerd_ttrpc_address.is_empty()
            || !self.containerd_grpc_address.is_empty()
            || !self.containerd_binary.is_empty()
    }

    /// Decodes the protobuf message; unknown fields are skipped.
    pub fn decode(bytes: &[u8]) -> Result<Self, containerd_shim_protos::protobuf::Error> {
        let mut params = Self::default();
        let mut input = CodedInputStream::from_bytes(bytes);
        while let Some(tag) = input.read_raw_tag_or_eof()? {
            match (tag >> 3, tag & 7) {
                (1, 2) => params.instance_id = input.read_string()?,
                (2, 2) => params.namespace = input.read_string()?,
                (3, 0) => params.log_level = input.read_int32()?,
                (4, 2) => params.containerd_version = input.read_string()?,
                (5, 2) => params.containerd_ttrpc_address = input.read_string()?,
                (6, 2) => params.containerd_grpc_address = input.read_string()?,
                (7, 2) => params.containerd_binary = input.read_string()?,
                (8, 2) => {
                    if let Some(any) = extension_value(&input.read_bytes()?)? {
                        params.extensions.push(any);
                    }
                }
                (9, 2) => params.socket_dir = Some(input.read_string()?),
                _ => containerd_shim_protos::protobuf::rt::skip_field_for_tag(tag, &mut input)?,
            }
        }
        Ok(params)
    }

    /// Encodes the message as containerd does.
    #[cfg(test)]
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        {
            let mut stream = CodedOutputStream::vec(&mut out);
            let strings = [
                (1, &self.instance_id),
                (2, &self.namespace),
                (4, &self.containerd_version),
                (5, &self.containerd_ttrpc_address),
                (6, &self.containerd_grpc_address),
                (7, &self.containerd_binary),
            ];
            for (field, value) in strings {
                if !value.is_empty() {
                    stream.write_string(field, value).expect("writing to a Vec");
                }
            }
            if self.log_level != 0 {
                stream
                    .write_int32(3, self.log_level)
                    .expect("writing to a Vec");
            }
            for any in &self.extensions {
                let mut extension = Vec::new();
                {
                    let mut inner = CodedOutputStream::vec(&mut extension);
                    inner
                        .write_bytes(1, &any.write_to_bytes().expect("encoding an Any"))
                        .expect("writing to a Vec");
                    inner.flush().expect("writing to a Vec");
                }
                stream.write_bytes(8, &extension).expect("writing to a Vec");
            }
            if let Some(dir) = &self.socket_dir {
                stream.write_string(9, dir).expect("writing to a Vec");
            }
            stream.flush().expect("writing to a Vec");
        }
        out
    }
}

/// The `Any` in an `Extension` message.
fn extension_value(bytes: &[u8]) -> Result<Option<Any>, containerd_shim_protos::protobuf::Error> {
    let mut input = CodedInputStream::from_bytes(bytes);
    let mut value = None;
    while let Some(tag) = input.read_raw_tag_or_eof()? {
        match (tag >> 3, tag & 7) {
            (1, 2) => value = Some(Any::parse_from_bytes(&input.read_bytes()?)?),
            _ => containerd_shim_protos::protobuf::rt::skip_field_for_tag(tag, &mut input)?,
        }
    }
    Ok(value)
}

/// A `BootstrapResult`: shim protocol version 2 (task API v2) over ttrpc at `address`.
pub fn bootstrap_result(address: &str) -> Vec<u8> {
    let mut out = Vec::new();
    {
        let mut stream = CodedOutputStream::vec(&mut out);
        stream.write_int32(1, 2).expect("writing to a Vec");
        stream.write_string(2, address).expect("writing to a Vec");
        stream.write_string(3, "ttrpc").expect("writing to a Vec");
        stream.flush().expect("writing to a Vec");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options_any(config_path: &str) -> Any {
        let mut value = Vec::new();
        {
            let mut stream = CodedOutputStream::vec(&mut value);
            stream.write_string(2, config_path).unwrap();
            stream.flush().unwrap();
        }
        Any {
            type_url: format!("containerd.io/{}", crate::options::RUNTIME_OPTIONS_TYPE),
            value,
            ..Default::default()
        }
    }

    #[test]
    fn every_version_is_told_apart() {
        assert_eq!(
            StartInput::parse(b"", "c1", "default").unwrap(),
            StartInput::Empty
        );
        let options = options_any("/etc/kata/x.toml");
        let bytes = options.write_to_bytes().unwrap();
        assert_eq!(
            StartInput::parse(&bytes, "c1", "default").unwrap(),
            StartInput::Options(options.clone())
        );
        let params = BootstrapParams {
            instance_id: "c1".into(),
            namespace: "k8s.io".into(),
            log_level: -4,
            containerd_version: "2.3.4".into(),
            containerd_ttrpc_address: "/run/containerd/containerd.sock.ttrpc".into(),
            extensions: vec![options.clone()],
            socket_dir: Some("/run/containerd/s".into()),
            ..Default::default()
        };
        let input = StartInput::parse(&params.encode(), "c1", "k8s.io").unwrap();
        assert_eq!(input, StartInput::Bootstrap(params.clone()));
        assert_eq!(input.runtime_options(), Some(&options));
        assert_eq!(input.socket_dir(), Some("/run/containerd/s"));
        // The same bytes for another instance are not its parameters.
        let err = StartInput::parse(&params.encode(), "c2", "k8s.io").unwrap_err();
        assert!(matches!(err, BootstrapError::Mismatch { .. }), "{err}");
    }

    #[test]
    fn garbage_is_refused_by_name() {
        let err = StartInput::parse(&[0xff, 0xff, 0xff], "c1", "default").unwrap_err();
        assert!(err.to_string().contains("default/c1"), "{err}");
    }

    #[test]
    fn the_result_decodes_as_containerd_reads_it() {
        let bytes = bootstrap_result("unix:///run/containerd/s/abc");
        let mut input = CodedInputStream::from_bytes(&bytes);
        let mut fields = Vec::new();
        while let Some(tag) = input.read_raw_tag_or_eof().unwrap() {
            match tag >> 3 {
                1 => fields.push(input.read_int32().unwrap().to_string()),
                _ => fields.push(input.read_string().unwrap()),
            }
        }
        assert_eq!(fields, ["2", "unix:///run/containerd/s/abc", "ttrpc"]);
    }
}
