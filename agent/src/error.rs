//! RPC errors: a ttrpc status code plus a message that names the culprit.

use ttrpc::Code;

/// An error the agent returns to its client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentError {
    /// The status code.
    pub code: Code,
    /// What went wrong, naming the container, process, field or path.
    pub message: String,
}

/// Shorthand for results of agent operations.
pub type AgentResult<T> = Result<T, AgentError>;

impl AgentError {
    /// Bad input (spec, ids, paths).
    pub fn invalid(message: impl Into<String>) -> Self {
        Self {
            code: Code::INVALID_ARGUMENT,
            message: message.into(),
        }
    }

    /// An unknown container or process.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self {
            code: Code::NOT_FOUND,
            message: message.into(),
        }
    }

    /// A duplicate id.
    pub fn exists(message: impl Into<String>) -> Self {
        Self {
            code: Code::ALREADY_EXISTS,
            message: message.into(),
        }
    }

    /// Right request, wrong state (exec into a stopped container, ...).
    pub fn precondition(message: impl Into<String>) -> Self {
        Self {
            code: Code::FAILED_PRECONDITION,
            message: message.into(),
        }
    }

    /// A failure inside the guest.
    pub fn internal(message: impl Into<String>) -> Self {
        Self {
            code: Code::INTERNAL,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for AgentError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}: {}", self.code, self.message)
    }
}

impl From<AgentError> for ttrpc::Error {
    fn from(error: AgentError) -> Self {
        ttrpc::Error::RpcStatus(ttrpc::get_status(error.code, error.message))
    }
}
