//! Linux capability names (`CAP_SYS_ADMIN`) → bit masks, and applying the five sets.

/// Capability names in bit order (capability.h, Linux 6.12: 0..=40).
const NAMES: [&str; 41] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// The highest capability number this agent knows.
pub const LAST_CAP: u32 = NAMES.len() as u32 - 1;

/// The five capability sets of a process, as bit masks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CapSets {
    /// Capabilities kept in the bounding set; the rest are dropped.
    pub bounding: u64,
    /// Effective set.
    pub effective: u64,
    /// Permitted set.
    pub permitted: u64,
    /// Inheritable set.
    pub inheritable: u64,
    /// Ambient set.
    pub ambient: u64,
}

/// The bit mask of a list of names; an unknown name is an error naming it.
pub fn mask(names: &[String]) -> Result<u64, String> {
    let mut bits = 0u64;
    for name in names {
        let upper = name.to_ascii_uppercase();
        let full = if upper.starts_with("CAP_") {
            upper
        } else {
            format!("CAP_{upper}")
        };
        let index = NAMES
            .iter()
            .position(|known| *known == full)
            .ok_or_else(|| format!("unknown capability '{name}'"))?;
        bits |= 1 << index;
    }
    Ok(bits)
}

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

/// Drops everything outside `sets.bounding` from the bounding set. Allocation-free (it
/// runs in a forked child). Returns the failing errno.
pub fn drop_bounding(sets: &CapSets) -> Result<(), i32> {
    for cap in 0..=LAST_CAP {
        if sets.bounding & (1 << cap) == 0 {
            // SAFETY: prctl with integer arguments only.
            let rc = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) };
            if rc != 0 {
                let errno = nix::errno::Errno::last_raw();
                // A capability the running kernel does not know is already absent.
                if errno != libc::EINVAL {
                    return Err(errno);
                }
            }
        }
    }
    Ok(())
}

/// Sets effective, permitted and inheritable, then raises the ambient set.
/// Allocation-free. Returns the failing errno.
pub fn apply(sets: &CapSets) -> Result<(), i32> {
    let header = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let split = |mask: u64| [mask as u32, (mask >> 32) as u32];
    let (e, p, i) = (
        split(sets.effective),
        split(sets.permitted),
        split(sets.inheritable),
    );
    let data = [
        CapData {
            effective: e[0],
            permitted: p[0],
            inheritable: i[0],
        },
        CapData {
            effective: e[1],
            permitted: p[1],
            inheritable: i[1],
        },
    ];
    // SAFETY: header and data are valid for the v3 layout (one header, two data words).
    let rc = unsafe { libc::syscall(libc::SYS_capset, &header, data.as_ptr()) };
    if rc != 0 {
        return Err(nix::errno::Errno::last_raw());
    }
    for cap in 0..=LAST_CAP {
        if sets.ambient & (1 << cap) != 0 {
            // SAFETY: prctl with integer arguments only.
            let rc = unsafe {
                libc::prctl(
                    libc::PR_CAP_AMBIENT,
                    libc::PR_CAP_AMBIENT_RAISE as libc::c_ulong,
                    cap as libc::c_ulong,
                    0,
                    0,
                )
            };
            if rc != 0 {
                return Err(nix::errno::Errno::last_raw());
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_map_to_kernel_bits() {
        assert_eq!(mask(&["CAP_CHOWN".into()]).unwrap(), 1);
        assert_eq!(mask(&["CAP_SYS_ADMIN".into()]).unwrap(), 1 << 21);
        assert_eq!(
            mask(&["net_raw".into(), "CAP_KILL".into()]).unwrap(),
            (1 << 13) | (1 << 5)
        );
        assert_eq!(LAST_CAP, 40);
    }

    #[test]
    fn unknown_names_are_named() {
        assert_eq!(
            mask(&["CAP_FLY".into()]).unwrap_err(),
            "unknown capability 'CAP_FLY'"
        );
    }
}
