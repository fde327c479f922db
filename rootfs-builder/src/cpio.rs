//! In-memory archive of directories, files and symlinks, written as cpio newc.

use std::collections::BTreeMap;
use std::io::{self, Write};

use flate2::{Compression as GzLevel, GzBuilder};

const S_IFDIR: u32 = 0o040_000;
const S_IFREG: u32 = 0o100_000;
const S_IFLNK: u32 = 0o120_000;
const NEWC_MAGIC: &str = "070701";
const TRAILER: &str = "TRAILER!!!";

/// Errors from building an archive.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// The path is empty, absolute after normalisation, or contains `.`/`..`.
    #[error("invalid archive path '{0}': use a relative path without '.' or '..' components")]
    InvalidPath(String),
    /// Two entries want the same path with different kinds.
    #[error("archive path '{0}' is already used by a {1}")]
    Conflict(String, &'static str),
    /// A file is larger than cpio newc can describe (4 GiB).
    #[error("file '{0}' is too large for a cpio newc archive")]
    TooLarge(String),
    /// Writing the archive failed.
    #[error("writing the archive: {0}")]
    Io(#[from] io::Error),
}

/// How the archive bytes are compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// Plain cpio; the kernel accepts it as an initramfs as is.
    None,
    /// gzip at the best compression level.
    Gzip,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    Dir,
    File(Vec<u8>),
    Symlink(String),
}

impl Kind {
    fn name(&self) -> &'static str {
        match self {
            Kind::Dir => "directory",
            Kind::File(_) => "file",
            Kind::Symlink(_) => "symlink",
        }
    }
}

#[derive(Debug, Clone)]
struct Entry {
    mode: u32,
    kind: Kind,
}

/// A set of archive entries keyed by their relative path.
#[derive(Debug, Default, Clone)]
pub struct Archive {
    entries: BTreeMap<String, Entry>,
}

/// Normalises `path` (leading `/` allowed) into a relative archive path.
fn normalise(path: &str) -> Result<String, ArchiveError> {
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    if parts.is_empty() || parts.iter().any(|p| *p == "." || *p == "..") {
        return Err(ArchiveError::InvalidPath(path.to_string()));
    }
    Ok(parts.join("/"))
}

impl Archive {
    /// An empty archive.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a directory (and its missing parents) with permission bits `perm`.
    pub fn add_dir(&mut self, path: &str, perm: u32) -> Result<&mut Self, ArchiveError> {
        let path = normalise(path)?;
        self.insert(path, perm, Kind::Dir)?;
        Ok(self)
    }

    /// Adds a regular file with the given contents and permission bits.
    pub fn add_file(
        &mut self,
        path: &str,
        perm: u32,
        data: Vec<u8>,
    ) -> Result<&mut Self, ArchiveError> {
        let path = normalise(path)?;
        if u32::try_from(data.len()).is_err() {
            return Err(ArchiveError::TooLarge(path));
        }
        self.insert(path, perm, Kind::File(data))?;
        Ok(self)
    }

    /// Adds a symbolic link at `path` pointing to `target`.
    pub fn add_symlink(&mut self, path: &str, target: &str) -> Result<&mut Self, ArchiveError> {
        let path = normalise(path)?;
        if target.is_empty() {
            return Err(ArchiveError::InvalidPath(format!(
                "{path} -> (empty target)"
            )));
        }
        self.insert(path, 0o777, Kind::Symlink(target.to_string()))?;
        Ok(self)
    }

    /// Number of entries, directories included.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the archive has no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn insert(&mut self, path: String, perm: u32, kind: Kind) -> Result<(), ArchiveError> {
        if let Some((parent, _)) = path.rsplit_once('/') {
            self.insert(parent.to_string(), 0o755, Kind::Dir)?;
        }
        match self.entries.get(&path) {
            Some(old) if old.kind == Kind::Dir && kind == Kind::Dir => {
                // An explicit add_dir may refine the mode of an implied parent.
                if perm != 0o755 {
                    self.entries.insert(path, Entry { mode: perm, kind });
                }
                Ok(())
            }
            Some(old) => Err(ArchiveError::Conflict(path, old.kind.name())),
            None => {
                self.entries.insert(path, Entry { mode: perm, kind });
                Ok(())
            }
        }
    }

    /// Writes the archive as uncompressed cpio newc.
    pub fn write_cpio<W: Write>(&self, out: &mut W) -> Result<(), ArchiveError> {
        let mut written = 0usize;
        for (ino, (path, entry)) in self.entries.iter().enumerate() {
            let (type_bits, data): (u32, &[u8]) = match &entry.kind {
                Kind::Dir => (S_IFDIR, &[]),
                Kind::File(d) => (S_IFREG, d),
                Kind::Symlink(t) => (S_IFLNK, t.as_bytes()),
            };
            let nlink = if entry.kind == Kind::Dir { 2 } else { 1 };
            written += write_record(
                out,
                (ino + 1) as u32,
                type_bits | (entry.mode & 0o7777),
                nlink,
                path,
                data,
            )?;
        }
        written += write_record(out, 0, 0, 1, TRAILER, &[])?;
        // Pad the whole archive to 512 bytes, as GNU cpio does.
        let pad = (512 - written % 512) % 512;
        out.write_all(&vec![0u8; pad])?;
        Ok(())
    }

    /// The archive bytes with the chosen compression.
    pub fn to_bytes(&self, compression: Compression) -> Result<Vec<u8>, ArchiveError> {
        let mut cpio = Vec::new();
        self.write_cpio(&mut cpio)?;
        match compression {
            Compression::None => Ok(cpio),
            Compression::Gzip => {
                let mut gz = GzBuilder::new().mtime(0).write(Vec::new(), GzLevel::best());
                gz.write_all(&cpio)?;
                Ok(gz.finish()?)
            }
        }
    }
}

/// Writes one newc header + name + data, with 4-byte padding; returns the bytes written.
fn write_record<W: Write>(
    out: &mut W,
    ino: u32,
    mode: u32,
    nlink: u32,
    name: &str,
    data: &[u8],
) -> Result<usize, ArchiveError> {
    let namesize = name.len() + 1;
    let fields = [
        ino,
        mode,
        0,
        0,
        nlink,
        0,
        data.len() as u32,
        0,
        0,
        0,
        0,
        namesize as u32,
        0,
    ];
    let mut header = String::with_capacity(110);
    header.push_str(NEWC_MAGIC);
    for f in fields {
        header.push_str(&format!("{f:08x}"));
    }
    out.write_all(header.as_bytes())?;
    out.write_all(name.as_bytes())?;
    out.write_all(&[0])?;
    let head_len = 110 + namesize;
    let head_pad = (4 - head_len % 4) % 4;
    out.write_all(&[0u8; 3][..head_pad])?;
    out.write_all(data)?;
    let data_pad = (4 - data.len() % 4) % 4;
    out.write_all(&[0u8; 3][..data_pad])?;
    Ok(head_len + head_pad + data.len() + data_pad)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    /// Parses a newc archive into (name, mode, data) triples, checking alignment.
    fn parse(mut bytes: &[u8]) -> Vec<(String, u32, Vec<u8>)> {
        let mut out = Vec::new();
        let total = bytes.len();
        loop {
            let offset = total - bytes.len();
            assert_eq!(offset % 4, 0, "record not 4-byte aligned");
            assert_eq!(&bytes[..6], b"070701");
            let field = |i: usize| {
                let s = std::str::from_utf8(&bytes[6 + 8 * i..14 + 8 * i]).unwrap();
                u32::from_str_radix(s, 16).unwrap() as usize
            };
            let (mode, size, namesize) = (field(1) as u32, field(6), field(11));
            let name = std::str::from_utf8(&bytes[110..110 + namesize - 1])
                .unwrap()
                .to_string();
            let data_start = (110 + namesize).div_ceil(4) * 4;
            let data = bytes[data_start..data_start + size].to_vec();
            bytes = &bytes[(data_start + size).div_ceil(4) * 4..];
            if name == TRAILER {
                assert!(bytes.iter().all(|b| *b == 0));
                assert_eq!(total % 512, 0);
                return out;
            }
            out.push((name, mode, data));
        }
    }

    fn sample() -> Archive {
        let mut a = Archive::new();
        a.add_file("/init", 0o755, b"#!/bin/sh\n".to_vec()).unwrap();
        a.add_file("etc/conf/x", 0o644, b"abc".to_vec()).unwrap();
        a.add_symlink("/bin/sh", "busybox").unwrap();
        a.add_dir("tmp", 0o1777).unwrap();
        a
    }

    #[test]
    fn entries_are_sorted_with_parents_first() {
        let names: Vec<String> = parse(&sample().to_bytes(Compression::None).unwrap())
            .into_iter()
            .map(|e| e.0)
            .collect();
        assert_eq!(
            names,
            [
                "bin",
                "bin/sh",
                "etc",
                "etc/conf",
                "etc/conf/x",
                "init",
                "tmp"
            ]
        );
    }

    #[test]
    fn modes_and_contents_round_trip() {
        let entries = parse(&sample().to_bytes(Compression::None).unwrap());
        let get = |n: &str| entries.iter().find(|e| e.0 == n).unwrap().clone();
        assert_eq!(get("init").1, S_IFREG | 0o755);
        assert_eq!(get("init").2, b"#!/bin/sh\n");
        assert_eq!(get("bin/sh").1, S_IFLNK | 0o777);
        assert_eq!(get("bin/sh").2, b"busybox");
        assert_eq!(get("tmp").1, S_IFDIR | 0o1777);
        assert_eq!(get("etc").1, S_IFDIR | 0o755);
    }

    #[test]
    fn output_is_deterministic_and_gzip_decodes() {
        let a = sample().to_bytes(Compression::Gzip).unwrap();
        let b = sample().to_bytes(Compression::Gzip).unwrap();
        assert_eq!(a, b);
        let mut plain = Vec::new();
        flate2::read::GzDecoder::new(&a[..])
            .read_to_end(&mut plain)
            .unwrap();
        assert_eq!(plain, sample().to_bytes(Compression::None).unwrap());
    }

    #[test]
    fn bad_paths_and_conflicts_are_errors() {
        let mut a = Archive::new();
        assert!(matches!(
            a.add_file("../x", 0o644, vec![]),
            Err(ArchiveError::InvalidPath(_))
        ));
        assert!(matches!(
            a.add_dir("/", 0o755),
            Err(ArchiveError::InvalidPath(_))
        ));
        a.add_file("a/b", 0o644, vec![1]).unwrap();
        assert!(matches!(
            a.add_file("a/b/c", 0o644, vec![]),
            Err(ArchiveError::Conflict(p, "file")) if p == "a/b"
        ));
        assert!(matches!(
            a.add_symlink("a", "x"),
            Err(ArchiveError::Conflict(p, "directory")) if p == "a"
        ));
    }
}
