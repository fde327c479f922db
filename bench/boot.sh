#!/usr/bin/env bash
# make bench BENCH=boot: the dragonball boot benchmark inside the riscv64 KVM test host
# (natively where KVM is real). riscv64 figures are absolute: no other riscv64 VMM is
# packaged here; the side-by-side ratio against QEMU microvm arrives with x86_64.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="$root/out/riscv64"
runs="${RUNS:-10}"
"$root/target/release/kvm-host" --arch riscv64 --timeout 1800 -- \
  "$out/boot-bench --dragonball $out/dragonball --kernel $out/Image --initrd $out/test-initrd.cpio.gz --runs $runs --vcpus 1 --mem 128 && \
   $out/boot-bench --dragonball $out/dragonball --kernel $out/Image --initrd $out/test-initrd.cpio.gz --runs $runs --vcpus 2 --mem 256"
