//! The sandbox's host cgroup (Kata's `sandbox_cgroup_only`): the shim — and with it the
//! VMM's threads and virtiofsd, which it starts afterwards — moves into the cgroup the
//! sandbox spec's `linux.cgroupsPath` names, limited to the VM's size plus an overhead,
//! and moves back out before the cgroup is removed. cgroup v1 and v2, through cgroups-rs.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use cgroups_rs::cgroup_builder::CgroupBuilder;
use cgroups_rs::{Cgroup, CgroupPid};

/// Controllers the sandbox cgroup is made in on v1: the limited ones, and cpuacct for
/// the usage containerd reports.
pub const CONTROLLERS_V1: [&str; 3] = ["cpu", "cpuacct", "memory"];
/// Controllers the sandbox cgroup is made in on v2, enabled along its path (v2's cpu
/// controller counts usage itself). The last entry of `cgroup.controllers` reaches
/// cgroups-rs 0.3 with its newline, so only names that are never last there (pids,
/// misc, …, come after these) are asked for.
pub const CONTROLLERS_V2: [&str; 2] = ["cpu", "memory"];

/// Memory the sandbox may use beyond its guest RAM: the shim, the VMM, virtiofsd.
pub const MEMORY_OVERHEAD_MIB: u64 = 128;

/// CPU period of the sandbox's quota, in microseconds.
pub const CPU_PERIOD_US: u64 = 100_000;

/// How long removing the cgroup waits for the processes the shim started to leave it.
pub const LEAVE_GRACE: Duration = Duration::from_secs(2);

/// A cgroup that could not be named, made, entered or removed.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// `linux.cgroupsPath` cannot be used.
    #[error("linux.cgroupsPath '{path}': {reason}")]
    BadPath {
        /// The spec's value.
        path: String,
        /// Why it is refused.
        reason: &'static str,
    },
    /// The cgroup exists and holds processes that are not this sandbox's.
    #[error("host cgroup '{path}' (linux.cgroupsPath) is in use by process {pid}")]
    InUse {
        /// The cgroup, relative to the hierarchy's root.
        path: String,
        /// One of the processes in it.
        pid: u64,
    },
    /// A cgroupfs operation.
    #[error("{what} host cgroup '{path}': {source}")]
    Cgroupfs {
        /// The operation.
        what: &'static str,
        /// The cgroup, relative to the hierarchy's root.
        path: String,
        /// Why.
        #[source]
        source: cgroups_rs::error::Error,
    },
}

/// A cgroup path relative to the root of the cgroup hierarchies, without a leading `/`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CgroupPath(String);

impl CgroupPath {
    /// Reads an OCI `linux.cgroupsPath`: a cgroupfs path (`/kubepods/pod1/<id>`, taken
    /// from the hierarchy root) or the systemd form `slice:prefix:name`, which names
    /// `<slice expanded>/<prefix>-<name>.scope` as systemd lays it out.
    pub fn parse(spec_path: &str) -> Result<Self, CgroupError> {
        let bad = |reason| CgroupError::BadPath {
            path: spec_path.to_string(),
            reason,
        };
        if spec_path.contains('\0') {
            return Err(bad("contains a NUL byte"));
        }
        let relative = match spec_path.split(':').collect::<Vec<_>>()[..] {
            [_] => spec_path.to_string(),
            [slice, prefix, name] => systemd_path(slice, prefix, name).ok_or_else(|| {
                bad("not a systemd 'slice:prefix:name' (a .slice, then two names without '/')")
            })?,
            _ => return Err(bad("neither a path nor systemd's 'slice:prefix:name'")),
        };
        let mut parts = Vec::new();
        for part in relative.split('/') {
            match part {
                "" | "." => {}
                ".." => return Err(bad("climbs out with '..'")),
                part => parts.push(part),
            }
        }
        if parts.is_empty() {
            return Err(bad("names the root cgroup"));
        }
        Ok(Self(parts.join("/")))
    }

    /// The path below the hierarchy root.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// systemd's layout of `slice:prefix:name`: `a-b.slice` is `a.slice/a-b.slice`, `-.slice`
/// (or an empty slice) the root, and the unit is `<prefix>-<name>.scope`.
fn systemd_path(slice: &str, prefix: &str, name: &str) -> Option<String> {
    let plain = |s: &str| !s.is_empty() && !s.contains('/');
    if !plain(name) || prefix.contains('/') {
        return None;
    }
    let mut path = String::new();
    if !slice.is_empty() && slice != "-.slice" {
        let stem = slice.strip_suffix(".slice").filter(|s| plain(s))?;
        let mut sofar = String::new();
        for word in stem.split('-') {
            if word.is_empty() {
                return None;
            }
            if !sofar.is_empty() {
                sofar.push('-');
            }
            sofar.push_str(word);
            path.push_str(&sofar);
            path.push_str(".slice/");
        }
    }
    let unit = if prefix.is_empty() {
        format!("{name}.scope")
    } else {
        format!("{prefix}-{name}.scope")
    };
    Some(path + &unit)
}

/// What the sandbox's cgroup is and may use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CgroupRequest {
    /// Where it is.
    pub path: CgroupPath,
    /// Its memory limit in bytes.
    pub memory_bytes: u64,
    /// Its CPU quota per [`CPU_PERIOD_US`], in microseconds.
    pub cpu_quota_us: u64,
}

impl CgroupRequest {
    /// The cgroup at `path` for a VM of `vcpus` and `memory_mib`: the guest's RAM plus
    /// [`MEMORY_OVERHEAD_MIB`], and one CPU more than its vCPUs (the VMM's own threads).
    pub fn for_vm(path: CgroupPath, vcpus: u8, memory_mib: u32) -> Self {
        Self {
            path,
            memory_bytes: (u64::from(memory_mib) + MEMORY_OVERHEAD_MIB) << 20,
            cpu_quota_us: (u64::from(vcpus) + 1) * CPU_PERIOD_US,
        }
    }
}

/// The sandbox cgroup this process runs in, and where it came from.
pub struct SandboxCgroup {
    cgroup: Cgroup,
    path: CgroupPath,
    /// This process's cgroup per v1 controller (the key "" on v2) before it moved.
    origin: HashMap<String, String>,
}

fn cgroupfs(
    what: &'static str,
    path: &CgroupPath,
) -> impl FnOnce(cgroups_rs::error::Error) -> CgroupError {
    let path = path.as_str().to_string();
    move |source| CgroupError::Cgroupfs { what, path, source }
}

/// The controllers of this host's cgroup version.
fn controllers() -> Vec<String> {
    let names: &[&str] = if cgroups_rs::hierarchies::is_cgroup2_unified_mode() {
        &CONTROLLERS_V2
    } else {
        &CONTROLLERS_V1
    };
    names.iter().map(|c| c.to_string()).collect()
}

fn own_pid() -> CgroupPid {
    CgroupPid::from(u64::from(std::process::id()))
}

/// The cgroup at `path` (relative to the hierarchy root) in `controllers` only.
fn at(path: &str, controllers: Vec<String>) -> Cgroup {
    let path = path.trim_start_matches('/');
    // cgroups-rs takes an empty path as "every controller, unentered": "." is the root.
    let path = if path.is_empty() { "." } else { path };
    Cgroup::load_with_specified_controllers(cgroups_rs::hierarchies::auto(), path, controllers)
}

/// Creates the cgroup `request` names (or takes it over, empty, from a shim that died),
/// sets its limits and moves this whole process into it; on failure the process stays
/// where it was and a cgroup made here is removed again. A cgroup that holds other
/// processes is refused.
pub fn enter(request: &CgroupRequest) -> Result<SandboxCgroup, CgroupError> {
    let path = &request.path;
    let origin = cgroups_rs::cgroup::get_cgroups_relative_paths()
        .map_err(cgroupfs("reading this process's", path))?;
    let existing = at(path.as_str(), controllers());
    if let Some(process) = existing.procs().first() {
        return Err(CgroupError::InUse {
            path: path.as_str().to_string(),
            pid: process.pid,
        });
    }
    let memory = i64::try_from(request.memory_bytes).unwrap_or(i64::MAX);
    let quota = i64::try_from(request.cpu_quota_us).unwrap_or(i64::MAX);
    let built = CgroupBuilder::new(path.as_str())
        .set_specified_controllers(controllers())
        .memory()
        .memory_hard_limit(memory)
        .done()
        .cpu()
        .period(CPU_PERIOD_US)
        .quota(quota)
        .done()
        .build(cgroups_rs::hierarchies::auto());
    let cgroup = match built {
        Ok(cgroup) => cgroup,
        Err(e) => {
            let _ = existing.delete();
            return Err(cgroupfs("creating", path)(e));
        }
    };
    if let Err(e) = cgroup.add_task_by_tgid(own_pid()) {
        let _ = cgroup.delete();
        return Err(cgroupfs("entering", path)(e));
    }
    Ok(SandboxCgroup {
        cgroup,
        path: path.clone(),
        origin,
    })
}

impl SandboxCgroup {
    /// Where it is.
    pub fn path(&self) -> &CgroupPath {
        &self.path
    }

    /// Moves this process back to the cgroups it came from, then removes the sandbox
    /// cgroup, waiting up to `grace` for processes it started (virtiofsd) to leave it.
    pub fn leave(self, grace: Duration) -> Result<(), CgroupError> {
        let back = |origin: &str, controllers| {
            at(origin, controllers)
                .add_task_by_tgid(own_pid())
                .map_err(cgroupfs("leaving", &self.path))
        };
        if cgroups_rs::hierarchies::is_cgroup2_unified_mode() {
            back(
                self.origin.get("").map_or("/", String::as_str),
                controllers(),
            )?;
        } else {
            // v1: each controller's hierarchy has its own origin.
            for controller in CONTROLLERS_V1 {
                if let Some(origin) = self.origin.get(controller) {
                    back(origin, vec![controller.to_string()])?;
                }
            }
        }
        delete_within(&self.cgroup, &self.path, grace)
    }
}

fn delete_within(cgroup: &Cgroup, path: &CgroupPath, grace: Duration) -> Result<(), CgroupError> {
    let deadline = Instant::now() + grace;
    loop {
        match cgroup.delete() {
            Ok(()) => return Ok(()),
            Err(e) if Instant::now() >= deadline => return Err(cgroupfs("removing", path)(e)),
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// Removes the cgroup at `path` if it exists, after killing whatever still runs in it
/// other than this process: the undo for a shim that died inside it (`delete`). Only
/// ever given a cgroup this sandbox entered (its record).
pub fn remove_cgroup(path: &CgroupPath) -> Option<CgroupError> {
    let cgroup = at(path.as_str(), controllers());
    if !cgroup.exists() {
        return None;
    }
    for process in cgroup.procs() {
        if process.pid == u64::from(std::process::id()) {
            continue;
        }
        if let Ok(pid) = i32::try_from(process.pid) {
            let _ =
                nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGKILL);
        }
    }
    delete_within(&cgroup, path, Duration::from_secs(2)).err()
}

/// The file in a sandbox's run directory that records its cgroup for `delete`.
pub fn record_file(run_dir: &Path) -> std::path::PathBuf {
    run_dir.join("cgroup")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(path: &str) -> String {
        CgroupPath::parse(path).unwrap().as_str().to_string()
    }

    #[test]
    fn cgroupfs_paths_are_taken_from_the_root() {
        assert_eq!(parsed("/default/t1"), "default/t1");
        assert_eq!(
            parsed("kubepods//burstable/./pod1/abc/"),
            "kubepods/burstable/pod1/abc"
        );
    }

    #[test]
    fn systemd_paths_are_laid_out_as_systemd_does() {
        assert_eq!(
            parsed("kubepods-burstable-pod1.slice:cri-containerd:abc"),
            "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1.slice/cri-containerd-abc.scope"
        );
        assert_eq!(
            parsed("system.slice:docker:abc"),
            "system.slice/docker-abc.scope"
        );
        assert_eq!(parsed(":kata:abc"), "kata-abc.scope");
        assert_eq!(parsed("-.slice::abc"), "abc.scope");
    }

    #[test]
    fn bad_paths_are_refused_naming_them() {
        for (path, reason) in [
            ("/a/../../etc", "'..'"),
            ("/", "root"),
            ("a:b", "neither"),
            ("a.slice:b:c/d", "systemd"),
            ("notaslice:b:c", "systemd"),
            ("a--b.slice:p:c", "systemd"),
            ("/a\0b", "NUL"),
        ] {
            let error = CgroupPath::parse(path).unwrap_err().to_string();
            assert!(
                error.contains("linux.cgroupsPath") && error.contains(reason),
                "{path}: {error}"
            );
        }
    }

    #[test]
    fn the_limits_are_the_vm_plus_overhead() {
        let request = CgroupRequest::for_vm(CgroupPath::parse("/x").unwrap(), 2, 512);
        assert_eq!(request.memory_bytes, (512 + MEMORY_OVERHEAD_MIB) << 20);
        assert_eq!(request.cpu_quota_us, 3 * CPU_PERIOD_US);
    }
}
