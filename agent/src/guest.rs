//! Guest-wide settings: hostname, DNS, clock, file copies and guest details.

use std::io::{Seek, SeekFrom, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path};

use kata_agent_protocols::agent::{AgentDetails, CopyFileRequest, GuestDetailsResponse};

use crate::error::{AgentError, AgentResult};

/// CopyFile may only write below this directory.
pub const COPY_ROOT: &str = "/run/kata-containers";

/// Sets the VM's hostname (empty: leave it).
pub fn set_hostname(name: &str) -> AgentResult<()> {
    if name.is_empty() {
        return Ok(());
    }
    if name.len() > 64 || name.contains(['/', '\0']) {
        return Err(AgentError::invalid(format!(
            "hostname '{}' is not valid",
            name.escape_debug()
        )));
    }
    nix::unistd::sethostname(name)
        .map_err(|e| AgentError::internal(format!("sethostname '{name}': {e}")))
}

/// Writes /etc/resolv.conf from `nameserver ...`-style lines (empty: leave it).
pub fn write_resolv_conf(lines: &[String]) -> AgentResult<()> {
    if lines.is_empty() {
        return Ok(());
    }
    if lines.iter().any(|l| l.contains('\n')) {
        return Err(AgentError::invalid("dns: entries must be single lines"));
    }
    let _ = std::fs::create_dir_all("/etc");
    std::fs::write("/etc/resolv.conf", lines.join("\n") + "\n")
        .map_err(|e| AgentError::internal(format!("writing /etc/resolv.conf: {e}")))
}

/// Sets the wall clock.
pub fn set_time(sec: i64, usec: i64) -> AgentResult<()> {
    if !(0..1_000_000).contains(&usec) || sec < 0 {
        return Err(AgentError::invalid(format!(
            "time {sec}.{usec:06} is out of range"
        )));
    }
    let spec = nix::sys::time::TimeSpec::new(sec, usec * 1000);
    nix::time::clock_settime(nix::time::ClockId::CLOCK_REALTIME, spec)
        .map_err(|e| AgentError::internal(format!("clock_settime: {e}")))
}

/// Writes one chunk of a file below /run/kata-containers.
pub fn copy_file(req: &CopyFileRequest) -> AgentResult<()> {
    copy_file_under(Path::new(COPY_ROOT), req)
}

fn copy_file_under(root: &Path, req: &CopyFileRequest) -> AgentResult<()> {
    let path = Path::new(&req.path);
    let inside = path.is_absolute()
        && path.starts_with(root)
        && path
            .components()
            .all(|c| !matches!(c, Component::ParentDir));
    if !inside {
        return Err(AgentError::invalid(format!(
            "CopyFile path '{}' is not below {}",
            req.path,
            root.display()
        )));
    }
    if req.offset < 0
        || req.file_size < 0
        || req.offset.saturating_add(req.data.len() as i64) > req.file_size
    {
        return Err(AgentError::invalid(format!(
            "CopyFile '{}': offset {} + {} bytes exceeds file_size {}",
            req.path,
            req.offset,
            req.data.len(),
            req.file_size
        )));
    }
    let io = |what: &str, e: std::io::Error| {
        AgentError::internal(format!("CopyFile '{}': {what}: {e}", req.path))
    };
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| io("creating the directory", e))?;
        if req.dir_mode != 0 {
            std::fs::set_permissions(
                parent,
                std::fs::Permissions::from_mode(req.dir_mode & 0o7777),
            )
            .map_err(|e| io("setting the directory mode", e))?;
        }
    }
    let mode = if req.file_mode == 0 {
        0o644
    } else {
        req.file_mode & 0o7777
    };
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(false)
        .mode(mode)
        .open(path)
        .map_err(|e| io("opening", e))?;
    file.seek(SeekFrom::Start(req.offset as u64))
        .map_err(|e| io("seeking", e))?;
    file.write_all(&req.data).map_err(|e| io("writing", e))?;
    file.set_len(req.file_size as u64)
        .map_err(|e| io("sizing", e))?;
    if req.uid >= 0 || req.gid >= 0 {
        let uid = (req.uid >= 0).then(|| nix::unistd::Uid::from_raw(req.uid as u32));
        let gid = (req.gid >= 0).then(|| nix::unistd::Gid::from_raw(req.gid as u32));
        nix::unistd::chown(path, uid, gid).map_err(|e| io("chown", e.into()))?;
    }
    Ok(())
}

/// What GetGuestDetails reports.
pub fn details(mem_block_size: bool) -> GuestDetailsResponse {
    let block_size = if mem_block_size {
        std::fs::read_to_string("/sys/devices/system/memory/block_size_bytes")
            .ok()
            .and_then(|text| u64::from_str_radix(text.trim(), 16).ok())
            .unwrap_or(0)
    } else {
        0
    };
    GuestDetailsResponse {
        mem_block_size_bytes: block_size,
        agent_details: Some(AgentDetails {
            version: crate::rpc::AGENT_VERSION.into(),
            init_daemon: std::process::id() == 1,
            storage_handlers: crate::storage::DRIVERS
                .iter()
                .map(|d| d.to_string())
                .collect(),
            supports_seccomp: true,
            ..Default::default()
        })
        .into(),
        support_mem_hotplug_probe: false,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_file_writes_chunks_and_refuses_paths_outside() {
        let root = std::env::temp_dir().join(format!("agent-copy-{}", std::process::id()));
        let target = root.join("sub/file");
        let mut req = CopyFileRequest {
            path: target.to_string_lossy().into_owned(),
            file_size: 6,
            data: b"abc".to_vec(),
            uid: -1,
            gid: -1,
            ..Default::default()
        };
        copy_file_under(&root, &req).unwrap();
        req.offset = 3;
        req.data = b"def".to_vec();
        copy_file_under(&root, &req).unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"abcdef");
        req.offset = 5;
        assert!(
            copy_file_under(&root, &req)
                .unwrap_err()
                .message
                .contains("exceeds file_size")
        );
        req.path = format!("{}/../escape", root.display());
        req.offset = 0;
        assert!(
            copy_file_under(&root, &req)
                .unwrap_err()
                .message
                .contains("is not below")
        );
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn bad_hostnames_and_times_are_refused() {
        assert!(set_hostname("a/b").is_err());
        assert!(set_hostname(&"x".repeat(65)).is_err());
        assert!(
            set_time(0, 1_000_000)
                .unwrap_err()
                .message
                .contains("out of range")
        );
        assert!(
            details(false)
                .agent_details
                .storage_handlers
                .contains(&"virtio-fs".to_string())
        );
    }
}
