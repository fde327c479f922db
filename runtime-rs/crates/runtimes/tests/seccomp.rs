//! A container's seccomp profile, which the guest agent cannot apply: dropped (and
//! logged) where `disable_guest_seccomp` allows, Kata's default; refused before anything
//! is created otherwise.

mod fakes;

use fakes::{Setup, World};
use kata_runtimes::Code;

const WITH_SECCOMP: &str = r#"{"seccomp": {"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ALLOW"}]}}"#;

#[tokio::test]
async fn a_seccomp_profile_is_dropped_where_disable_guest_seccomp_allows() {
    let w = World::new("seccomp-dropped", Setup::default());
    w.create_with_linux("c1", WITH_SECCOMP).await.unwrap();
    assert!(w.host.sandboxes.lock().unwrap().contains("c1"));
}

#[tokio::test]
async fn a_seccomp_profile_is_refused_when_it_must_be_applied() {
    let w = World::new("seccomp-refused", Setup::default());
    w.append_runtime_config("disable_guest_seccomp = false");
    let error = w.create_with_linux("c1", WITH_SECCOMP).await.unwrap_err();
    assert_eq!(error.code, Code::FailedPrecondition);
    assert!(
        error.message.contains("linux.seccomp") && error.message.contains("disable_guest_seccomp"),
        "{}",
        error.message
    );
    assert!(w.host.sandboxes.lock().unwrap().is_empty());
    assert!(w.vm.specs.lock().unwrap().is_empty());
    // Without a profile the same configuration runs containers.
    w.create("c2").await.unwrap();
}
