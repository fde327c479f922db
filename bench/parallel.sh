#!/usr/bin/env bash
# make bench BENCH=parallel: sandbox start under load inside each KVM test host (natively
# where KVM is real): the time of one `ctr run -d … sleep` until its task is running
# (median over RUNS, default 5), then N (default 20) started at once and the time until
# all N run, and the ratio parallel/single; the same with runc as the baseline where runc
# works in the test host. 128 MiB guests. JSON in out/bench/parallel-<arch>.json.
# N is capped at what the test host's memory holds (kvm-host gives it 2048 MiB). The
# agent timeouts are raised to AGENT_TIMEOUT_S (default 600; 0 keeps the shipped 60 s,
# which N = 20 parallel starts exceed under TCG in both test hosts).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$root/bench/host-lib.sh"
n="${N:-20}"
runs="${RUNS:-5}"
for arch in ${ARCHES:-riscv64 x86_64}; do
  # kvm-host passes no environment through: settings go on the command line.
  kvm_host --arch "$arch" --timeout 3600 -- \
    "MEM=${MEM:-128} BATCHES=${BATCHES:-1} AGENT_TIMEOUT_S=${AGENT_TIMEOUT_S:-600} sh bench/parallel-inner.sh $arch $n $runs"
done
