#!/usr/bin/env bash
# make bench BENCH=initcalls: where the guest kernel's boot goes, inside each KVM test host
# (natively where KVM is real). Boots the microVM kernel under dragonball RUNS times with
# the shim's command line plus initcall_debug, and test-init as /init in its dmesg mode
# (prints the kernel log, then powers off); prints, as medians over the runs, the time
# to /init and the slowest initcalls. The log of the last run is kept in
# out/bench/initcalls-<arch>.log. THP=1 boots with guest RAM in transparent huge pages;
# INITRD=PATH boots another test-init initrd (e.g. an uncompressed one), VMM=PATH another
# dragonball binary (before/after figures).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$root/bench/host-lib.sh"
runs="${RUNS:-3}"
top="${TOP:-25}"
for arch in ${ARCHES:-riscv64 x86_64}; do
  kvm_host --arch "$arch" --timeout 1800 -- \
    "RUNS=$runs TOP=$top THP=${THP:-0} INITRD='${INITRD:-}' VMM='${VMM:-}' sh bench/initcalls-inner.sh $arch"
done
