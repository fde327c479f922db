#!/usr/bin/env bash
# make bench BENCH=density: how many idle kata-rv sandboxes (128 MiB guests,
# `ctr run -d … sleep`) one KVM test host holds, started one after the other, until a
# start takes twice the first ones (median of the first 3), the host's memory runs out,
# or MAX (default 40) is reached; then the same number of runc containers as the
# baseline, in the same invocation. JSON in out/bench/density-<arch>.json.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$root/bench/host-lib.sh"
for arch in ${ARCHES:-riscv64 x86_64}; do
  # kvm-host passes no environment through: settings go on the command line.
  kvm_host --arch "$arch" --timeout 3600 -- \
    "MEM=${MEM:-128} MAX=${MAX:-40} MARGIN_MIB=${MARGIN_MIB:-256} sh bench/density-inner.sh $arch"
done
