#!/bin/sh
# Runs inside a KVM test host (see bench/initcalls.sh). POSIX sh and busybox tools: the
# riscv64 test host has nothing else.
set -eu
arch="$1"; runs="${RUNS:-3}"; top="${TOP:-25}"
root="$(cd "$(dirname "$0")/.." && pwd)"
out="$root/out/$arch"
if [ "$arch" = riscv64 ]; then kernel="$out/Image"; platform=""; else kernel="$out/vmlinux"; platform="reboot=k pci=off"; fi
thp=""; [ "${THP:-0}" = 1 ] && thp="--thp"
initrd="${INITRD:-}"; [ -n "$initrd" ] || initrd="$out/test-initrd.cpio.gz"
vmm="${VMM:-}"; [ -n "$vmm" ] || vmm="$out/dragonball"
work="$(mktemp -d /tmp/kata-initcalls.XXXXXX)"
trap 'rm -rf "$work"' EXIT
tag="bench initcalls $arch"
# The shim's command line (console, quiet, panic) with the platform's part, plus the probe.
cmdline="console=ttyS0 quiet panic=-1 $platform initcall_debug test_init.mode=dmesg"
i=1
while [ $i -le "$runs" ]; do
  if ! "$vmm" --kernel "$kernel" --initrd "$initrd" --vcpus 1 --mem 128 \
      $thp --cmdline "$cmdline" --console "file:$work/console.$i" >"$work/vmm.$i" 2>&1; then
    echo "$tag: run $i failed: $(tail -c 600 "$work/vmm.$i")"; exit 1
  fi
  # "usecs name" per initcall, and the kernel's time at /init.
  sed -n 's/^\[ *\([0-9.]*\)\] initcall \([^ ]*\) returned .* after \([0-9]*\) usecs.*/\3 \2/p' "$work/console.$i" \
    | sed 's/+0x[0-9a-f]*\/0x[0-9a-f]*//' > "$work/calls.$i"
  [ -s "$work/calls.$i" ] || { echo "$tag: run $i logged no initcalls: $(tail -c 600 "$work/console.$i")"; exit 1; }
  sed -n 's/^\[ *\([0-9.]*\)\] Run \/init as init process.*/\1/p' "$work/console.$i" | head -n 1 > "$work/init.$i"
  [ -s "$work/init.$i" ] || { echo "$tag: run $i never reached /init"; exit 1; }
  i=$((i + 1))
done
median() { sort -n | awk '{ v[NR] = $1 } END { if (NR == 0) print 0; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
to_init=$(cat "$work"/init.* | median)
# Sum of all initcalls, per run, median.
total=$(for f in "$work"/calls.*; do awk '{ s += $1 } END { print s }' "$f"; done | median)
echo "$tag: kernel start to /init ${to_init} s (median of $runs, guest clock), initcalls in all $(awk -v t="$total" 'BEGIN { printf "%.1f", t / 1000 }') ms; $vmm ${thp:-no --thp}; initrd $initrd ($(wc -c < "$initrd") bytes)"
echo "$tag: slowest initcalls (median ms over the runs):"
cat "$work"/calls.* | awk '{ print $2 }' | sort -u > "$work/names"
while read -r name; do
  # Compared as strings: awk would read a hex address as a number and merge neighbours.
  m=$(for f in "$work"/calls.*; do awk -v n="$name" '($2 "") == (n "") { s += $1 } END { print s + 0 }' "$f"; done | median)
  echo "$m $name"
done < "$work/names" | sort -rn | head -n "$top" | awk '{ printf "  %9.1f ms  %s\n", $1 / 1000, $2 }'
mkdir -p "$root/out/bench"
cp "$work/console.$runs" "$root/out/bench/initcalls-$arch.log"
echo "$tag: wrote out/bench/initcalls-$arch.log"
