//! The lifecycle rules over fakes (no KVM, no root, no containerd): event order, state
//! transitions, concurrency, and that every failure leaves nothing behind.

mod fakes;

use std::time::Duration;

use fakes::{Setup, World};
use kata_runtimes::{Code, Status, StdioPaths};

/// Bound on anything that must not hang.
const SOON: Duration = Duration::from_secs(5);

fn process() -> oci_spec::runtime::Process {
    serde_json::from_str(r#"{"user":{"uid":0,"gid":0},"args":["ls"],"cwd":"/"}"#).unwrap()
}

async fn wait_exit(world: &World, id: &str, exec_id: &str) -> u32 {
    tokio::time::timeout(SOON, world.runtime.wait(id, exec_id))
        .await
        .expect("wait returns")
        .unwrap()
        .status
}

#[tokio::test]
async fn create_start_exit_delete_publish_events_in_order() {
    let w = World::new("order", Setup::default());
    w.create("c1").await.unwrap();
    assert_eq!(
        w.runtime.state("c1", "").await.unwrap().status,
        Status::Created
    );
    w.runtime.start("c1", "").await.unwrap();
    assert_eq!(
        w.runtime.state("c1", "").await.unwrap().status,
        Status::Running
    );
    w.agent.exit("c1", "", 3);
    assert_eq!(wait_exit(&w, "c1", "").await, 3);
    assert_eq!(
        w.runtime.state("c1", "").await.unwrap().status,
        Status::Stopped
    );
    let exit = w.runtime.delete("c1", "").await.unwrap().unwrap();
    assert_eq!(exit.status, 3);
    assert_eq!(
        w.events.names(),
        ["Created c1", "Started c1", "Exited c1/ 3", "Deleted c1 3"]
    );
    assert_eq!(w.vm.running(), 0, "the last delete stops the VM");
    assert!(w.host.is_empty());
}

#[tokio::test]
async fn a_second_start_is_refused() {
    let w = World::new("double-start", Setup::default());
    w.create("c1").await.unwrap();
    w.runtime.start("c1", "").await.unwrap();
    let err = w.runtime.start("c1", "").await.unwrap_err();
    assert_eq!(err.code, Code::FailedPrecondition, "{err}");
    assert_eq!(w.agent.count("StartContainer"), 1);
}

#[tokio::test]
async fn term_and_kill_after_exit_are_not_errors() {
    let w = World::new("kill-after-exit", Setup::default());
    w.create("c1").await.unwrap();
    w.runtime.start("c1", "").await.unwrap();
    w.runtime.kill("c1", "", 15).await.unwrap();
    assert_eq!(wait_exit(&w, "c1", "").await, 128 + 15);
    w.runtime.kill("c1", "", 15).await.unwrap();
    w.runtime.kill("c1", "", 9).await.unwrap();
    let err = w.runtime.kill("c1", "", 10).await.unwrap_err();
    assert_eq!(err.code, Code::NotFound, "{err}");
    assert_eq!(w.agent.count("SignalProcess"), 1);
}

#[tokio::test]
async fn exec_into_a_stopped_container_is_refused() {
    let w = World::new("exec-stopped", Setup::default());
    w.create("c1").await.unwrap();
    let stdio = StdioPaths::default();
    let err = w
        .runtime
        .exec("c1", "e1", &process(), stdio.clone())
        .await
        .unwrap_err();
    assert_eq!(
        err.code,
        Code::FailedPrecondition,
        "created, not running: {err}"
    );
    w.runtime.start("c1", "").await.unwrap();
    w.runtime
        .exec("c1", "e1", &process(), stdio.clone())
        .await
        .unwrap();
    let err = w
        .runtime
        .exec("c1", "e1", &process(), stdio.clone())
        .await
        .unwrap_err();
    assert_eq!(err.code, Code::AlreadyExists, "{err}");
    w.runtime.start("c1", "e1").await.unwrap();
    w.agent.exit("c1", "e1", 0);
    assert_eq!(wait_exit(&w, "c1", "e1").await, 0);
    w.agent.exit("c1", "", 0);
    wait_exit(&w, "c1", "").await;
    let err = w
        .runtime
        .exec("c1", "e2", &process(), stdio)
        .await
        .unwrap_err();
    assert_eq!(err.code, Code::FailedPrecondition, "{err}");
    let names = w.events.names();
    assert_eq!(
        &names[..4],
        [
            "Created c1",
            "Started c1",
            "ExecAdded c1/e1",
            "ExecStarted c1/e1"
        ]
    );
}

#[tokio::test]
async fn wait_holds_no_lock_while_other_calls_proceed() {
    let w = World::new("wait-no-lock", Setup::default());
    w.create("c1").await.unwrap();
    w.runtime.start("c1", "").await.unwrap();
    let runtime = w.runtime.clone();
    let waiter = tokio::spawn(async move { runtime.wait("c1", "").await });
    tokio::task::yield_now().await;
    // Calls that take the state lock all complete while the wait is pending.
    tokio::time::timeout(SOON, async {
        w.runtime.state("c1", "").await.unwrap();
        w.runtime.set_paused("c1", true).await.unwrap();
        w.runtime.set_paused("c1", false).await.unwrap();
        w.runtime
            .exec("c1", "e1", &process(), StdioPaths::default())
            .await
            .unwrap();
    })
    .await
    .expect("no call blocks behind a pending wait");
    assert!(!waiter.is_finished());
    w.agent.exit("c1", "", 0);
    let exit = tokio::time::timeout(SOON, waiter)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(exit.status, 0);
}

#[tokio::test]
async fn delete_of_a_running_container_ends_its_waiters() {
    let w = World::new("delete-before-wait", Setup::default());
    w.create("c1").await.unwrap();
    w.runtime.start("c1", "").await.unwrap();
    let runtime = w.runtime.clone();
    let waiter = tokio::spawn(async move { runtime.wait("c1", "").await });
    tokio::task::yield_now().await;
    w.runtime.delete("c1", "").await.unwrap();
    let exit = tokio::time::timeout(SOON, waiter)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(exit.status, 137, "RemoveContainer killed it");
    assert_eq!(
        w.runtime.state("c1", "").await.unwrap_err().code,
        Code::NotFound
    );
    assert_eq!(w.vm.running(), 0);
}

#[tokio::test]
async fn close_io_closes_stdin_in_the_guest() {
    let w = World::new("close-io", Setup::default());
    w.create("c1").await.unwrap();
    w.runtime.start("c1", "").await.unwrap();
    w.runtime.close_stdin("c1", "").await.unwrap();
    tokio::time::timeout(SOON, async {
        while w.agent.count("CloseStdin") == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("CloseStdin reaches the agent (no stdin copy to wait for)");
    let err = w.runtime.close_stdin("c1", "nope").await.unwrap_err();
    assert_eq!(err.code, Code::NotFound);
}

/// A container whose stdin is a FIFO at `dir/stdin`, started.
async fn started_with_stdin_fifo(w: &World, id: &str) -> std::path::PathBuf {
    let fifo = w.dir.join(format!("{id}-stdin"));
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let stdio = StdioPaths {
        stdin: fifo.to_string_lossy().into_owned(),
        ..Default::default()
    };
    w.create_with_stdio(id, stdio).await.unwrap();
    w.runtime.start(id, "").await.unwrap();
    fifo
}

#[tokio::test]
async fn close_io_waits_for_stdin_to_be_forwarded() {
    let w = World::new("close-io-order", Setup::default());
    let fifo = started_with_stdin_fifo(&w, "c1").await;
    w.runtime.close_stdin("c1", "").await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        w.agent.count("CloseStdin"),
        0,
        "stdin is closed before its writer has even opened the FIFO"
    );
    // The writer (ctr, containerd) writes, then closes its end; off the runtime's
    // thread, as opening a FIFO blocks until the copy opens the other end.
    tokio::task::spawn_blocking(move || std::fs::write(fifo, b"hello"))
        .await
        .unwrap()
        .unwrap();
    tokio::time::timeout(SOON, async {
        while w.agent.count("CloseStdin") == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("CloseStdin once the FIFO reached its end");
    let calls = w.agent.calls.lock().unwrap().clone();
    let position = |call: &str| calls.iter().position(|c| c == call).unwrap();
    assert!(
        position("WriteStdin") < position("WriteStdin(end)")
            && position("WriteStdin(end)") < position("CloseStdin"),
        "the data, then its end, then CloseStdin: {calls:?}"
    );
}

#[tokio::test]
async fn close_io_closes_a_stdin_that_never_ends_after_its_grace() {
    let w = World::new("close-io-grace", Setup::default());
    let fifo = started_with_stdin_fifo(&w, "c1").await;
    // A writer that holds the FIFO open and never writes.
    let holder =
        tokio::task::spawn_blocking(move || std::fs::OpenOptions::new().write(true).open(fifo))
            .await
            .unwrap()
            .unwrap();
    let asked = std::time::Instant::now();
    w.runtime.close_stdin("c1", "").await.unwrap();
    tokio::time::timeout(kata_runtimes::STDIN_GRACE + SOON, async {
        while w.agent.count("CloseStdin") == 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("CloseStdin after the grace");
    assert!(
        asked.elapsed() >= kata_runtimes::STDIN_GRACE,
        "closed after {:?}, before the grace",
        asked.elapsed()
    );
    assert_eq!(w.agent.count("WriteStdin(end)"), 0, "the FIFO never ended");
    drop(holder);
}

#[tokio::test]
async fn the_vm_stops_with_the_last_container() {
    let w = World::new("last-delete", Setup::default());
    w.create("sandbox").await.unwrap();
    w.create("c2").await.unwrap();
    assert_eq!(w.vm.starts.load(std::sync::atomic::Ordering::SeqCst), 1);
    w.runtime.delete("sandbox", "").await.unwrap();
    assert_eq!(w.vm.running(), 1, "c2 still runs in it");
    assert!(
        !w.runtime.shutdown().await,
        "shutdown waits for the last container"
    );
    w.runtime.delete("c2", "").await.unwrap();
    assert_eq!(w.vm.running(), 0);
    assert!(w.host.is_empty());
    assert_eq!(w.agent.count("DestroySandbox"), 1);
    assert!(w.runtime.shutdown().await);
}

/// A VM that ended by itself (its virtiofsd died, the guest panicked) is not asked to
/// destroy the sandbox: nothing there can answer, and asking would spend the whole
/// agent bound before the host side is cleaned.
#[tokio::test]
async fn a_vm_that_ended_by_itself_is_stopped_without_asking_the_guest() {
    let w = World::new("ended-vm", Setup::default());
    w.create("sandbox").await.unwrap();
    w.vm.ended.store(true, std::sync::atomic::Ordering::SeqCst);
    w.runtime.delete("sandbox", "").await.unwrap();
    assert_eq!(w.agent.count("DestroySandbox"), 0);
    assert_eq!(w.vm.running(), 0);
    assert!(w.host.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_concurrent_first_creates_boot_one_vm() {
    let w = World::new("concurrent-create", Setup::default());
    let (a, b) = tokio::join!(w.create("a"), w.create("b"));
    a.unwrap();
    b.unwrap();
    assert_eq!(w.vm.starts.load(std::sync::atomic::Ordering::SeqCst), 1);
    assert_eq!(w.agent.count("CreateSandbox"), 1);
    // The same id twice: one wins.
    let (c, d) = tokio::join!(w.create("c"), w.create("c"));
    assert!(c.is_ok() != d.is_ok());
    assert_eq!(w.agent.count("CreateContainer"), 3);
}

#[tokio::test]
async fn an_agent_that_never_answers_fails_create_in_time_and_leaves_nothing() {
    let w = World::new(
        "mute-agent",
        Setup {
            agent_mute: true,
            ..Default::default()
        },
    );
    let started = std::time::Instant::now();
    let err = w.create("c1").await.unwrap_err();
    assert!(started.elapsed() < SOON, "{:?}", started.elapsed());
    assert!(err.message.contains("did not answer"), "{err}");
    assert!(err.message.contains("guest console tail"), "{err}");
    assert_eq!(w.vm.running(), 0);
    assert!(w.host.is_empty());
    assert_eq!(
        w.runtime.state("c1", "").await.unwrap_err().code,
        Code::NotFound
    );
}

#[tokio::test]
async fn a_vm_that_fails_to_start_leaves_nothing() {
    let w = World::new(
        "vm-fails",
        Setup {
            vm_fails: true,
            ..Default::default()
        },
    );
    let err = w.create("c1").await.unwrap_err();
    assert!(err.message.contains("starting the VM"), "{err}");
    assert!(w.host.is_empty());
    assert!(w.events.names().is_empty());
}

#[tokio::test]
async fn a_start_that_fails_in_the_guest_then_delete_leaves_nothing() {
    let w = World::new("failed-start", Setup::default());
    w.create("t1").await.unwrap();
    w.agent.fail_start.lock().unwrap().insert("t1".into());
    let err = w.runtime.start("t1", "").await.unwrap_err();
    assert!(err.message.contains("could not be run"), "{err}");
    // The task is stopped, so `ctr task rm` (and `ctr run --rm`) can delete it.
    let state = w.runtime.state("t1", "").await.unwrap();
    assert_eq!(state.status, Status::Stopped);
    assert_eq!(wait_exit(&w, "t1", "").await, 255);
    w.runtime.delete("t1", "").await.unwrap();
    assert_eq!(w.vm.running(), 0);
    assert!(w.host.is_empty());
    assert_eq!(
        w.events.names(),
        ["Created t1", "Exited t1/ 255", "Deleted t1 255"]
    );
}

#[tokio::test]
async fn killing_a_created_init_reports_its_exit() {
    let w = World::new("kill-created", Setup::default());
    w.create("c1").await.unwrap();
    w.runtime.kill("c1", "", 9).await.unwrap();
    assert_eq!(wait_exit(&w, "c1", "").await, 137);
    w.runtime.delete("c1", "").await.unwrap();
    assert!(w.host.is_empty());
}

#[tokio::test]
async fn unknown_ids_are_not_found() {
    let w = World::new("unknown", Setup::default());
    assert_eq!(
        w.runtime.start("x", "").await.unwrap_err().code,
        Code::FailedPrecondition
    );
    w.create("c1").await.unwrap();
    for err in [
        w.runtime.start("x", "").await.unwrap_err(),
        w.runtime.kill("x", "", 9).await.unwrap_err(),
        w.runtime.delete("x", "").await.unwrap_err(),
        w.runtime.wait("c1", "nope").await.unwrap_err(),
    ] {
        assert_eq!(err.code, Code::NotFound, "{err}");
    }
}

/// containerd restarted in the middle of a Create: it sends State, Kill, Delete and Shutdown
/// while the shim still builds the container. Each waits for the Create in flight,
/// then finds the container, so nothing outlives them (the shim answering NotFound and
/// then finishing the Create kept a VM that nobody would ever stop).
#[tokio::test]
async fn kill_delete_and_shutdown_during_a_create_wait_for_it_and_leave_nothing() {
    let w = World::new("delete-mid-create", Setup::default());
    let runtime = w.runtime.clone();
    let (created, removed) = tokio::join!(w.create("c1"), async {
        tokio::time::sleep(Duration::from_millis(10)).await;
        let state = runtime.state("c1", "").await.map(|s| s.status);
        let killed = runtime.kill("c1", "", 9).await;
        let deleted = runtime.delete("c1", "").await;
        (state, killed, deleted, runtime.shutdown().await)
    });
    created.unwrap();
    let (state, killed, deleted, shut_down) = removed;
    assert_eq!(state.unwrap(), Status::Created);
    killed.unwrap();
    deleted.unwrap();
    assert!(shut_down, "nothing was left to keep the shim");
    assert!(!w.runtime.has_container("c1").await);
    assert_eq!(w.vm.running(), 0);
    assert!(w.host.is_empty());
}
