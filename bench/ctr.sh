#!/usr/bin/env bash
# make bench BENCH=ctr: `ctr run --rm … true` with kata-rv against runc, and the host
# overhead of an idle sandbox, inside each KVM test host (natively where KVM is real).
# riscv64 has no runc here (it needs cgo + a cross-built libseccomp): figures are absolute.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
runs="${RUNS:-10}"
for arch in riscv64 x86_64; do
  "$root/target/release/kvm-host" --arch "$arch" --timeout 1800 -- "sh bench/ctr-inner.sh $arch $runs"
done
