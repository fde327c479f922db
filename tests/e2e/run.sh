#!/bin/sh
# `make run`: inside a KVM test host (or natively on real KVM), start a private containerd
# (config and state in a temp dir), import the busybox image, and run
# `ctr run --rm --runtime io.containerd.kata.v2 … uname -a` in a kata-rv microVM. The shim
# is found by name on PATH (out/<arch>); everything is stopped and removed afterwards.
# POSIX sh: the riscv64 test host has busybox only.
set -eu
arch="${1:-$(uname -m)}"
root="$(cd "$(dirname "$0")/../.." && pwd)"
out="$root/out/$arch"
if [ "$arch" = riscv64 ]; then kernel="$out/Image"; else kernel="$out/vmlinux"; fi
work="$(mktemp -d /tmp/kata-run.XXXXXX)"
PATH="$out:$PATH"
export PATH

sed -e "s|@PREFIX@/share/kata-containers/[A-Za-z]*-dragonball|$kernel|" \
    -e "s|@PREFIX@/share/kata-containers/kata-containers-initrd.img|$out/kata-containers-initrd.img|" \
    -e "s|@PREFIX@/libexec/kata-rv/virtiofsd|$out/virtiofsd|" \
    "$root/configuration/configuration-dragonball-$arch.toml" > "$work/configuration.toml"
cat > "$work/containerd.toml" <<EOT
version = 2
root = "$work/root"
state = "$work/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$work/containerd.sock"
[ttrpc]
  address = "$work/containerd.sock.ttrpc"
EOT
KATA_CONF_FILE="$work/configuration.toml" containerd --config "$work/containerd.toml" >"$work/containerd.log" 2>&1 &
containerd_pid=$!
cleanup() {
  kill "$containerd_pid" 2>/dev/null || true
  wait "$containerd_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
i=0
while [ ! -S "$work/containerd.sock" ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i + 1)); done
ctr="ctr -a $work/containerd.sock"
$ctr images import --all-platforms "$root/out/images/busybox-$arch.tar" >/dev/null
echo "+ ctr run --rm --runtime io.containerd.kata.v2 docker.io/library/busybox:latest kata-run uname -a"
if ! $ctr run --rm --runtime io.containerd.kata.v2 docker.io/library/busybox:latest kata-run uname -a; then
  echo "ctr run failed; containerd log:" >&2
  tail -40 "$work/containerd.log" >&2
  exit 1
fi
