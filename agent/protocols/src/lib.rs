//! The kata agent's ttrpc API, shared by the agent (server) and the runtime (client).
//!
//! The `.proto` files in `protos/` carry Kata's package names, method names and field
//! numbers, so `/grpc.AgentService/<Rpc>` and `/grpc.Health/Check` are wire-compatible
//! with Kata's agent and runtime.

macro_rules! generated {
    ($(#[$doc:meta] $name:ident),* $(,)?) => {
        $(
            #[$doc]
            #[allow(
                clippy::all,
                clippy::pedantic,
                missing_docs,
                non_camel_case_types,
                non_snake_case,
                non_upper_case_globals,
                unused_imports,
                unused_results,
                unused_mut,
                unsafe_op_in_unsafe_fn,
                dead_code
            )]
            pub mod $name {
                include!(concat!(env!("OUT_DIR"), "/", stringify!($name), ".rs"));
            }
        )*
    };
}

generated! {
    /// Messages of `agent.proto` (package `grpc`).
    agent,
    /// ttrpc client and server stubs of `grpc.AgentService`.
    agent_ttrpc,
    /// Messages of `health.proto` (package `grpc`).
    health,
    /// ttrpc client and server stubs of `grpc.Health`.
    health_ttrpc,
    /// The OCI runtime spec as protobuf messages (`oci.proto`, package `grpc`).
    oci,
    /// Network types (`types.proto`, package `types`).
    types,
}

/// `google.protobuf.Empty`, where the generated ttrpc stubs look for it.
pub mod empty {
    pub use protobuf::well_known_types::empty::Empty;
}

/// The vsock port the agent serves ttrpc on.
pub const AGENT_VSOCK_PORT: u32 = 1024;
/// The vsock port the agent streams its logs on.
pub const AGENT_LOG_VSOCK_PORT: u32 = 1025;
/// The host vsock port the agent dials once it serves (`agent.ready_vport=`), so the
/// runtime connects when the agent is ready instead of polling a booting guest.
pub const AGENT_READY_HOST_PORT: u32 = 1026;
