//! `containerd-shim-kata-v2`: the containerd shim of kata-rv. Each sandbox is a
//! Dragonball microVM running inside this process; the guest agent runs the containers.
//! containerd invokes it as `-info`, `… start`, `… delete`, or as the server (`-socket`),
//! which serves the Task API (v2) and the Sandbox API on one ttrpc socket. Every action is
//! handled here, for every containerd from 1.6 on; the shim crate provides the flags, the
//! event publisher and the socket naming.

mod bootstrap;
mod confine;
mod convert;
mod delete;
mod events;
mod info;
mod log;
mod metrics;
mod options;
mod sandbox_api;
mod serve;
mod spawn;
mod start;
mod task;
mod vmm_log;

use std::io::Write;

/// The runtime name containerd knows this shim by.
const RUNTIME_ID: &str = "io.containerd.kata.v2";

/// The sandbox a CRI pod container belongs to (None: it is a sandbox itself).
fn sandbox_of(bundle: &std::path::Path) -> Option<String> {
    let spec = oci_spec::runtime::Spec::load(bundle.join("config.json")).ok()?;
    match kata_runtimes::cri::role(&spec) {
        kata_runtimes::cri::Role::Container { sandbox } => Some(sandbox),
        _ => None,
    }
}

/// Prints `reply` and exits 0, or prints the error and exits 1.
fn finish(reply: Result<Vec<u8>, String>) -> ! {
    match reply {
        Ok(bytes) => {
            let mut stdout = std::io::stdout().lock();
            let written = stdout.write_all(&bytes).and_then(|()| stdout.flush());
            std::process::exit(if written.is_ok() { 0 } else { 1 });
        }
        Err(e) => {
            eprintln!("{RUNTIME_ID}: {e}");
            std::process::exit(1);
        }
    }
}

fn main() {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let flags = match containerd_shim::parse(&args[1..]) {
        Ok(flags) => flags,
        Err(e) => finish(Err(e.to_string())),
    };
    if flags.version {
        finish(Ok(
            format!("{RUNTIME_ID} {}\n", env!("CARGO_PKG_VERSION")).into_bytes()
        ));
    }
    if flags.info {
        finish(info::run(std::io::stdin().lock()));
    }
    match flags.action.as_str() {
        "start" => finish(start::run(&flags, std::io::stdin().lock()).map_err(|e| e.to_string())),
        "delete" => finish(delete::run(&flags)),
        "" if !flags.socket.is_empty() => {}
        "" => finish(Err("no action and no -socket to serve".into())),
        other => finish(Err(format!("unknown action '{other}'"))),
    }
    // The launcher first: what must not inherit the shim's seccomp filter starts there.
    if let Err(e) = kata_launcher::start() {
        finish(Err(format!("serve: the launcher thread: {e}")));
    }
    let program = if confine::wanted() {
        match confine::filter() {
            Ok(programs) => Some(std::sync::Arc::new(programs)),
            Err(e) => finish(Err(format!("serve: {e}"))),
        }
    } else {
        None
    };
    let for_threads = program.clone();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .on_thread_start(move || {
            if let Some(program) = &for_threads
                && let Err(e) = confine::confine_this_thread(program)
            {
                eprintln!("{RUNTIME_ID}: serve: {e}");
                std::process::exit(1);
            }
        })
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => finish(Err(format!("serve: the async runtime: {e}"))),
    };
    // Signal handlers before the filter, which allows no rt_sigaction.
    runtime.block_on(async { serve::ignore_termination_signals() });
    if let Some(program) = &program
        && let Err(e) = confine::confine_this_thread(program)
    {
        finish(Err(format!("serve: {e}")));
    }
    let served = runtime.block_on(serve::run(&flags));
    // Exit while the runtime is still alive: dropping it would wait for blocking-pool
    // threads, and one may be parked opening a FIFO whose other end containerd never
    // opened.
    finish(served.map(|()| Vec::new()).map_err(|e| e.to_string()));
}
