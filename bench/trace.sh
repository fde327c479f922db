#!/usr/bin/env bash
# make bench BENCH=trace: where the time of a `ctr run --rm … true` goes, phase by phase,
# inside each KVM test host (natively where KVM is real): the shim's start-path trace
# (debug level) over RUNS runs, medians per phase, each marked host or guest work.
# TRACE_B="key = value" (a [hypervisor.dragonball] line), TRACE_B_KERNEL, TRACE_B_SHIM or
# TRACE_B_THP (the test host's huge page mode) add a variant B whose runs alternate with A's (see bench/trace-inner.sh).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$root/bench/host-lib.sh"
runs="${RUNS:-10}"
for arch in ${ARCHES:-riscv64 x86_64}; do
  # kvm-host passes no environment through: the variants go on the command line.
  kvm_host --arch "$arch" --timeout 3600 -- \
    "TRACE_KERNEL='${TRACE_KERNEL:-}' TRACE_SHIM='${TRACE_SHIM:-}' TRACE_B='${TRACE_B:-}' \
     TRACE_B_KERNEL='${TRACE_B_KERNEL:-}' TRACE_B_SHIM='${TRACE_B_SHIM:-}' \
     TRACE_B_THP='${TRACE_B_THP:-}' sh bench/trace-inner.sh $arch $runs"
done
