//! Starting, signalling, waiting for and talking to processes.

use std::sync::Arc;
use std::time::SystemTime;

use crate::error::{Code, RuntimeError, RuntimeResult};
use crate::events::Event;
use crate::process::{Exit, Process, Status, StdioPaths};
use crate::sandbox::Sandbox;
use crate::trace::Trace;
use crate::{spec, stdio};

use super::{FAILED_START_STATUS, Runtime, STDIN_GRACE};

impl Runtime {
    /// Starts a container's init (`exec_id` empty) or an added exec.
    pub async fn start(self: &Arc<Self>, id: &str, exec_id: &str) -> RuntimeResult<u32> {
        let trace = Trace::start(&self.log(), "process start", id);
        let sandbox = self.sandbox().await?;
        let (stdio, spec) = {
            let mut state = self.state.lock().await;
            let process = state.process(id, exec_id)?;
            if process.started {
                return Err(RuntimeError::new(
                    Code::FailedPrecondition,
                    format!("{id} {exec_id} already started"),
                ));
            }
            (process.stdio.clone(), process.spec.clone())
        };
        let agent = &sandbox.agent;
        let started = match (exec_id.is_empty(), spec) {
            (true, _) => agent.start_container(id).await,
            (false, Some(spec)) => agent.exec_process(id, exec_id, spec).await,
            (false, None) => return Err(RuntimeError::not_found(id, exec_id)),
        };
        if let Err(e) = started {
            self.record_failed_start(id, exec_id).await;
            return Err(RuntimeError::caused(
                Code::Internal,
                format_args!("starting {id} {exec_id}"),
                e,
            ));
        }
        trace.phase("started in the guest");
        let (io, stdin_done) = stdio::start_io(agent, id, exec_id, &stdio);
        let sender = {
            let mut state = self.state.lock().await;
            let process = state.process(id, exec_id)?;
            process.started = true;
            process.stdin_done = Some(stdin_done);
            process.exit_sender()
        };
        self.spawn_waiter(sandbox, id, exec_id, io, sender, trace);
        let event = if exec_id.is_empty() {
            Event::Started {
                id: id.into(),
                pid: self.pid,
            }
        } else {
            Event::ExecStarted {
                id: id.into(),
                exec_id: exec_id.into(),
                pid: self.pid,
            }
        };
        self.events.publish(event).await;
        Ok(self.pid)
    }

    /// A Start that failed in the guest ends the process: it is stopped (status
    /// [`FAILED_START_STATUS`]) so that Wait returns and Delete can remove it.
    async fn record_failed_start(&self, id: &str, exec_id: &str) {
        let sender = {
            let mut state = self.state.lock().await;
            let Some(process) = state
                .containers
                .get_mut(id)
                .and_then(|c| c.process_mut(exec_id))
            else {
                return;
            };
            process.started = true;
            process.exit_sender()
        };
        let exit = Exit {
            status: FAILED_START_STATUS,
            at: SystemTime::now(),
        };
        sender.send_replace(Some(exit));
        self.events
            .publish(Event::Exited {
                id: id.into(),
                exec_id: exec_id.into(),
                pid: self.pid,
                exit,
            })
            .await;
    }

    fn spawn_waiter(
        self: &Arc<Self>,
        sandbox: Arc<Sandbox>,
        id: &str,
        exec_id: &str,
        io: tokio::task::JoinHandle<()>,
        sender: tokio::sync::watch::Sender<Option<Exit>>,
        trace: Trace,
    ) {
        let this = self.clone();
        let (id, exec_id) = (id.to_string(), exec_id.to_string());
        tokio::spawn(async move {
            let exit = stdio::wait_exit(&sandbox.agent, &id, &exec_id, io).await;
            trace.phase("exit seen, output drained");
            sender.send_replace(Some(exit));
            this.events
                .publish(Event::Exited {
                    id,
                    exec_id,
                    pid: this.pid,
                    exit,
                })
                .await;
        });
    }

    pub(super) fn watch_oom(self: &Arc<Self>, sandbox: Arc<Sandbox>) {
        let this = self.clone();
        tokio::spawn(async move {
            while let Ok(id) = sandbox.agent.get_oom_event().await {
                this.events.publish(Event::Oom { id }).await;
            }
        });
    }

    /// Signals a process; TERM/KILL of a finished one is not an error.
    pub async fn kill(self: &Arc<Self>, id: &str, exec_id: &str, signal: u32) -> RuntimeResult<()> {
        self.after_create_of(id).await;
        let sandbox = self.sandbox().await?;
        let never_started = {
            let mut state = self.state.lock().await;
            let process = state.process(id, exec_id)?;
            if process.exited().is_some() {
                return if signal == 9 || signal == 15 {
                    Ok(())
                } else {
                    Err(RuntimeError::new(
                        Code::NotFound,
                        format!("process {id} {exec_id} already finished"),
                    ))
                };
            }
            // Only an init that was never started exists in the guest without a waiter
            // (an exec that was never started has no guest process at all).
            if !process.started && exec_id.is_empty() {
                process.started = true;
                Some(process.exit_sender())
            } else {
                None
            }
        };
        sandbox
            .agent
            .signal_process(id, exec_id, signal)
            .await
            .map_err(|e| {
                RuntimeError::caused(Code::Internal, format_args!("signalling {id}"), e)
            })?;
        if let Some(sender) = never_started {
            // A created process has no waiter yet: the agent reports its end.
            let io = tokio::spawn(async {});
            let trace = Trace::start(&self.log(), "kill of a created process", id);
            self.spawn_waiter(sandbox, id, exec_id, io, sender, trace);
        }
        Ok(())
    }

    /// Adds an exec to a running container (started by [`Runtime::start`]).
    pub async fn exec(
        &self,
        id: &str,
        exec_id: &str,
        process: &oci_spec::runtime::Process,
        stdio: StdioPaths,
    ) -> RuntimeResult<()> {
        {
            let mut state = self.state.lock().await;
            let container = state.container(id)?;
            if container.execs.contains_key(exec_id) {
                return Err(RuntimeError::new(
                    Code::AlreadyExists,
                    format!("exec {exec_id} already exists"),
                ));
            }
            if container.status("") != Status::Running {
                return Err(RuntimeError::new(
                    Code::FailedPrecondition,
                    format!("container {id} is not running"),
                ));
            }
            let guest = spec::process(process);
            container
                .execs
                .insert(exec_id.into(), Process::new(stdio, Some(guest)));
        }
        self.events
            .publish(Event::ExecAdded {
                id: id.into(),
                exec_id: exec_id.into(),
            })
            .await;
        Ok(())
    }

    /// Waits for a process's exit without holding any lock.
    pub async fn wait(&self, id: &str, exec_id: &str) -> RuntimeResult<Exit> {
        let mut exit = {
            let mut state = self.state.lock().await;
            state.process(id, exec_id)?.exit.clone()
        };
        let seen = exit
            .wait_for(Option::is_some)
            .await
            .map(|e| *e)
            .map_err(|_| RuntimeError::new(Code::Internal, "the process record went away"))?;
        seen.ok_or_else(|| RuntimeError::new(Code::Internal, "the process record went away"))
    }

    /// Closes a process's stdin once what was written before has reached it (bounded by
    /// [`STDIN_GRACE`]).
    pub async fn close_stdin(&self, id: &str, exec_id: &str) -> RuntimeResult<()> {
        let sandbox = self.sandbox().await?;
        let stdin_done = {
            let mut state = self.state.lock().await;
            state.process(id, exec_id)?.stdin_done.clone()
        };
        let (id, exec_id) = (id.to_string(), exec_id.to_string());
        // The copy closes stdin itself at the FIFO's end; close it here only if that
        // never comes.
        tokio::spawn(async move {
            if let Some(mut done) = stdin_done {
                let _ = tokio::time::timeout(STDIN_GRACE, done.wait_for(|d| *d)).await;
            }
            let _ = sandbox.agent.close_stdin(&id, &exec_id).await;
        });
        Ok(())
    }

    /// Resizes a process's terminal.
    pub async fn resize_pty(
        &self,
        id: &str,
        exec_id: &str,
        rows: u32,
        cols: u32,
    ) -> RuntimeResult<()> {
        let sandbox = self.sandbox().await?;
        sandbox
            .agent
            .tty_win_resize(id, exec_id, rows, cols)
            .await
            .map_err(|e| {
                RuntimeError::caused(Code::Internal, format_args!("resizing the pty of {id}"), e)
            })
    }
}
