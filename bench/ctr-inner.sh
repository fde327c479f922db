#!/bin/sh
# Runs inside a KVM test host (see bench/ctr.sh): `ctr run --rm … true` end to end with
# the kata-rv runtime and, where a runc exists, with runc, alternating; prints medians and
# the ratio. Then the host overhead of one idle sandbox: the shim's PSS without the guest
# RAM mapping (memfd "dragonball-guest-ram"), and the guest RAM it has touched.
# POSIX sh: the riscv64 test host has busybox only.
set -eu
arch="$1"; runs="${2:-10}"
root="$(cd "$(dirname "$0")/.." && pwd)"
out="$root/out/$arch"
if [ "$arch" = riscv64 ]; then kernel="$out/Image"; else kernel="$out/vmlinux"; fi
work="$(mktemp -d /tmp/kata-bench.XXXXXX)"
PATH="$out:$PATH"; export PATH
sed -e "s|@PREFIX@/share/kata-containers/[A-Za-z]*-dragonball|$kernel|" \
    -e "s|@PREFIX@/share/kata-containers/kata-containers-initrd.img|$out/kata-containers-initrd.img|" \
    "$root/configuration/configuration-dragonball-$arch.toml" > "$work/configuration.toml"
. "$root/bench/containerd-lib.sh"
start_private_containerd
trap 'kill $cpid 2>/dev/null; wait $cpid 2>/dev/null; rm -rf "$work"' EXIT
i=0; while [ ! -S "$work/c.sock" ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i + 1)); done
$ctr images import --all-platforms "$root/out/images/busybox-$arch.tar" >/dev/null
image=docker.io/library/busybox:latest

now_ms() { awk '{ printf "%d\n", $1 * 1000 }' /proc/uptime; }
time_run() { # runtime id [ctr run flags]
  start=$(now_ms)
  $ctr run --rm ${3:-} --runtime "$1" "$image" "$2" true >/dev/null
  end=$(now_ms)
  echo $((end - start))
}
median() { sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }

probe_runc "bench ctr $arch"
: > "$work/kata.ms"; : > "$work/runc.ms"
i=1
while [ $i -le "$runs" ]; do
  time_run io.containerd.kata.v2 "k$i" >> "$work/kata.ms"
  if [ $runc_ok = 1 ]; then time_run io.containerd.runc.v2 "r$i" "$runc_flags" >> "$work/runc.ms"; fi
  i=$((i + 1))
done
kata=$(median < "$work/kata.ms")
echo "bench ctr $arch: kata-rv ctr run --rm true: median ${kata} ms over $runs runs ($(tr '\n' ' ' < "$work/kata.ms"))"
if [ $runc_ok = 1 ]; then
  runc=$(median < "$work/runc.ms")
  echo "bench ctr $arch: runc    ctr run --rm true: median ${runc} ms over $runs runs ($(tr '\n' ' ' < "$work/runc.ms"))"
  awk -v k="$kata" -v r="$runc" -v a="$arch" 'BEGIN {printf "bench ctr %s: ratio kata-rv/runc = %.2f\n", a, k / r}'
else
  echo "bench ctr $arch: no runc in this test host: no baseline"
fi

# Host overhead of one idle sandbox.
$ctr run -d --runtime io.containerd.kata.v2 "$image" idle sleep 100000 >/dev/null
sleep 3
pid=""
for p in /proc/[0-9]*; do
  if tr '\0' ' ' < "$p/cmdline" 2>/dev/null | grep -q "containerd-shim-kata-v2 .*-id idle"; then pid=${p#/proc/}; fi
done
awk '
  /^[0-9a-f]+-[0-9a-f]+ / { guest = ($0 ~ /dragonball-guest-ram/) }
  /^Pss:/ { if (guest) g += $2; else o += $2 }
  END { printf "bench ctr: idle sandbox host overhead: shim PSS without guest RAM %.1f MiB; guest RAM touched %.1f MiB\n", o / 1024, g / 1024 }
' "/proc/$pid/smaps"
$ctr task kill -s KILL idle >/dev/null; sleep 2
$ctr task rm idle >/dev/null 2>&1 || true
$ctr containers rm idle >/dev/null 2>&1 || true
