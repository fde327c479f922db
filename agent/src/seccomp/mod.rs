//! A container's OCI seccomp profile (`linux.seccomp`) compiled to BPF before the fork,
//! installed by the child just before it runs the workload, with runc's ordering: before
//! the credentials change when `noNewPrivileges` is off (installing then needs the
//! privileges it is about to drop), as late as possible (after the start signal, right
//! before execve) when it is on.
//!
//! A profile's rules may carry different actions (allow most, `ERRNO(ENOSYS)` for
//! `clone3`, ...), and seccompiler builds filters with one match action each. The kernel
//! runs every installed filter and takes the most restrictive result, so the profile
//! becomes one filter per action other than allow (that action where its rules match,
//! allow otherwise) plus one for the default action (allow where any rule matches, the
//! default otherwise). A syscall no rule matches gets the default; one matched by rules
//! of several actions gets the most restrictive of them.
//!
//! Syscall names this architecture does not have are skipped, as runc does (profiles
//! name syscalls of every architecture and kernel version). Only the native
//! architecture is filtered: the guest kernel has no compat syscall ABIs.

mod names;

use std::collections::BTreeMap;

use kata_agent_protocols::oci;
use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

/// `SECCOMP_SET_MODE_FILTER` of seccomp(2).
const SECCOMP_SET_MODE_FILTER: libc::c_ulong = 1;

/// The architecture the filters are for.
#[cfg(target_arch = "x86_64")]
const ARCH: TargetArch = TargetArch::x86_64;
#[cfg(target_arch = "riscv64")]
const ARCH: TargetArch = TargetArch::riscv64;

/// A compiled profile: the BPF programs to install, in order, and seccomp(2)'s flags.
#[derive(Clone, Debug, Default)]
pub struct SeccompPlan {
    /// One program per action (see the module doc).
    pub programs: Vec<BpfProgram>,
    /// `SECCOMP_FILTER_FLAG_*` bits from the profile's `flags`.
    pub flags: libc::c_ulong,
}

/// The number of `name` on this architecture, if it has that syscall.
pub fn syscall_number(name: &str) -> Option<libc::c_long> {
    names::SYSCALLS
        .iter()
        .find(|(known, _)| *known == name)
        .map(|(_, nr)| *nr)
}

/// An action name with its errno (`errnoRet`; EPERM by default for ERRNO, as runc).
fn action(name: &str, errno: Option<u32>, field: &str) -> Result<SeccompAction, String> {
    Ok(match name {
        "SCMP_ACT_ALLOW" => SeccompAction::Allow,
        "SCMP_ACT_ERRNO" => SeccompAction::Errno(errno.unwrap_or(libc::EPERM as u32)),
        "SCMP_ACT_KILL" | "SCMP_ACT_KILL_THREAD" => SeccompAction::KillThread,
        "SCMP_ACT_KILL_PROCESS" => SeccompAction::KillProcess,
        "SCMP_ACT_TRAP" => SeccompAction::Trap,
        "SCMP_ACT_TRACE" => SeccompAction::Trace(errno.unwrap_or(libc::EPERM as u32)),
        "SCMP_ACT_LOG" => SeccompAction::Log,
        "SCMP_ACT_NOTIFY" => {
            return Err(format!(
                "{field}: SCMP_ACT_NOTIFY needs a seccomp agent, which this runtime does not provide"
            ));
        }
        other => return Err(format!("{field}: unknown action '{other}'")),
    })
}

/// One argument condition (`SCMP_CMP_*`), compared as 64 bits as libseccomp does.
fn condition(arg: &oci::LinuxSeccompArg, field: &str) -> Result<SeccompCondition, String> {
    if arg.Index > 5 {
        return Err(format!(
            "{field}.index: {} (a syscall has arguments 0 to 5)",
            arg.Index
        ));
    }
    let (op, value) = match arg.Op.as_str() {
        "SCMP_CMP_NE" => (SeccompCmpOp::Ne, arg.Value),
        "SCMP_CMP_LT" => (SeccompCmpOp::Lt, arg.Value),
        "SCMP_CMP_LE" => (SeccompCmpOp::Le, arg.Value),
        "SCMP_CMP_EQ" => (SeccompCmpOp::Eq, arg.Value),
        "SCMP_CMP_GE" => (SeccompCmpOp::Ge, arg.Value),
        "SCMP_CMP_GT" => (SeccompCmpOp::Gt, arg.Value),
        // value is the mask, valueTwo the datum.
        "SCMP_CMP_MASKED_EQ" => (SeccompCmpOp::MaskedEq(arg.Value), arg.ValueTwo),
        other => return Err(format!("{field}.op: unknown operator '{other}'")),
    };
    SeccompCondition::new(arg.Index as u8, SeccompCmpArgLen::Qword, op, value)
        .map_err(|e| format!("{field}: {e}"))
}

/// The rules of one profile entry: all its conditions at once (AND), or, when several
/// name the same argument, each alone (OR), as runc does; none means unconditional.
fn entry_rules(entry: &oci::LinuxSyscall, field: &str) -> Result<Vec<SeccompRule>, String> {
    let conditions = entry
        .Args
        .iter()
        .enumerate()
        .map(|(i, arg)| condition(arg, &format!("{field}.args[{i}]")))
        .collect::<Result<Vec<_>, _>>()?;
    if conditions.is_empty() {
        return Ok(Vec::new());
    }
    let mut indexes: Vec<u64> = entry.Args.iter().map(|a| a.Index).collect();
    indexes.sort_unstable();
    indexes.dedup();
    let groups: Vec<Vec<SeccompCondition>> = if indexes.len() == entry.Args.len() {
        vec![conditions]
    } else {
        conditions.into_iter().map(|c| vec![c]).collect()
    };
    groups
        .into_iter()
        .map(|g| SeccompRule::new(g).map_err(|e| format!("{field}: {e}")))
        .collect()
}

/// Rules per syscall number; `None` matches unconditionally.
#[derive(Default)]
struct RuleSet(BTreeMap<i64, Option<Vec<SeccompRule>>>);

impl RuleSet {
    /// Adds `rules` for `nr` (`rules` empty: unconditional, which absorbs any others).
    fn add(&mut self, nr: i64, rules: &[SeccompRule]) {
        let slot = self.0.entry(nr).or_insert_with(|| Some(Vec::new()));
        if rules.is_empty() {
            *slot = None;
        } else if let Some(existing) = slot {
            existing.extend_from_slice(rules);
        }
    }

    fn into_map(self) -> BTreeMap<i64, Vec<SeccompRule>> {
        self.0
            .into_iter()
            .map(|(nr, rules)| (nr, rules.unwrap_or_default()))
            .collect()
    }
}

/// Compiles `profile` for this architecture. Errors name the field at fault.
pub fn compile(profile: &oci::LinuxSeccomp) -> Result<SeccompPlan, String> {
    let default = action(
        &profile.DefaultAction,
        (profile.DefaultErrnoRet != 0).then_some(profile.DefaultErrnoRet),
        "linux.seccomp.defaultAction",
    )?;
    let mut flags: libc::c_ulong = 0;
    for (i, flag) in profile.Flags.iter().enumerate() {
        flags |= match flag.as_str() {
            "SECCOMP_FILTER_FLAG_TSYNC" => 1,
            "SECCOMP_FILTER_FLAG_LOG" => 2,
            "SECCOMP_FILTER_FLAG_SPEC_ALLOW" => 4,
            other => return Err(format!("linux.seccomp.flags[{i}]: unknown flag '{other}'")),
        };
    }
    let mut any_rule = RuleSet::default();
    // Actions keep the profile's order; u32 of an action is its return value, unique.
    let mut by_action: Vec<(SeccompAction, RuleSet)> = Vec::new();
    for (i, entry) in profile.Syscalls.iter().enumerate() {
        let field = format!("linux.seccomp.syscalls[{i}]");
        let errno = entry.has_errnoret().then(|| entry.errnoret());
        let act = action(&entry.Action, errno, &format!("{field}.action"))?;
        let rules = entry_rules(entry, &field)?;
        if entry.Names.is_empty() {
            return Err(format!("{field}.names: empty"));
        }
        for name in &entry.Names {
            let Some(nr) = syscall_number(name) else {
                continue;
            };
            any_rule.add(nr, &rules);
            if act != SeccompAction::Allow {
                let position = by_action.iter().position(|(a, _)| *a == act);
                let set = match position {
                    Some(p) => &mut by_action[p].1,
                    None => {
                        by_action.push((act.clone(), RuleSet::default()));
                        &mut by_action.last_mut().expect("just pushed").1
                    }
                };
                set.add(nr, &rules);
            }
        }
    }
    // Each installed filter also judges the seccomp(2) calls that install the next:
    // one that may refuse seccomp(2) goes last, and two cannot both be installed.
    let seccomp_nr: i64 = libc::SYS_seccomp;
    let mut programs = Vec::new();
    let mut last = None;
    if default != SeccompAction::Allow {
        let refuses = !matches!(any_rule.0.get(&seccomp_nr), Some(None));
        let built = program(any_rule, default, SeccompAction::Allow)?;
        if refuses {
            last = Some(built);
        } else {
            programs.push(built);
        }
    }
    for (act, rules) in by_action {
        let refuses = rules.0.contains_key(&seccomp_nr);
        let built = program(rules, SeccompAction::Allow, act)?;
        if !refuses {
            programs.push(built);
        } else if last.is_none() {
            last = Some(built);
        } else {
            return Err(
                "linux.seccomp: rules of two different actions restrict seccomp(2) itself, \
                 so the profile's filters cannot all be installed"
                    .into(),
            );
        }
    }
    programs.extend(last);
    Ok(SeccompPlan { programs, flags })
}

/// One BPF program: `matched` where `rules` match, `otherwise` elsewhere.
fn program(
    rules: RuleSet,
    otherwise: SeccompAction,
    matched: SeccompAction,
) -> Result<BpfProgram, String> {
    let filter = SeccompFilter::new(rules.into_map(), otherwise, matched, ARCH)
        .map_err(|e| format!("linux.seccomp: {e}"))?;
    BpfProgram::try_from(filter).map_err(|e| format!("linux.seccomp: {e}"))
}

/// Installs `plan`'s programs on the calling thread. Only syscalls, no allocation: safe
/// in a forked child. Returns the index of the program the kernel refused and errno.
pub fn install(plan: &SeccompPlan) -> Result<(), (usize, i32)> {
    for (index, program) in plan.programs.iter().enumerate() {
        let prog = libc::sock_fprog {
            len: program.len() as libc::c_ushort,
            // seccompiler's sock_filter is #[repr(C)] with the kernel's layout.
            filter: program.as_ptr() as *mut libc::sock_filter,
        };
        // SAFETY: seccomp(2) reads the program through `prog`, which outlives the call.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_seccomp,
                SECCOMP_SET_MODE_FILTER,
                plan.flags,
                &prog as *const libc::sock_fprog,
            )
        };
        if rc != 0 {
            // SAFETY: reading this thread's errno.
            return Err((index, unsafe { *libc::__errno_location() }));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(names: &[&str], action: &str, args: &[(u64, &str, u64, u64)]) -> oci::LinuxSyscall {
        oci::LinuxSyscall {
            Names: names.iter().map(|n| n.to_string()).collect(),
            Action: action.to_string(),
            Args: args
                .iter()
                .map(|(index, op, value, two)| oci::LinuxSeccompArg {
                    Index: *index,
                    Op: op.to_string(),
                    Value: *value,
                    ValueTwo: *two,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }

    fn profile(default: &str, syscalls: Vec<oci::LinuxSyscall>) -> oci::LinuxSeccomp {
        oci::LinuxSeccomp {
            DefaultAction: default.to_string(),
            Syscalls: syscalls,
            ..Default::default()
        }
    }

    /// Runs `body` in a forked child under `plan` and returns its exit code (the child
    /// only makes syscalls after the fork).
    fn in_child(plan: &SeccompPlan, body: fn() -> i32) -> i32 {
        // SAFETY: the child makes syscalls only (install, body, _exit), no allocation.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork");
        if pid == 0 {
            // SAFETY: prctl with integer arguments only.
            unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
            let code = match install(plan) {
                Ok(()) => body(),
                Err(_) => 99,
            };
            // SAFETY: leaving the child.
            unsafe { libc::_exit(code) };
        }
        let mut status = 0;
        // SAFETY: waiting for our child into a stack int.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        assert!(
            libc::WIFEXITED(status),
            "child ended by signal: {status:#x}"
        );
        libc::WEXITSTATUS(status)
    }

    /// A raw syscall with one argument (libc's wrappers of syscalls that cannot fail
    /// do not set errno): its result or errno.
    fn sys(nr: libc::c_long, arg: libc::c_long) -> Result<libc::c_long, i32> {
        // SAFETY: the syscalls the tests make take integers only.
        let rc = unsafe { libc::syscall(nr, arg, 0) };
        if rc == -1 {
            // SAFETY: reading this thread's errno.
            Err(unsafe { *libc::__errno_location() })
        } else {
            Ok(rc)
        }
    }

    #[test]
    fn a_deny_list_profile_fails_only_the_listed_syscall_with_its_errno() {
        let mut clone3 = entry(&["getppid"], "SCMP_ACT_ERRNO", &[]);
        clone3.set_errnoret(libc::ENOSYS as u32);
        let plan = compile(&profile("SCMP_ACT_ALLOW", vec![clone3])).unwrap();
        assert_eq!(plan.programs.len(), 1);
        let code = in_child(&plan, || {
            if sys(libc::SYS_getppid, 0) != Err(libc::ENOSYS) {
                return 1;
            }
            if sys(libc::SYS_getpid, 0).is_err() {
                return 2;
            }
            0
        });
        assert_eq!(code, 0);
    }

    #[test]
    fn an_allow_list_profile_applies_argument_conditions_and_its_default() {
        let wanted = [
            "exit_group",
            "exit",
            "getpid",
            "rt_sigreturn",
            "munmap",
            "sigaltstack",
        ];
        let plan = compile(&profile(
            "SCMP_ACT_ERRNO",
            vec![
                entry(&wanted, "SCMP_ACT_ALLOW", &[]),
                // getpriority(PRIO_PROCESS, 0) only.
                entry(
                    &["getpriority"],
                    "SCMP_ACT_ALLOW",
                    &[(0, "SCMP_CMP_EQ", 0, 0)],
                ),
                // umask with bit 0o2 set only.
                entry(
                    &["umask"],
                    "SCMP_ACT_ALLOW",
                    &[(0, "SCMP_CMP_MASKED_EQ", 0o2, 0o2)],
                ),
                entry(&["no_such_syscall_anywhere"], "SCMP_ACT_ALLOW", &[]),
            ],
        ))
        .unwrap();
        assert_eq!(plan.programs.len(), 1);
        let code = in_child(&plan, || {
            if sys(libc::SYS_getpid, 0).is_err() {
                return 1;
            }
            if sys(libc::SYS_getuid, 0) != Err(libc::EPERM) {
                return 2;
            }
            if sys(libc::SYS_getpriority, libc::PRIO_PROCESS as _).is_err() {
                return 3;
            }
            if sys(libc::SYS_getpriority, libc::PRIO_PGRP as _) != Err(libc::EPERM) {
                return 4;
            }
            if sys(libc::SYS_umask, 0o022).is_err() {
                return 5;
            }
            if sys(libc::SYS_umask, 0o075) != Err(libc::EPERM) {
                return 6;
            }
            0
        });
        assert_eq!(code, 0);
    }

    #[test]
    fn rules_of_several_actions_each_keep_their_action() {
        let mut enosys = entry(&["getppid"], "SCMP_ACT_ERRNO", &[]);
        enosys.set_errnoret(libc::ENOSYS as u32);
        let mut eacces = entry(&["getpgid"], "SCMP_ACT_ERRNO", &[]);
        eacces.set_errnoret(libc::EACCES as u32);
        let allowed = entry(
            &["exit_group", "exit", "getpid", "getppid", "getpgid"],
            "SCMP_ACT_ALLOW",
            &[],
        );
        let plan = compile(&profile("SCMP_ACT_ERRNO", vec![allowed, enosys, eacces])).unwrap();
        assert_eq!(plan.programs.len(), 3);
        let code = in_child(&plan, || {
            if sys(libc::SYS_getppid, 0) != Err(libc::ENOSYS) {
                return 1;
            }
            if sys(libc::SYS_getpgid, 0) != Err(libc::EACCES) {
                return 2;
            }
            if sys(libc::SYS_getsid, 0) != Err(libc::EPERM) {
                return 3;
            }
            if sys(libc::SYS_getpid, 0).is_err() {
                return 4;
            }
            0
        });
        assert_eq!(code, 0);
    }

    #[test]
    fn a_profile_that_refuses_seccomp_itself_installs_that_filter_last() {
        // Default ERRNO without seccomp listed: the default filter refuses seccomp(2).
        let mut enosys = entry(&["getppid"], "SCMP_ACT_ERRNO", &[]);
        enosys.set_errnoret(libc::ENOSYS as u32);
        let allowed = entry(
            &["exit_group", "exit", "getpid", "getppid"],
            "SCMP_ACT_ALLOW",
            &[],
        );
        let plan = compile(&profile("SCMP_ACT_ERRNO", vec![allowed.clone(), enosys])).unwrap();
        assert_eq!(plan.programs.len(), 2);
        let code = in_child(&plan, || {
            if sys(libc::SYS_getppid, 0) != Err(libc::ENOSYS) {
                return 1;
            }
            if sys(libc::SYS_getpid, 0).is_err() {
                return 2;
            }
            0
        });
        assert_eq!(code, 0);
        // Two actions both restricting seccomp(2) cannot be installed: refused up front.
        let mut a = entry(&["seccomp"], "SCMP_ACT_ERRNO", &[]);
        a.set_errnoret(libc::ENOSYS as u32);
        let b = entry(&["seccomp"], "SCMP_ACT_KILL", &[(0, "SCMP_CMP_EQ", 7, 0)]);
        let err = compile(&profile("SCMP_ACT_ALLOW", vec![a, b])).unwrap_err();
        assert!(err.contains("seccomp(2)"), "{err}");
    }

    #[test]
    fn bad_profiles_name_the_field() {
        let err = compile(&profile("SCMP_ACT_MAYBE", vec![])).unwrap_err();
        assert!(
            err.contains("defaultAction") && err.contains("SCMP_ACT_MAYBE"),
            "{err}"
        );
        let err = compile(&profile(
            "SCMP_ACT_ALLOW",
            vec![entry(&["read"], "SCMP_ACT_NOTIFY", &[])],
        ))
        .unwrap_err();
        assert!(
            err.contains("syscalls[0].action") && err.contains("NOTIFY"),
            "{err}"
        );
        let err = compile(&profile(
            "SCMP_ACT_ALLOW",
            vec![
                entry(&["read"], "SCMP_ACT_ERRNO", &[]),
                entry(&["write"], "SCMP_ACT_ERRNO", &[(6, "SCMP_CMP_EQ", 1, 0)]),
            ],
        ))
        .unwrap_err();
        assert!(err.contains("syscalls[1].args[0].index"), "{err}");
        let err = compile(&profile(
            "SCMP_ACT_ALLOW",
            vec![entry(
                &["read"],
                "SCMP_ACT_ERRNO",
                &[(0, "SCMP_CMP_ABOUT", 1, 0)],
            )],
        ))
        .unwrap_err();
        assert!(
            err.contains("args[0].op") && err.contains("SCMP_CMP_ABOUT"),
            "{err}"
        );
        let mut flagged = profile("SCMP_ACT_ALLOW", vec![]);
        flagged.Flags = vec!["SECCOMP_FILTER_FLAG_WAIT".into()];
        let err = compile(&flagged).unwrap_err();
        assert!(err.contains("flags[0]"), "{err}");
        let err = compile(&profile(
            "SCMP_ACT_ALLOW",
            vec![entry(&[], "SCMP_ACT_ERRNO", &[])],
        ))
        .unwrap_err();
        assert!(err.contains("syscalls[0].names"), "{err}");
    }

    #[test]
    fn a_profile_naming_every_syscall_compiles() {
        let every: Vec<&str> = names::SYSCALLS.iter().map(|(n, _)| *n).collect();
        let plan = compile(&profile(
            "SCMP_ACT_ERRNO",
            vec![entry(&every, "SCMP_ACT_ALLOW", &[])],
        ))
        .unwrap();
        assert_eq!(plan.programs.len(), 1);
        assert!(syscall_number("read").is_some());
        assert!(syscall_number("no_such_syscall").is_none());
    }
}
