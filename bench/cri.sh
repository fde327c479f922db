#!/usr/bin/env bash
# make bench BENCH=cri: a Kubernetes pod's start through containerd's CRI, kata against
# runc, alternating, inside each KVM test host (natively where KVM is real):
# RunPodSandbox (CNI, and for kata the VM and its agent) and the time to its container
# running. The client is the CRI e2e's (tests/e2e/tests/cri.rs, `bench_pod_start`);
# medians, spread and ratios are printed and written to out/bench/cri-<arch>.json.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$root/bench/host-lib.sh"
runs="${RUNS:-10}"
cd "$root"
for arch in ${ARCHES:-riscv64 x86_64}; do
  make --no-print-directory kvm-artifacts initrd e2e-tests ARCH="$arch"
  kvm_host --arch "$arch" --timeout 3600 -- \
    "KATA_RV_BENCH_RUNS=$runs out/$arch/e2e/kata-rv-e2e-cri --ignored --exact bench_pod_start --nocapture --test-threads=1"
done
