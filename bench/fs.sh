#!/usr/bin/env bash
# make bench BENCH=fs: virtio-fs (inline and virtiofsd) against the host, inside each KVM
# test host (natively where KVM is real); ARCHES narrows the arches.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$root/bench/host-lib.sh"
declare -A kernel=([riscv64]=Image [x86_64]=vmlinux)
for arch in ${ARCHES:-riscv64 x86_64}; do
  out="$root/out/$arch"
  kvm_host --arch "$arch" --timeout 1800 -- \
    "FS_BENCH_MIB=${FS_BENCH_MIB:-256} $out/fs-bench --dragonball $out/dragonball --virtiofsd $out/virtiofsd --kernel $out/${kernel[$arch]} --initrd $out/test-initrd.cpio.gz --dir /tmp/fs-bench"
done
