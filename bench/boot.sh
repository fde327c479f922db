#!/usr/bin/env bash
# make bench BENCH=boot: the dragonball boot benchmark inside the riscv64 KVM test host
# (natively where KVM is real). riscv64 figures are absolute: no other riscv64 VMM is
# packaged here. x86_64 (inside the x86_64 test host) runs QEMU microvm with KVM on the
# same kernel/initrd/vCPUs/memory in alternating runs and prints the ratio.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$root/bench/host-lib.sh"
out="$root/out/riscv64"
runs="${RUNS:-10}"
# PARALLEL VMs are then started at once (dragonball, then QEMU on x86_64); 0 skips it.
parallel="${PARALLEL:-5}"
# THP=1: dragonball's guest RAM in transparent huge pages (QEMU advises them by default).
thp=""; [[ "${THP:-0}" == 1 ]] && thp="--thp"
kvm_host --arch riscv64 --timeout 1800 -- \
  "$out/boot-bench --dragonball $out/dragonball --kernel $out/Image --initrd $out/test-initrd.cpio.gz --runs $runs --vcpus 1 --mem 128 $thp && \
   $out/boot-bench --dragonball $out/dragonball --kernel $out/Image --initrd $out/test-initrd.cpio.gz --runs $runs --vcpus 2 --mem 256 $thp && \
   $out/boot-bench --dragonball $out/dragonball --kernel $out/Image --initrd $out/test-initrd.cpio.gz --runs 3 --vcpus 1 --mem 128 --parallel $parallel $thp"
x86="$root/out/x86_64"
qemu="$(command -v qemu-system-x86_64)"
# boot-bench kills a run that does not end within 90 s and counts it as failed.
kvm_host --arch x86_64 --timeout 1500 -- \
  "$x86/boot-bench --dragonball $x86/dragonball --kernel $x86/vmlinux --initrd $x86/test-initrd.cpio.gz --runs $runs --vcpus 1 --mem 128 --qemu $qemu --parallel $parallel $thp"
