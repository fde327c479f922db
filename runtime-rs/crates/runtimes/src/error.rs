//! The runtime's one error type; the shim maps its [`Code`] onto ttrpc's.

/// What kind of failure, as containerd's task API distinguishes them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Code {
    /// Bad input (spec, options, configuration).
    InvalidArgument,
    /// No such container or process.
    NotFound,
    /// The id is taken.
    AlreadyExists,
    /// Not possible in the current state.
    FailedPrecondition,
    /// Not supported by kata-rv.
    Unimplemented,
    /// Everything else: the VM, the agent, the host.
    Internal,
}

/// A lifecycle call that failed, with the message the user sees.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct RuntimeError {
    /// Its kind.
    pub code: Code,
    /// What failed and, where known, what to do.
    pub message: String,
    /// The underlying failure.
    #[source]
    pub source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

/// Result of a lifecycle call.
pub type RuntimeResult<T> = Result<T, RuntimeError>;

impl RuntimeError {
    /// An error without a source.
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            source: None,
        }
    }

    /// An error caused by `source`; the message is `context: source`.
    pub fn caused(
        code: Code,
        context: impl std::fmt::Display,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Self {
            code,
            message: format!("{context}: {source}"),
            source: Some(Box::new(source)),
        }
    }

    /// No such container (`exec_id` empty) or process.
    pub fn not_found(id: &str, exec_id: &str) -> Self {
        if exec_id.is_empty() {
            Self::new(Code::NotFound, format!("container {id} not found"))
        } else {
            Self::new(
                Code::NotFound,
                format!("process {exec_id} of container {id} not found"),
            )
        }
    }
}
