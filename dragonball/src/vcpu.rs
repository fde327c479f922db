//! vCPU threads: one per vCPU, each looping on KVM_RUN and dispatching exits; kicked out
//! of KVM_RUN by a signal whose handler sets `immediate_exit`.

use std::cell::Cell;
use std::sync::{Arc, Condvar, Mutex, Once};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use dbs_device::device_manager::IoManager;
use kvm_bindings::kvm_run;
use kvm_ioctls::{VcpuExit, VcpuFd};
use vmm_sys_util::eventfd::EventFd;
use vmm_sys_util::signal::{Killable, SIGRTMIN, register_signal_handler};

use crate::arch;

/// How long a pause waits for every vCPU to park.
pub const PAUSE_BOUND: Duration = Duration::from_secs(5);

/// Not every vCPU parked within [`PAUSE_BOUND`]; they were set running again.
#[derive(Debug, thiserror::Error)]
#[error("the vCPUs did not pause within {0:?}")]
pub struct PauseTimeout(pub Duration);

/// Why the VM ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExitInfo {
    /// Process-style exit code: 0 for a guest power-off.
    pub code: i32,
    /// What happened, for logs.
    pub reason: String,
}

/// Where a vCPU reports the end of the VM; the VMM loop watches `evt`.
pub struct VmExit {
    /// Written when `info` is set.
    pub evt: EventFd,
    info: Mutex<Option<ExitInfo>>,
}

impl VmExit {
    /// A fresh, unset exit.
    pub fn new() -> std::io::Result<Self> {
        Ok(VmExit {
            evt: EventFd::new(libc::EFD_NONBLOCK)?,
            info: Mutex::new(None),
        })
    }

    /// Records the exit (the first one wins) and wakes the VMM loop.
    pub fn report(&self, info: ExitInfo) {
        let mut slot = self.info.lock().unwrap_or_else(|p| p.into_inner());
        if slot.is_none() {
            *slot = Some(info);
        }
        let _ = self.evt.write(1);
    }

    /// The recorded exit, if any.
    pub fn info(&self) -> Option<ExitInfo> {
        self.info.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Command {
    Run,
    Pause,
    Exit,
}

struct Control {
    command: Command,
    paused: usize,
}

struct Shared {
    control: Mutex<Control>,
    cv: Condvar,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Control> {
        self.control.lock().unwrap_or_else(|p| p.into_inner())
    }
}

thread_local! {
    static KVM_RUN: Cell<*mut kvm_run> = const { Cell::new(std::ptr::null_mut()) };
}

extern "C" fn kick_handler(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {
    KVM_RUN.with(|run| {
        let ptr = run.get();
        if !ptr.is_null() {
            // SAFETY: the pointer is this thread's own kvm_run mapping, set while its
            // VcpuFd is alive; a byte store is async-signal-safe.
            unsafe { (*ptr).immediate_exit = 1 };
        }
    });
}

fn kick_signal() -> libc::c_int {
    SIGRTMIN()
}

fn install_kick_handler() -> std::io::Result<()> {
    static ONCE: Once = Once::new();
    let mut result = Ok(());
    ONCE.call_once(|| {
        result = register_signal_handler(kick_signal(), kick_handler)
            .map_err(|e| std::io::Error::from_raw_os_error(e.errno()));
    });
    result
}

/// One vCPU, ready to run.
pub struct VcpuSpec {
    /// vCPU index (= hart id / APIC id).
    pub id: u32,
    /// The KVM vCPU.
    pub fd: VcpuFd,
    /// Arch state for exits handled in userspace.
    pub arch: arch::VcpuState,
}

enum Step {
    Continue,
    Exit(ExitInfo),
    Arch(u32),
}

struct VcpuThread {
    seccomp: bool,
    fd: VcpuFd,
    arch: arch::VcpuState,
    bus: Arc<IoManager>,
    shared: Arc<Shared>,
    exit: Arc<VmExit>,
}

impl VcpuThread {
    /// Parks while paused; returns false when the vCPU must exit.
    fn wait_while_paused(&self) -> bool {
        let mut c = self.shared.lock();
        if c.command == Command::Pause {
            c.paused += 1;
            self.shared.cv.notify_all();
            while c.command == Command::Pause {
                c = self.shared.cv.wait(c).unwrap_or_else(|p| p.into_inner());
            }
            c.paused -= 1;
        }
        c.command != Command::Exit
    }

    fn run(mut self) {
        if self.seccomp
            && let Err(e) = crate::seccomp::confine_this_thread(crate::seccomp::ThreadRole::Vcpu)
        {
            self.exit.report(ExitInfo {
                code: 1,
                reason: e.to_string(),
            });
            return;
        }
        KVM_RUN.with(|run| run.set(self.fd.get_kvm_run() as *mut kvm_run));
        while self.wait_while_paused() {
            let step = match self.fd.run() {
                Ok(VcpuExit::MmioRead(addr, data)) => {
                    // Unbacked addresses read as zeros.
                    if self.bus.mmio_read(addr, data).is_err() {
                        data.fill(0);
                    }
                    Step::Continue
                }
                Ok(VcpuExit::MmioWrite(addr, data)) => {
                    let _ = self.bus.mmio_write(addr, data);
                    Step::Continue
                }
                Ok(VcpuExit::SystemEvent(kind, data)) => Step::Exit(arch::system_event(kind, data)),
                Ok(VcpuExit::Unsupported(reason)) => Step::Arch(reason),
                Ok(other) => match arch::handle_exit(other, &self.bus) {
                    None => Step::Continue,
                    Some(info) => Step::Exit(info),
                },
                Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {
                    self.fd.set_kvm_immediate_exit(0);
                    Step::Continue
                }
                Err(e) => Step::Exit(ExitInfo {
                    code: 1,
                    reason: format!("KVM_RUN failed: {e}"),
                }),
            };
            let step = match step {
                Step::Arch(reason) => {
                    match arch::handle_unsupported_exit(&mut self.fd, reason, &self.arch) {
                        Ok(()) => Step::Continue,
                        Err(info) => Step::Exit(info),
                    }
                }
                other => other,
            };
            if let Step::Exit(info) = step {
                self.exit.report(info);
                break;
            }
        }
        KVM_RUN.with(|run| run.set(std::ptr::null_mut()));
    }
}

/// The vCPU threads of a VM.
pub struct VcpuManager {
    shared: Arc<Shared>,
    handles: Vec<JoinHandle<()>>,
}

impl VcpuManager {
    /// Starts one thread per vCPU.
    pub fn start(
        vcpus: Vec<VcpuSpec>,
        bus: Arc<IoManager>,
        exit: Arc<VmExit>,
        seccomp: bool,
    ) -> std::io::Result<Self> {
        install_kick_handler()?;
        let shared = Arc::new(Shared {
            control: Mutex::new(Control {
                command: Command::Run,
                paused: 0,
            }),
            cv: Condvar::new(),
        });
        let mut manager = VcpuManager {
            shared: shared.clone(),
            handles: Vec::new(),
        };
        for spec in vcpus {
            let thread = VcpuThread {
                seccomp,
                fd: spec.fd,
                arch: spec.arch,
                bus: bus.clone(),
                shared: shared.clone(),
                exit: exit.clone(),
            };
            match std::thread::Builder::new()
                .name(format!("db_vcpu{}", spec.id))
                .spawn(move || thread.run())
            {
                Ok(h) => manager.handles.push(h),
                Err(e) => {
                    manager.stop();
                    return Err(e);
                }
            }
        }
        Ok(manager)
    }

    fn set(&self, command: Command) {
        self.shared.lock().command = command;
        self.shared.cv.notify_all();
    }

    fn kick_all(&self) {
        for h in &self.handles {
            if !h.is_finished() {
                let _ = h.kill(kick_signal());
            }
        }
    }

    /// Pauses every vCPU and waits until all are parked.
    pub fn pause(&self) -> Result<(), PauseTimeout> {
        self.set(Command::Pause);
        let deadline = Instant::now() + PAUSE_BOUND;
        loop {
            self.kick_all();
            let alive = self.handles.iter().filter(|h| !h.is_finished()).count();
            let c = self.shared.lock();
            if c.paused >= alive {
                return Ok(());
            }
            let (_c, _) = self
                .shared
                .cv
                .wait_timeout(c, Duration::from_millis(10))
                .unwrap_or_else(|p| p.into_inner());
            if Instant::now() > deadline {
                self.set(Command::Run);
                return Err(PauseTimeout(PAUSE_BOUND));
            }
        }
    }

    /// Resumes paused vCPUs.
    pub fn resume(&self) {
        self.set(Command::Run);
    }

    /// Stops and joins every vCPU thread.
    pub fn stop(&mut self) {
        self.set(Command::Exit);
        // A vCPU can be asleep in KVM_RUN (a stopped hart, a halted CPU): keep kicking
        // until every thread has left.
        while self.handles.iter().any(|h| !h.is_finished()) {
            self.kick_all();
            std::thread::sleep(Duration::from_millis(1));
        }
        for h in self.handles.drain(..) {
            let _ = h.join();
        }
    }
}

impl Drop for VcpuManager {
    fn drop(&mut self) {
        self.stop();
    }
}
