//! The VMM thread (`vmm_master`): an event loop over the API eventfd, the VM-exit
//! eventfd and (later) device fds; API requests arrive on a channel, one answer each.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TryRecvError};
use event_manager::{EventManager, EventOps, Events, MutEventSubscriber, SubscriberOps};
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::eventfd::EventFd;

use crate::api::{InstanceState, VmmAction, VmmActionError, VmmData};
use crate::device_manager::Subscriber;
use crate::vcpu::{ExitInfo, VmExit};
use crate::vm::Vm;

type Response = Result<VmmData, VmmActionError>;

/// The caller's end of the API.
pub struct VmmClient {
    requests: Option<Sender<VmmAction>>,
    responses: Receiver<Response>,
    api_evt: EventFd,
    /// Set when an answer did not come in time: a late one would be taken for the next
    /// request's, so no request is sent after.
    abandoned: AtomicBool,
}

impl VmmClient {
    /// Sends one action and waits for its answer.
    pub fn request(&self, action: VmmAction) -> Response {
        self.send(action)?;
        self.responses.recv().map_err(|_| VmmActionError::VmmGone)?
    }

    /// [`VmmClient::request`], giving up after `bound` (every later request then fails
    /// with [`VmmActionError::VmmGone`]).
    pub fn request_within(&self, action: VmmAction, bound: Duration) -> Response {
        let name = action.name();
        self.send(action)?;
        match self.responses.recv_timeout(bound) {
            Ok(response) => response,
            Err(RecvTimeoutError::Timeout) => {
                self.abandoned.store(true, Ordering::SeqCst);
                Err(VmmActionError::Timeout {
                    action: name,
                    after: bound,
                })
            }
            Err(RecvTimeoutError::Disconnected) => Err(VmmActionError::VmmGone),
        }
    }

    fn send(&self, action: VmmAction) -> Result<(), VmmActionError> {
        if self.abandoned.load(Ordering::SeqCst) {
            return Err(VmmActionError::VmmGone);
        }
        let requests = self.requests.as_ref().ok_or(VmmActionError::VmmGone)?;
        requests.send(action).map_err(|_| VmmActionError::VmmGone)?;
        self.api_evt.write(1).map_err(|_| VmmActionError::VmmGone)
    }
}

impl Drop for VmmClient {
    fn drop(&mut self) {
        // Close the channel first, then wake the loop so it sees it closed and ends the VM.
        drop(self.requests.take());
        let _ = self.api_evt.write(1);
    }
}

/// Readiness of the VMM's own fds, recorded by the event loop.
struct ControlEvents {
    api_evt: EventFd,
    exit: Arc<VmExit>,
    api_ready: bool,
    exit_ready: bool,
}

impl MutEventSubscriber for ControlEvents {
    fn process(&mut self, events: Events, _ops: &mut EventOps) {
        if events.fd() == self.api_evt.as_raw_fd_() {
            let _ = self.api_evt.read();
            self.api_ready = true;
        } else if events.fd() == self.exit.evt.as_raw_fd_() {
            let _ = self.exit.evt.read();
            self.exit_ready = true;
        }
    }

    fn init(&mut self, ops: &mut EventOps) {
        for fd in [&self.api_evt, &self.exit.evt] {
            if let Err(e) = ops.add(event_manager::Events::new(fd, EventSet::IN)) {
                log::error!("vmm: cannot watch control fd: {e:?}");
            }
        }
    }
}

trait RawFdExt {
    fn as_raw_fd_(&self) -> i32;
}

impl RawFdExt for EventFd {
    fn as_raw_fd_(&self) -> i32 {
        std::os::fd::AsRawFd::as_raw_fd(self)
    }
}

/// The VMM: a VM and the loop that serves it.
struct Vmm {
    vm: Vm,
    exit: Arc<VmExit>,
}

impl Vmm {
    fn handle(
        &mut self,
        action: VmmAction,
        events: &mut EventManager<Subscriber>,
    ) -> (Response, bool) {
        let done = matches!(action, VmmAction::ShutdownMicroVm);
        let response = match action {
            VmmAction::SetVmConfiguration(c) => self.vm.set_config(c).map(|_| VmmData::Empty),
            VmmAction::ConfigureBootSource(b) => self.vm.set_boot_source(b).map(|_| VmmData::Empty),
            VmmAction::InsertVsockDevice(v) => self.vm.insert_vsock(v).map(|_| VmmData::Empty),
            VmmAction::InsertBlockDevice(b) => self.vm.insert_block(b).map(|_| VmmData::Empty),
            VmmAction::InsertNetworkDevice(n) => self.vm.insert_net(n).map(|_| VmmData::Empty),
            VmmAction::InsertFsDevice(f) => self.vm.insert_fs(f).map(|_| VmmData::Empty),
            VmmAction::StartMicroVm => self.start(events),
            VmmAction::PauseMicroVm => self.vm.pause().map(|_| VmmData::Empty),
            VmmAction::ResumeMicroVm => self.vm.resume().map(|_| VmmData::Empty),
            VmmAction::GetVmConfiguration => Ok(VmmData::VmConfiguration(self.vm.config().clone())),
            VmmAction::GetInstanceState => Ok(VmmData::InstanceState(self.vm.state())),
            VmmAction::ShutdownMicroVm => {
                self.vm.stop(&ExitInfo {
                    code: 0,
                    reason: "ShutdownMicroVm".into(),
                });
                Ok(VmmData::Empty)
            }
        };
        (response, done)
    }

    /// Boots the VM, hands its devices to the event loop, then confines this thread
    /// (the loop) to its seccomp list; a VM whose loop cannot be confined is stopped.
    fn start(&mut self, events: &mut EventManager<Subscriber>) -> Response {
        let subscribers = self.vm.start(self.exit.clone())?;
        for s in subscribers {
            events.add_subscriber(s);
        }
        if self.vm.config().seccomp
            && let Err(e) =
                crate::seccomp::confine_this_thread(crate::seccomp::ThreadRole::EventLoop)
        {
            let reason = e.to_string();
            self.vm.stop(&ExitInfo { code: 1, reason });
            return Err(VmmActionError::StartMicroVm(e.into()));
        }
        Ok(VmmData::Empty)
    }

    fn exit_code(&self) -> i32 {
        match self.vm.state() {
            InstanceState::Exited(code) => code,
            _ => 0,
        }
    }
}

fn run_loop(requests: Receiver<VmmAction>, responses: Sender<Response>, api_evt: EventFd) -> i32 {
    let exit = match VmExit::new() {
        Ok(e) => Arc::new(e),
        Err(e) => {
            log::error!("vmm: creating the exit eventfd: {e}");
            return 1;
        }
    };
    let control = Arc::new(Mutex::new(ControlEvents {
        api_evt,
        exit: exit.clone(),
        api_ready: false,
        exit_ready: false,
    }));
    let mut events = match EventManager::<Subscriber>::new() {
        Ok(em) => em,
        Err(e) => {
            log::error!("vmm: creating the event loop: {e:?}");
            return 1;
        }
    };
    events.add_subscriber(control.clone());
    let mut vmm = Vmm {
        vm: Vm::default(),
        exit,
    };
    loop {
        if let Err(e) = events.run() {
            log::error!("vmm: event loop: {e:?}");
        }
        let (api, guest_exit) = {
            let mut c = control.lock().unwrap_or_else(|p| p.into_inner());
            let flags = (c.api_ready, c.exit_ready);
            c.api_ready = false;
            c.exit_ready = false;
            flags
        };
        if guest_exit && let Some(info) = vmm.exit.info() {
            log::info!("vmm: VM ended: {}", info.reason);
            vmm.vm.stop(&info);
            return vmm.exit_code();
        }
        if api {
            loop {
                match requests.try_recv() {
                    Ok(action) => {
                        let (response, done) = vmm.handle(action, &mut events);
                        let _ = responses.send(response);
                        if done {
                            return vmm.exit_code();
                        }
                    }
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => {
                        // The client went away: nobody can manage this VM any more.
                        vmm.vm.stop(&ExitInfo {
                            code: 0,
                            reason: "API client closed".into(),
                        });
                        return vmm.exit_code();
                    }
                }
            }
        }
    }
}

/// Starts the VMM on a new `vmm_master` thread. The thread ends when the VM exits (the
/// guest powered off, or ShutdownMicroVm) and returns the VM's exit code.
pub fn start_vmm_thread() -> std::io::Result<(VmmClient, JoinHandle<i32>)> {
    let (req_tx, req_rx) = crossbeam_channel::unbounded();
    let (resp_tx, resp_rx) = crossbeam_channel::unbounded();
    let api_evt = EventFd::new(libc::EFD_NONBLOCK)?;
    let loop_evt = api_evt.try_clone()?;
    let handle = std::thread::Builder::new()
        .name("vmm_master".into())
        .spawn(move || run_loop(req_rx, resp_tx, loop_evt))?;
    Ok((
        VmmClient {
            requests: Some(req_tx),
            responses: resp_rx,
            api_evt,
            abandoned: AtomicBool::new(false),
        },
        handle,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A VMM that takes requests and never answers (its loop stuck).
    fn mute_vmm() -> (VmmClient, Receiver<VmmAction>, Sender<Response>) {
        let (req_tx, req_rx) = crossbeam_channel::unbounded();
        let (resp_tx, resp_rx) = crossbeam_channel::unbounded();
        let client = VmmClient {
            requests: Some(req_tx),
            responses: resp_rx,
            api_evt: EventFd::new(libc::EFD_NONBLOCK).unwrap(),
            abandoned: AtomicBool::new(false),
        };
        (client, req_rx, resp_tx)
    }

    #[test]
    fn an_unanswered_request_times_out_and_the_client_is_abandoned() {
        let (client, requests, responses) = mute_vmm();
        let err = client
            .request_within(VmmAction::GetInstanceState, Duration::from_millis(50))
            .unwrap_err();
        assert!(
            matches!(
                err,
                VmmActionError::Timeout {
                    action: "GetInstanceState",
                    ..
                }
            ),
            "{err}"
        );
        // The late answer must not be taken for the next request's.
        responses
            .send(Ok(VmmData::InstanceState(InstanceState::Running)))
            .unwrap();
        assert!(matches!(
            client.request(VmmAction::GetVmConfiguration),
            Err(VmmActionError::VmmGone)
        ));
        assert_eq!(requests.len(), 1, "nothing is sent after abandoning");
    }
}
