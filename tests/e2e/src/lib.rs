//! End-to-end tests live in `tests/ctr.rs`, `tests/cri.rs` and `tests/sandbox_api.rs`
//! (feature `e2e`); this library holds what they share.

use std::path::{Path, PathBuf};

/// The directory of host cgroup `path` in the memory controller's hierarchy: under the
/// unified mount on cgroup v2, under v1's memory hierarchy otherwise.
pub fn memory_cgroup_dir(path: &str) -> PathBuf {
    let unified = Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
    let root = if unified {
        "/sys/fs/cgroup"
    } else {
        "/sys/fs/cgroup/memory"
    };
    Path::new(root).join(path.trim_start_matches('/'))
}
