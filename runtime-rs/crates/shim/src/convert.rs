//! Between containerd's protobuf types and the runtime's: errors, statuses, stdio, mounts.

use containerd_shim_protos::api::Mount;
use containerd_shim_protos::types::task::Status as TaskStatus;
use kata_resource::RootfsMount;
use kata_runtimes::{Code, RuntimeError, Status, StdioPaths};

/// The one mapping of runtime errors onto ttrpc status codes.
pub fn to_ttrpc(e: RuntimeError) -> ttrpc::Error {
    let code = match e.code {
        Code::InvalidArgument => ttrpc::Code::INVALID_ARGUMENT,
        Code::NotFound => ttrpc::Code::NOT_FOUND,
        Code::AlreadyExists => ttrpc::Code::ALREADY_EXISTS,
        Code::FailedPrecondition => ttrpc::Code::FAILED_PRECONDITION,
        Code::Unimplemented => ttrpc::Code::UNIMPLEMENTED,
        Code::Internal => ttrpc::Code::INTERNAL,
    };
    ttrpc::Error::RpcStatus(ttrpc::get_status(code, e.message))
}

/// An INVALID_ARGUMENT error.
pub fn invalid(message: impl Into<String>) -> ttrpc::Error {
    to_ttrpc(RuntimeError::new(Code::InvalidArgument, message))
}

/// containerd's task status of a runtime status.
pub fn status_of(status: Status) -> TaskStatus {
    match status {
        Status::Created => TaskStatus::CREATED,
        Status::Running => TaskStatus::RUNNING,
        Status::Paused => TaskStatus::PAUSED,
        Status::Stopped => TaskStatus::STOPPED,
    }
}

/// The runtime's stdio paths.
pub fn stdio(stdin: &str, stdout: &str, stderr: &str, terminal: bool) -> StdioPaths {
    StdioPaths {
        stdin: stdin.into(),
        stdout: stdout.into(),
        stderr: stderr.into(),
        terminal,
    }
}

/// containerd's rootfs mounts as the resource layer takes them.
pub fn rootfs(mounts: &[Mount]) -> Vec<RootfsMount> {
    mounts
        .iter()
        .map(|m| RootfsMount {
            fstype: m.type_.clone(),
            source: m.source.clone(),
            options: m.options.clone(),
        })
        .collect()
}
