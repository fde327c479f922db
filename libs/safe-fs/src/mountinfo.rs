//! `/proc/thread-self/mountinfo`: the mount points of this mount namespace.

use std::path::PathBuf;

/// One line of mountinfo, reduced to what cleanup needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MountPoint {
    /// The mount id (field 1).
    pub id: u64,
    /// Where it is mounted (field 5), unescaped.
    pub path: PathBuf,
}

/// Undoes the kernel's escaping of mountinfo paths: `\ooo` (three octal digits) stands for
/// that byte (space, tab, newline and backslash are written this way).
pub fn unescape(field: &str) -> PathBuf {
    use std::os::unix::ffi::OsStringExt;
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes.get(i + 1..i + 4).filter(|d| {
            bytes[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)) && d[0] <= b'3'
        });
        match octal {
            Some(d) => {
                out.push((d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    PathBuf::from(std::ffi::OsString::from_vec(out))
}

/// Parses mountinfo text; malformed lines are skipped.
pub fn parse(text: &str) -> Vec<MountPoint> {
    text.lines()
        .filter_map(|line| {
            let mut fields = line.split(' ');
            let id = fields.next()?.parse().ok()?;
            let path = fields.nth(3)?;
            Some(MountPoint {
                id,
                path: unescape(path),
            })
        })
        .collect()
}

/// The mount points of the calling thread's mount namespace (`/proc/thread-self`: a
/// thread may have unshared its own).
pub fn mount_points() -> std::io::Result<Vec<MountPoint>> {
    Ok(parse(&std::fs::read_to_string(
        "/proc/thread-self/mountinfo",
    )?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_escaped_byte_is_restored() {
        assert_eq!(
            unescape(r"/a\040b\011c\012d\134e"),
            PathBuf::from("/a b\tc\nd\\e")
        );
        // Not an escape: left as it is.
        assert_eq!(unescape(r"/x\9y\"), PathBuf::from(r"/x\9y\"));
        assert_eq!(unescape(r"/x\12"), PathBuf::from(r"/x\12"));
    }

    #[test]
    fn lines_give_id_and_path() {
        let text = "36 35 98:0 /mnt1 /mnt\\040two rw,noatime master:1 - ext3 /dev/root rw\n\
                    bad line\n\
                    40 36 0:5 / /run rw - tmpfs tmpfs rw\n";
        assert_eq!(
            parse(text),
            vec![
                MountPoint {
                    id: 36,
                    path: PathBuf::from("/mnt two")
                },
                MountPoint {
                    id: 40,
                    path: PathBuf::from("/run")
                },
            ]
        );
    }
}
