#!/usr/bin/env bash
# make bench BENCH=ctr: `ctr run --rm … true` with kata-rv against runc, and the host
# overhead of an idle sandbox, inside each KVM test host (natively where KVM is real).
# runc: Debian's on x86_64; on riscv64 cross-built from Debian's source (make runc).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$root/bench/host-lib.sh"
runs="${RUNS:-10}"
for arch in ${ARCHES:-riscv64 x86_64}; do
  kvm_host --arch "$arch" --timeout 1800 -- "sh bench/ctr-inner.sh $arch $runs"
done
