//! The job an L1 test host runs: written by the harness into the L1 initrd as
//! [`JOB_PATH`] (+ [`COMMAND_PATH`]), read by `kvm-host-init`.
//!
//! Line format, one directive per line (`#` starts a comment):
//! ```text
//! root TAG                 # x86_64: mount 9p TAG (this machine's /) read-only and chroot into it
//! mount TAG PATH ro|rw     # mount 9p TAG at PATH (inside the root, if any)
//! tmpfs PATH               # a fresh tmpfs at PATH (inside the root, if any)
//! cwd PATH                 # working directory of the command
//! env KEY=VALUE            # environment of the command
//! ```

use std::path::PathBuf;

/// Where the job description lives inside the L1 initrd.
pub const JOB_PATH: &str = "/kvm-host/job";
/// Where the shell command lives inside the L1 initrd.
pub const COMMAND_PATH: &str = "/kvm-host/command";
/// Printed on the console right before the command starts.
pub const BEGIN_MARKER: &str = "KVM-HOST-BEGIN";
/// Printed on the console when the command ended: `KVM-HOST-EXIT status=N uptime=S`.
pub const EXIT_MARKER: &str = "KVM-HOST-EXIT";

/// A 9p share to mount in L1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// The virtio-9p mount tag.
    pub tag: String,
    /// The mount point, the same absolute path as on this machine.
    pub path: PathBuf,
    /// Whether the mount is read-only.
    pub read_only: bool,
}

/// Everything `kvm-host-init` needs to run one command.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Job {
    /// 9p tag of a read-only root to chroot into (x86_64 uses this machine's `/`).
    pub root: Option<String>,
    /// Shares to mount.
    pub mounts: Vec<Mount>,
    /// Fresh tmpfs mounts.
    pub tmpfs: Vec<PathBuf>,
    /// Working directory.
    pub cwd: Option<PathBuf>,
    /// Environment variables.
    pub env: Vec<(String, String)>,
}

/// A job file that could not be parsed.
#[derive(Debug, thiserror::Error)]
#[error("job line {line}: {reason}")]
pub struct JobError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong with it.
    pub reason: String,
}

fn absolute(path: &str, line: usize) -> Result<PathBuf, JobError> {
    if !path.starts_with('/') {
        return Err(JobError {
            line,
            reason: format!("path '{path}' must be absolute"),
        });
    }
    Ok(PathBuf::from(path))
}

impl Job {
    /// Serialises the job in the line format.
    pub fn render(&self) -> String {
        let mut s = String::from("# kvm-host job\n");
        if let Some(root) = &self.root {
            s += &format!("root {root}\n");
        }
        for m in &self.mounts {
            let mode = if m.read_only { "ro" } else { "rw" };
            s += &format!("mount {} {} {mode}\n", m.tag, m.path.display());
        }
        for t in &self.tmpfs {
            s += &format!("tmpfs {}\n", t.display());
        }
        if let Some(cwd) = &self.cwd {
            s += &format!("cwd {}\n", cwd.display());
        }
        for (k, v) in &self.env {
            s += &format!("env {k}={v}\n");
        }
        s
    }

    /// Parses the line format.
    pub fn parse(text: &str) -> Result<Job, JobError> {
        let mut job = Job::default();
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            let content = raw.trim();
            if content.is_empty() || content.starts_with('#') {
                continue;
            }
            let (word, rest) = content.split_once(' ').unwrap_or((content, ""));
            let err = |reason: String| JobError { line, reason };
            match word {
                "root" if !rest.is_empty() => job.root = Some(rest.to_string()),
                "mount" => {
                    let f: Vec<&str> = rest.split(' ').collect();
                    let [tag, path, mode] = f.as_slice() else {
                        return Err(err(format!(
                            "expected 'mount TAG PATH ro|rw', got '{content}'"
                        )));
                    };
                    let read_only = match *mode {
                        "ro" => true,
                        "rw" => false,
                        m => return Err(err(format!("mount mode '{m}' is not ro or rw"))),
                    };
                    job.mounts.push(Mount {
                        tag: tag.to_string(),
                        path: absolute(path, line)?,
                        read_only,
                    });
                }
                "tmpfs" => job.tmpfs.push(absolute(rest, line)?),
                "cwd" => job.cwd = Some(absolute(rest, line)?),
                "env" => {
                    let (k, v) = rest
                        .split_once('=')
                        .ok_or_else(|| err(format!("expected 'env KEY=VALUE', got '{content}'")))?;
                    job.env.push((k.to_string(), v.to_string()));
                }
                _ => return Err(err(format!("unknown directive '{content}'"))),
            }
        }
        Ok(job)
    }
}

/// Parses the exit marker line, returning the command's exit status.
pub fn parse_exit_marker(line: &str) -> Option<i32> {
    let rest = line.trim().strip_prefix(EXIT_MARKER)?;
    rest.split_whitespace()
        .find_map(|f| f.strip_prefix("status="))
        .and_then(|v| v.parse().ok())
}

/// Parses the uptime (seconds) from a begin or exit marker line.
pub fn parse_marker_uptime(line: &str) -> Option<f64> {
    line.split_whitespace()
        .find_map(|f| f.strip_prefix("uptime="))
        .and_then(|v| v.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_round_trips() {
        let job = Job {
            root: Some("hostroot".into()),
            mounts: vec![Mount {
                tag: "share0".into(),
                path: "/work/main".into(),
                read_only: false,
            }],
            tmpfs: vec!["/tmp".into()],
            cwd: Some("/work/main".into()),
            env: vec![("A".into(), "b=c d".into())],
        };
        assert_eq!(Job::parse(&job.render()).unwrap(), job);
    }

    #[test]
    fn bad_lines_name_the_line() {
        let e = Job::parse("cwd /x\nmount a b\n").unwrap_err();
        assert_eq!(e.line, 2);
        let e = Job::parse("tmpfs relative\n").unwrap_err();
        assert!(e.reason.contains("absolute"));
        assert!(Job::parse("bogus\n").is_err());
    }

    #[test]
    fn markers_parse() {
        assert_eq!(
            parse_exit_marker("KVM-HOST-EXIT status=137 uptime=1.5"),
            Some(137)
        );
        assert_eq!(parse_exit_marker("noise KVM-HOST-EXIT status=1"), None);
        assert_eq!(
            parse_marker_uptime("KVM-HOST-BEGIN uptime=0.47"),
            Some(0.47)
        );
    }
}
