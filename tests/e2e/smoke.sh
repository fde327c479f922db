#!/bin/bash
# Manual smoke: a private containerd + ctr run with the kata-rv shim (run inside a KVM test host).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
ARCH=$(uname -m)
SHIM=${SHIM:-$ROOT/target/debug/containerd-shim-kata-v2}
W=$(mktemp -d /tmp/e2e.XXXXXX)
KERNEL=$ROOT/out/$ARCH/$([ "$ARCH" = riscv64 ] && echo Image || echo vmlinux)
cat > $W/kata.toml <<EOT
[hypervisor.dragonball]
kernel = "$KERNEL"
initrd = "$ROOT/out/$ARCH/kata-containers-initrd.img"
default_memory = 256
[agent.kata]
[runtime]
enable_debug = true
EOT
cat > $W/config.toml <<EOT
version = 2
root = "$W/root"
state = "$W/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$W/containerd.sock"
[ttrpc]
  address = "$W/containerd.sock.ttrpc"
[debug]
  level = "debug"
EOT
KATA_CONF_FILE=$W/kata.toml containerd --config $W/config.toml > $W/containerd.log 2>&1 &
CPID=$!
trap 'kill $CPID; wait $CPID 2>/dev/null; tail -30 $W/containerd.log; rm -rf $W' EXIT
for i in $(seq 100); do [ -S $W/containerd.sock ] && break; sleep 0.1; done
CTR="ctr -a $W/containerd.sock"
$CTR images import --all-platforms $ROOT/out/images/busybox-$([ "$ARCH" = riscv64 ] && echo riscv64 || echo x86_64).tar
time $CTR run --rm --runtime $SHIM docker.io/library/busybox:latest t1 uname -a
