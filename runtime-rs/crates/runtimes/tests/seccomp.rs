//! A container's seccomp profile goes to the guest agent, which compiles and installs
//! it; with `disable_guest_seccomp = true` (Kata's switch) it is taken out of the guest
//! spec instead, and the container runs without one.

mod fakes;

use fakes::{Setup, World};

const WITH_SECCOMP: &str = r#"{"seccomp": {"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 38, "flags": ["SECCOMP_FILTER_FLAG_LOG"], "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_RISCV64"], "syscalls": [{"names": ["read", "write"], "action": "SCMP_ACT_ALLOW"}, {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38}, {"names": ["personality"], "action": "SCMP_ACT_ALLOW", "args": [{"index": 0, "value": 8, "op": "SCMP_CMP_EQ"}, {"index": 1, "value": 255, "valueTwo": 4, "op": "SCMP_CMP_MASKED_EQ"}]}]}}"#;

#[tokio::test]
async fn a_seccomp_profile_reaches_the_agent_by_its_spec_names() {
    let w = World::new("seccomp-applied", Setup::default());
    w.create_with_linux("c1", WITH_SECCOMP).await.unwrap();
    let specs = w.agent.specs.lock().unwrap();
    let profile = specs["c1"]
        .Linux
        .Seccomp
        .as_ref()
        .expect("the profile is sent");
    assert_eq!(profile.DefaultAction, "SCMP_ACT_ERRNO");
    assert_eq!(profile.DefaultErrnoRet, 38);
    assert_eq!(profile.Flags, ["SECCOMP_FILTER_FLAG_LOG"]);
    assert_eq!(
        profile.Architectures,
        ["SCMP_ARCH_X86_64", "SCMP_ARCH_RISCV64"]
    );
    assert_eq!(profile.Syscalls.len(), 3);
    assert_eq!(profile.Syscalls[0].Names, ["read", "write"]);
    assert_eq!(profile.Syscalls[0].Action, "SCMP_ACT_ALLOW");
    assert!(!profile.Syscalls[0].has_errnoret());
    assert_eq!(profile.Syscalls[1].errnoret(), 38);
    let args = &profile.Syscalls[2].Args;
    assert_eq!(
        (args[0].Index, args[0].Value, args[0].Op.as_str()),
        (0, 8, "SCMP_CMP_EQ")
    );
    assert_eq!(
        (
            args[1].Index,
            args[1].Value,
            args[1].ValueTwo,
            args[1].Op.as_str()
        ),
        (1, 255, 4, "SCMP_CMP_MASKED_EQ")
    );
}

#[tokio::test]
async fn a_seccomp_profile_is_dropped_where_disable_guest_seccomp_says() {
    let w = World::new("seccomp-dropped", Setup::default());
    w.append_runtime_config("disable_guest_seccomp = true");
    w.create_with_linux("c1", WITH_SECCOMP).await.unwrap();
    assert!(w.host.sandboxes.lock().unwrap().contains("c1"));
    let specs = w.agent.specs.lock().unwrap();
    assert!(specs["c1"].Linux.Seccomp.is_none());
}
