//! Mount option strings (`ro,nosuid,mode=755`) → `mount(2)` flags and data.

use nix::mount::MsFlags;

/// What one list of OCI/fstab-style mount options means to `mount(2)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParsedOptions {
    /// Flags for the initial mount.
    pub flags: MsFlags,
    /// Propagation changes to apply after mounting (`rprivate`, `slave`, ...).
    pub propagation: MsFlags,
    /// Filesystem-specific options, comma-joined.
    pub data: String,
}

impl ParsedOptions {
    /// Whether this is a bind mount.
    pub fn is_bind(&self) -> bool {
        self.flags.contains(MsFlags::MS_BIND)
    }
}

/// Parses `options`; anything that is not a known flag is passed on as data.
pub fn parse(options: &[String]) -> ParsedOptions {
    let mut flags = MsFlags::empty();
    let mut propagation = MsFlags::empty();
    let mut data = Vec::new();
    for option in options {
        let (set, clear) = match option.as_str() {
            "defaults" | "rw" => (MsFlags::empty(), MsFlags::MS_RDONLY),
            "ro" => (MsFlags::MS_RDONLY, MsFlags::empty()),
            "nosuid" => (MsFlags::MS_NOSUID, MsFlags::empty()),
            "suid" => (MsFlags::empty(), MsFlags::MS_NOSUID),
            "nodev" => (MsFlags::MS_NODEV, MsFlags::empty()),
            "dev" => (MsFlags::empty(), MsFlags::MS_NODEV),
            "noexec" => (MsFlags::MS_NOEXEC, MsFlags::empty()),
            "exec" => (MsFlags::empty(), MsFlags::MS_NOEXEC),
            "sync" => (MsFlags::MS_SYNCHRONOUS, MsFlags::empty()),
            "async" => (MsFlags::empty(), MsFlags::MS_SYNCHRONOUS),
            "noatime" => (MsFlags::MS_NOATIME, MsFlags::empty()),
            "atime" => (MsFlags::empty(), MsFlags::MS_NOATIME),
            "nodiratime" => (MsFlags::MS_NODIRATIME, MsFlags::empty()),
            "relatime" => (MsFlags::MS_RELATIME, MsFlags::empty()),
            "strictatime" => (MsFlags::MS_STRICTATIME, MsFlags::empty()),
            "mand" => (MsFlags::MS_MANDLOCK, MsFlags::empty()),
            "remount" => (MsFlags::MS_REMOUNT, MsFlags::empty()),
            "bind" => (MsFlags::MS_BIND, MsFlags::empty()),
            "rbind" => (MsFlags::MS_BIND | MsFlags::MS_REC, MsFlags::empty()),
            "private" | "rprivate" | "shared" | "rshared" | "slave" | "rslave" | "unbindable"
            | "runbindable" => {
                propagation |= propagation_flags(option).unwrap_or(MsFlags::empty());
                continue;
            }
            other => {
                data.push(other.to_string());
                continue;
            }
        };
        flags.insert(set);
        flags.remove(clear);
    }
    ParsedOptions {
        flags,
        propagation,
        data: data.join(","),
    }
}

/// The propagation flags of `rprivate`, `slave`, ...; `None` for anything else.
pub fn propagation_flags(name: &str) -> Option<MsFlags> {
    let (base, recursive) = match name.strip_prefix('r') {
        Some(rest) if rest != "o" => (rest, true),
        _ => (name, false),
    };
    let flag = match base {
        "private" => MsFlags::MS_PRIVATE,
        "shared" => MsFlags::MS_SHARED,
        "slave" => MsFlags::MS_SLAVE,
        "unbindable" => MsFlags::MS_UNBINDABLE,
        _ => return None,
    };
    Some(if recursive {
        flag | MsFlags::MS_REC
    } else {
        flag
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn flags_and_data_are_separated() {
        let parsed = parse(&strings(&[
            "nosuid",
            "noexec",
            "mode=755",
            "size=65536k",
            "ro",
        ]));
        assert_eq!(
            parsed.flags,
            MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC | MsFlags::MS_RDONLY
        );
        assert_eq!(parsed.data, "mode=755,size=65536k");
        assert!(!parsed.is_bind());
    }

    #[test]
    fn later_options_override_earlier_ones() {
        assert_eq!(parse(&strings(&["ro", "rw"])).flags, MsFlags::empty());
        let bind = parse(&strings(&["rbind", "rprivate"]));
        assert!(bind.is_bind());
        assert!(bind.flags.contains(MsFlags::MS_REC));
        assert_eq!(bind.propagation, MsFlags::MS_PRIVATE | MsFlags::MS_REC);
    }

    #[test]
    fn propagation_names() {
        assert_eq!(propagation_flags("slave"), Some(MsFlags::MS_SLAVE));
        assert_eq!(
            propagation_flags("rshared"),
            Some(MsFlags::MS_SHARED | MsFlags::MS_REC)
        );
        assert_eq!(propagation_flags("ro"), None);
        assert_eq!(propagation_flags("bogus"), None);
    }
}
