//! Where the built artifacts live: `out/<arch>/` in the project root, filled by
//! `make kvm-artifacts` (symlinks into the cache for kernels, copies of binaries).

use std::path::{Path, PathBuf};

use crate::Arch;

/// The project root: `KATA_RV_ROOT`, or the workspace this crate was built in.
pub fn project_root() -> PathBuf {
    if let Some(root) = std::env::var_os("KATA_RV_ROOT") {
        return PathBuf::from(root);
    }
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let root = manifest.join("../..");
    root.canonicalize().unwrap_or(root)
}

/// The cache of slow artifacts (kernels, busybox): `KATA_RV_CACHE` or `~/.cache/kata-rv`.
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("KATA_RV_CACHE") {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
    PathBuf::from(home).join(".cache/kata-rv")
}

/// `out/<arch>` in the project root.
pub fn out_dir(arch: Arch) -> PathBuf {
    project_root().join("out").join(arch.name())
}

/// The guest kernel of `arch` as a VMM boots it: riscv64 `Image`, x86_64 `vmlinux`.
pub fn kernel(arch: Arch) -> PathBuf {
    match arch {
        Arch::Riscv64 => out_dir(arch).join("Image"),
        Arch::X86_64 => out_dir(arch).join("vmlinux"),
    }
}

/// The KVM test host's own kernel of `arch` (`make kvm-host-kernel`): the guest kernel's
/// configuration plus KVM, 9p and what containerd and CNI use, in `out/<arch>/kvm-host`.
pub fn l1_kernel(arch: Arch) -> PathBuf {
    let dir = out_dir(arch).join("kvm-host");
    match arch {
        Arch::Riscv64 => dir.join("Image"),
        Arch::X86_64 => dir.join("vmlinux"),
    }
}

/// A static binary of this project built for `arch`, as copied into `out/<arch>/`.
pub fn binary(arch: Arch, name: &str) -> PathBuf {
    out_dir(arch).join(name)
}

/// What booting an emulated L1 test host needs.
#[derive(Debug, Clone)]
pub struct L1Artifacts {
    /// The L1 kernel.
    pub kernel: PathBuf,
    /// The static `kvm-host-init`.
    pub init: PathBuf,
    /// A static busybox for the L1 shell (riscv64 only: x86_64 uses this machine's root).
    pub busybox: Option<PathBuf>,
}

/// An artifact that has not been built.
#[derive(Debug, thiserror::Error)]
#[error("{what} for {arch} is missing at {}: run `make kvm-artifacts ARCH={arch}` (or `make test`)", path.display())]
pub struct MissingArtifact {
    /// What the file is.
    pub what: &'static str,
    /// For which architecture.
    pub arch: Arch,
    /// Where it was expected.
    pub path: PathBuf,
}

/// Finds the L1 artifacts of `arch`, or names the first missing one.
pub fn l1(arch: Arch) -> Result<L1Artifacts, MissingArtifact> {
    let need = |what, path: PathBuf| {
        if path.is_file() {
            Ok(path)
        } else {
            Err(MissingArtifact { what, arch, path })
        }
    };
    Ok(L1Artifacts {
        kernel: need("the KVM test host kernel", l1_kernel(arch))?,
        init: need("kvm-host-init", binary(arch, "kvm-host-init"))?,
        busybox: match arch {
            Arch::Riscv64 => Some(need("busybox", binary(arch, "busybox"))?),
            Arch::X86_64 => None,
        },
    })
}
