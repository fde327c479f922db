#!/usr/bin/env bash
# make bench BENCH=fs: virtio-fs (inline and virtiofsd) against the host, inside the
# riscv64 KVM test host (natively where KVM is real).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="$root/out/riscv64"
"$root/target/release/kvm-host" --arch riscv64 --timeout 1800 -- \
  "FS_BENCH_MIB=${FS_BENCH_MIB:-256} $out/fs-bench --dragonball $out/dragonball --virtiofsd $out/virtiofsd --kernel $out/Image --initrd $out/test-initrd.cpio.gz --dir /tmp/fs-bench"
