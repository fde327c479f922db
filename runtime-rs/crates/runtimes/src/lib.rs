//! The kata-rv lifecycle rules, with no containerd and no KVM: a [`Runtime`] holds one
//! sandbox ([`Sandbox`]: host resources, VM, agent) and its containers and processes,
//! copies stdio, rewrites OCI specs for the guest and publishes events in containerd's
//! order. Everything below it is a trait ([`Backends`]), so its rules are tested with
//! fakes.

pub mod agent_log;
pub mod cri;
pub mod error;
pub mod events;
pub mod process;
pub mod runtime;
pub mod sandbox;
pub mod sizing;
pub mod spec;
pub mod stdio;
pub mod trace;

pub use error::{Code, RuntimeError, RuntimeResult};
pub use events::{Event, EventSink};
pub use process::{Exit, Status, StdioPaths};
pub use runtime::{
    ConfigLoader, CreateRequest, PodPhase, PodStatus, ProcessState, Runtime, STDIN_GRACE,
};
pub use sandbox::{AgentConnector, Backends, HybridVsock, PodSetup, Sandbox};
pub use sizing::VmSize;
