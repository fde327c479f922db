#!/usr/bin/env bash
# make bench BENCH=trace: where the time of a `ctr run --rm … true` goes, phase by phase,
# inside each KVM test host (natively where KVM is real): the shim's start-path trace
# (debug level) over RUNS runs, medians per phase, each marked host or guest work.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$root/bench/host-lib.sh"
runs="${RUNS:-10}"
for arch in ${ARCHES:-riscv64 x86_64}; do
  kvm_host --arch "$arch" --timeout 1800 -- "sh bench/trace-inner.sh $arch $runs"
done
