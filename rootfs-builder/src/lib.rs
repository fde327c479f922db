//! Deterministic initrd builder: a cpio "newc" archive, optionally gzip-compressed.
//!
//! The same entries always give the same bytes: entries are written in path order,
//! with fixed timestamps, owners and inode numbers, and gzip carries no name or mtime.

pub mod cpio;

pub use cpio::{Archive, ArchiveError, Compression};
