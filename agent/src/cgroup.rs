//! cgroup v2 for containers: one directory per container under the agent's parent
//! cgroup, resources from the OCI spec, stats, freeze, and OOM kill counts.

use std::fs;
use std::path::{Path, PathBuf};

use kata_agent_protocols::agent::{
    CgroupStats, CpuStats, CpuUsage, MemoryData, MemoryStats, PidsStats, ThrottlingData,
};
use kata_agent_protocols::oci::LinuxResources;

/// Where cgroup2 is mounted.
pub const CGROUP_ROOT: &str = "/sys/fs/cgroup";
/// The parent of every container cgroup.
pub const PARENT: &str = "kata_agent";
const CONTROLLERS: [&str; 4] = ["cpu", "memory", "pids", "cpuset"];

/// Whether `root` is a cgroup2 mount.
pub fn is_cgroup2(root: &Path) -> bool {
    nix::sys::statfs::statfs(root)
        .map(|fs| fs.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC)
        .unwrap_or(false)
}

/// A container's cgroup directory.
#[derive(Clone, Debug)]
pub struct Cgroup {
    dir: PathBuf,
}

fn enable_controllers(dir: &Path) -> std::io::Result<()> {
    let available = fs::read_to_string(dir.join("cgroup.controllers"))?;
    let wanted: Vec<String> = CONTROLLERS
        .iter()
        .filter(|c| available.split_whitespace().any(|a| a == **c))
        .map(|c| format!("+{c}"))
        .collect();
    if !wanted.is_empty() {
        fs::write(dir.join("cgroup.subtree_control"), wanted.join(" "))?;
    }
    Ok(())
}

fn io_context<'a>(action: &'a str, path: &'a Path) -> impl FnOnce(std::io::Error) -> String + 'a {
    move |e| format!("{action} {}: {e}", path.display())
}

impl Cgroup {
    /// Creates `<root>/kata_agent/<id>` with the controllers enabled on the way.
    pub fn create(root: &Path, id: &str) -> Result<Self, String> {
        let parent = root.join(PARENT);
        enable_controllers(root).map_err(io_context("enabling controllers in", root))?;
        fs::create_dir_all(&parent).map_err(io_context("creating", &parent))?;
        enable_controllers(&parent).map_err(io_context("enabling controllers in", &parent))?;
        let dir = parent.join(id);
        fs::create_dir(&dir).map_err(io_context("creating", &dir))?;
        Ok(Self { dir })
    }

    /// The cgroup directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file a process writes "0" into to join.
    pub fn procs_file(&self) -> PathBuf {
        self.dir.join("cgroup.procs")
    }

    fn write(&self, file: &str, value: &str) -> Result<(), String> {
        let path = self.dir.join(file);
        fs::write(&path, value).map_err(|e| format!("writing '{value}' to {}: {e}", path.display()))
    }

    fn read(&self, file: &str) -> String {
        fs::read_to_string(self.dir.join(file)).unwrap_or_default()
    }

    /// Applies memory, CPU and pids limits.
    pub fn apply(&self, resources: &LinuxResources) -> Result<(), String> {
        if let Some(memory) = resources.Memory.as_ref() {
            if memory.Limit > 0 {
                self.write("memory.max", &memory.Limit.to_string())?;
            } else if memory.Limit == -1 {
                self.write("memory.max", "max")?;
            }
            if memory.Reservation > 0 {
                self.write("memory.low", &memory.Reservation.to_string())?;
            }
            // OCI swap is memory+swap; cgroup v2 wants swap alone.
            if memory.Swap > 0 && memory.Limit > 0 && memory.Swap >= memory.Limit {
                let _ = self.write("memory.swap.max", &(memory.Swap - memory.Limit).to_string());
            }
        }
        if let Some(cpu) = resources.CPU.as_ref() {
            if cpu.Shares > 0 {
                self.write("cpu.weight", &shares_to_weight(cpu.Shares).to_string())?;
            }
            if cpu.Quota != 0 || cpu.Period != 0 {
                let quota = if cpu.Quota > 0 {
                    cpu.Quota.to_string()
                } else {
                    "max".to_string()
                };
                let period = if cpu.Period > 0 { cpu.Period } else { 100_000 };
                self.write("cpu.max", &format!("{quota} {period}"))?;
            }
            if !cpu.Cpus.is_empty() {
                self.write("cpuset.cpus", &cpu.Cpus)?;
            }
            if !cpu.Mems.is_empty() {
                self.write("cpuset.mems", &cpu.Mems)?;
            }
        }
        if let Some(pids) = resources.Pids.as_ref() {
            let value = if pids.Limit > 0 {
                pids.Limit.to_string()
            } else {
                "max".to_string()
            };
            self.write("pids.max", &value)?;
        }
        Ok(())
    }

    /// Freezes or thaws every process.
    pub fn freeze(&self, frozen: bool) -> Result<(), String> {
        self.write("cgroup.freeze", if frozen { "1" } else { "0" })
    }

    /// Kills every process in the cgroup.
    pub fn kill_all(&self) -> Result<(), String> {
        self.write("cgroup.kill", "1")
    }

    /// Sends `signal` to every process in the cgroup.
    pub fn signal_all(&self, signal: nix::sys::signal::Signal) {
        for pid in self.pids() {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal);
        }
    }

    /// The pids (agent namespace) in the cgroup.
    pub fn pids(&self) -> Vec<i32> {
        self.read("cgroup.procs")
            .lines()
            .filter_map(|line| line.trim().parse().ok())
            .collect()
    }

    /// How many times the OOM killer struck.
    pub fn oom_kills(&self) -> u64 {
        key_value(&self.read("memory.events"), "oom_kill").unwrap_or(0)
    }

    /// CPU, memory and pids statistics.
    pub fn stats(&self) -> CgroupStats {
        let cpu = self.read("cpu.stat");
        let memory_stat = self.read("memory.stat");
        let limit = parse_max(&self.read("memory.max"));
        let mut stats = CgroupStats::new();
        stats.cpu_stats = Some(CpuStats {
            cpu_usage: Some(CpuUsage {
                total_usage: key_value(&cpu, "usage_usec").unwrap_or(0) * 1000,
                usage_in_usermode: key_value(&cpu, "user_usec").unwrap_or(0) * 1000,
                usage_in_kernelmode: key_value(&cpu, "system_usec").unwrap_or(0) * 1000,
                ..Default::default()
            })
            .into(),
            throttling_data: Some(ThrottlingData {
                periods: key_value(&cpu, "nr_periods").unwrap_or(0),
                throttled_periods: key_value(&cpu, "nr_throttled").unwrap_or(0),
                throttled_time: key_value(&cpu, "throttled_usec").unwrap_or(0) * 1000,
                ..Default::default()
            })
            .into(),
            ..Default::default()
        })
        .into();
        stats.memory_stats = Some(MemoryStats {
            cache: key_value(&memory_stat, "file").unwrap_or(0),
            usage: Some(MemoryData {
                usage: self.read("memory.current").trim().parse().unwrap_or(0),
                max_usage: self.read("memory.peak").trim().parse().unwrap_or(0),
                failcnt: key_value(&self.read("memory.events"), "max").unwrap_or(0),
                limit: limit.unwrap_or(u64::MAX),
                ..Default::default()
            })
            .into(),
            use_hierarchy: true,
            stats: memory_stat
                .lines()
                .filter_map(|line| {
                    let (key, value) = line.split_once(' ')?;
                    Some((key.to_string(), value.trim().parse().ok()?))
                })
                .collect(),
            ..Default::default()
        })
        .into();
        stats.pids_stats = Some(PidsStats {
            current: self.read("pids.current").trim().parse().unwrap_or(0),
            limit: parse_max(&self.read("pids.max")).unwrap_or(0),
            ..Default::default()
        })
        .into();
        stats
    }

    /// Removes the directory (the cgroup must be empty).
    pub fn remove(&self) -> Result<(), String> {
        for _ in 0..100 {
            match fs::remove_dir(&self.dir) {
                Ok(()) => return Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
                // Busy until the last process has been reaped.
                Err(_) => std::thread::sleep(std::time::Duration::from_millis(10)),
            }
        }
        fs::remove_dir(&self.dir).map_err(io_context("removing", &self.dir))
    }
}

/// cgroup v1 cpu.shares (2..262144) → cgroup v2 cpu.weight (1..10000).
pub fn shares_to_weight(shares: u64) -> u64 {
    let shares = shares.clamp(2, 262_144);
    1 + ((shares - 2) * 9999) / 262_142
}

/// `max` → None, a number → Some.
fn parse_max(text: &str) -> Option<u64> {
    text.trim().parse().ok()
}

/// The value of `key` in a flat-keyed file (`key value` lines).
pub fn key_value(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let (k, v) = line.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok())?
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_follow_the_runc_conversion() {
        assert_eq!(shares_to_weight(2), 1);
        assert_eq!(shares_to_weight(1024), 39);
        assert_eq!(shares_to_weight(262_144), 10_000);
        assert_eq!(shares_to_weight(0), 1);
    }

    #[test]
    fn flat_keyed_files() {
        let events = "low 0\nhigh 0\nmax 4\noom 1\noom_kill 1\n";
        assert_eq!(key_value(events, "oom_kill"), Some(1));
        assert_eq!(key_value(events, "max"), Some(4));
        assert_eq!(key_value(events, "absent"), None);
        assert_eq!(parse_max("max\n"), None);
        assert_eq!(parse_max("1048576\n"), Some(1_048_576));
    }
}
