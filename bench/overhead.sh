#!/usr/bin/env bash
# make bench BENCH=overhead: the host memory of idle kata-rv sandboxes inside each KVM test
# host (natively where KVM is real): the PSS of 1 and of N (default 20) idle sandboxes
# (`ctr run -d … sleep`, 128 MiB guests), without and with the guest RAM mapping, per
# sandbox, and the ratio N sandboxes / (N × one); the CPU time one idle sandbox takes (ms
# per s, by thread: vCPUs are the guest). JSON in out/bench/overhead-<arch>.json.
# N is capped at what the test host's memory holds (kvm-host gives it 2048 MiB).
# HUGEPAGES=1 runs the sandboxes with enable_hugepages = true.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$root/bench/host-lib.sh"
n="${N:-20}"
for arch in ${ARCHES:-riscv64 x86_64}; do
  # kvm-host passes no environment through: settings go on the command line.
  kvm_host --arch "$arch" --timeout 3600 -- \
    "MEM=${MEM:-128} SHARED_FS=${SHARED_FS:-} IDLE_WINDOW=${IDLE_WINDOW:-10} HUGEPAGES=${HUGEPAGES:-0} sh bench/overhead-inner.sh $arch $n"
done
