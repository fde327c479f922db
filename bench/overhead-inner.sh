#!/bin/sh
# Runs inside a KVM test host (see bench/overhead.sh): the host memory of idle sandboxes.
# One sandbox `ctr run -d … sleep 100000` alone, then more started one after the other up
# to N; each time the PSS of every sandbox's processes (the shim, with Dragonball inside,
# and its virtiofsd if shared_fs = "virtio-fs") without the guest RAM mapping (memfd
# "dragonball-guest-ram") and with it (the guest RAM the guest has touched). Prints the
# per-sandbox averages and the ratio N sandboxes / (N × one); writes
# out/bench/overhead-<arch>.json. A sandbox is only started while the test host has
# room for it (MemAvailable above one sandbox's share + MARGIN_MIB); N is cut otherwise.
# POSIX sh: the riscv64 test host has busybox only.
# Environment: MEM (guest MiB, default 128), SHARED_FS (inline-virtio-fs | virtio-fs),
# SETTLE (seconds idle before measuring, default 5), MARGIN_MIB (default 256),
# IDLE_WINDOW (seconds over which one idle sandbox's CPU time is taken, default 10).
set -eu
arch="$1"; want="${2:-20}"
mem="${MEM:-128}"; settle="${SETTLE:-5}"; margin="${MARGIN_MIB:-256}"; window="${IDLE_WINDOW:-10}"
shared_fs="${SHARED_FS:-}"; [ -n "$shared_fs" ] || shared_fs=inline-virtio-fs
root="$(cd "$(dirname "$0")/.." && pwd)"
out="$root/out/$arch"
if [ "$arch" = riscv64 ]; then kernel="$out/Image"; else kernel="$out/vmlinux"; fi
work="$(mktemp -d /tmp/kata-overhead.XXXXXX)"
PATH="$out:$PATH"; export PATH
tag="bench overhead $arch"

# The configuration: our kernel and initrd, the guest size, the shared-fs backend.
. "$root/bench/containerd-lib.sh"
write_kata_config
if [ "$shared_fs" = virtio-fs ]; then
  # virtiofsd's namespace sandbox cannot pivot_root out of the test hosts' initramfs root.
  sed -i -e 's|^shared_fs = .*|shared_fs = "virtio-fs"|' \
      -e "s|^virtio_fs_daemon = .*|virtio_fs_daemon = \"$out/virtiofsd\"|" \
      -e 's|^virtio_fs_extra_args = .*|virtio_fs_extra_args = ["--sandbox=chroot"]|' "$work/configuration.toml"
fi
grep -q "^default_memory = $mem\$" "$work/configuration.toml" || { echo "$tag: could not set default_memory"; exit 1; }
grep -q "^shared_fs = \"$shared_fs\"\$" "$work/configuration.toml" || { echo "$tag: could not set shared_fs"; exit 1; }

start_private_containerd
: > "$work/ids"

# Every sandbox started here goes, whatever happens: tasks killed, then deleted (which
# stops each VM), containers removed, containerd stopped.
cleanup() {
  ids=$(cat "$work/ids" 2>/dev/null || true)
  for id in $ids; do $ctr task kill -s KILL "$id" >/dev/null 2>&1 || true; done
  j=0
  while [ $j -lt 150 ] && $ctr task ls 2>/dev/null | awk '$3 == "RUNNING" {f = 1} END {exit !f}'; do
    sleep 0.2; j=$((j + 1))
  done
  for id in $ids; do
    $ctr task rm -f "$id" >/dev/null 2>&1 || true
    $ctr containers rm "$id" >/dev/null 2>&1 || true
  done
  left=$($ctr containers ls -q 2>/dev/null | wc -l)
  j=0; while [ $j -lt 150 ] && [ -n "$(shims)" ]; do sleep 0.2; j=$((j + 1)); done
  echo "$tag: cleaned up: $left containers and $(shims | wc -l) shims left"
  kill $cpid 2>/dev/null || true; wait $cpid 2>/dev/null || true
  rm -rf "$work"
}

# "pid id" of every virtiofsd serving a sandbox
# (--shared-dir=/run/kata-containers/shared/sandboxes/<id>/shared).
virtiofsds() {
  for p in /proc/[0-9]*; do
    c=$(tr '\0' ' ' < "$p/cmdline" 2>/dev/null) || continue
    case "$c" in
      *virtiofsd\ *--shared-dir=/run/kata-containers/shared/sandboxes/*)
        echo "${p#/proc/} $(echo "$c" | sed -n 's|.*--shared-dir=/run/kata-containers/shared/sandboxes/\([^/ ]*\)/.*|\1|p')" ;;
    esac
  done
}
# KiB of PSS of a process "<without guest RAM> <guest RAM>".
pss() {
  awk '
    /^[0-9a-f]+-[0-9a-f]+ / { guest = ($0 ~ /dragonball-guest-ram/) }
    /^Pss:/ { if (guest) g += $2; else o += $2 }
    END { printf "%d %d\n", o, g }
  ' "/proc/$1/smaps" 2>/dev/null || echo "0 0"
}
# Sums over every sandbox: "<sandboxes> <KiB without guest RAM> <KiB guest RAM> <virtiofsds>".
measure() {
  { shims | sed 's/$/ shim/'; virtiofsds | sed 's/$/ vfsd/'; } > "$work/procs"
  s=0; v=0; o=0; g=0
  while read -r pid id kind; do
    set -- $(pss "$pid")
    o=$((o + $1)); g=$((g + $2))
    if [ "$kind" = shim ]; then s=$((s + 1)); else v=$((v + 1)); fi
  done < "$work/procs"
  echo "$s $o $g $v"
}
# "<tid> <thread name> <utime+stime ticks>" of every thread of the sandboxes' processes
# (the vCPU threads' time is the guest's own: KVM accounts it to them); spaces in a name
# become '_'.
thread_ticks() {
  while read -r pid id kind; do
    for t in /proc/"$pid"/task/[0-9]*; do
      st=$(cat "$t/stat" 2>/dev/null) || continue
      name=$(echo "${st#*(}" | sed 's/) [A-Za-z] .*//; s/ /_/g')
      # After "(comm) ", the state is field 1: utime and stime are fields 12 and 13.
      echo "${t##*/} $name $(echo "${st##*) }" | awk '{ print $12 + $13 }')"
    done
  done < "$work/procs"
}
# CPU milliseconds per second the sandboxes spend over `window` seconds, the total and
# by thread name ("<name>=<ms/s>"). A thread that appeared meanwhile counts from zero.
idle_cpu() {
  thread_ticks > "$work/ticks0"
  sleep "$window"
  thread_ticks > "$work/ticks1"
  # USER_HZ is 100 on every Linux arch: a tick is 10 ms.
  awk -v w="$window" '
    FNR == NR { before[$1] = $3; next }
    { d = $3 - (($1 in before) ? before[$1] : 0); by[$2] += d; total += d }
    END {
      printf "%.1f", total * 10 / w
      for (n in by) if (by[n] > 0) printf " %s=%.1f", n, by[n] * 10 / w
      printf "\n"
    }' "$work/ticks0" "$work/ticks1"
}
start() { # id
  echo "$1" >> "$work/ids"
  $ctr run -d --runtime io.containerd.kata.v2 "$image" "$1" sleep 100000 >"$work/run.out" 2>&1
}

trap cleanup EXIT
i=0; while [ ! -S "$work/c.sock" ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i + 1)); done
$ctr images import --all-platforms "$root/out/images/busybox-$arch.tar" >/dev/null
image=docker.io/library/busybox:latest
total_kib=$(awk '/^MemTotal:/ {print $2}' /proc/meminfo)
echo "$tag: test host $(mib "$total_kib") MiB RAM; $want sandboxes of $mem MiB asked ($((want * mem)) MiB of guest RAM nominal); shared_fs $shared_fs"

# One idle sandbox.
a0=$(avail_kib)
if ! start o1; then echo "$tag: the first sandbox did not start: $(head -c 600 "$work/run.out")"; exit 1; fi
sleep "$settle"
set -- $(measure); one_n=$1; one_o=$2; one_g=$3; one_v=$4
a1=$(avail_kib); one_drop=$((a0 - a1))
[ "$one_n" = 1 ] || { echo "$tag: expected 1 shim, found $one_n"; exit 1; }
set -- $(idle_cpu); one_cpu=$1; shift
echo "$tag: 1 idle sandbox: CPU $one_cpu ms per s over ${window} s (by thread, ms/s: $*)"
echo "$tag: 1 sandbox: PSS without guest RAM $(mib "$one_o") MiB, with guest RAM $(mib $((one_o + one_g))) MiB (guest RAM touched $(mib "$one_g") MiB; $one_v virtiofsd); test host MemAvailable -$(mib "$one_drop") MiB"

# More, one after the other, while they fit.
n=1; cut=""
while [ $n -lt "$want" ]; do
  a=$(avail_kib); need=$((one_drop + margin * 1024))
  if [ "$a" -lt "$need" ]; then
    cut="MemAvailable $(mib "$a") MiB < one sandbox ($(mib "$one_drop") MiB) + margin $margin MiB"
    break
  fi
  if ! start "o$((n + 1))"; then
    cut="sandbox $((n + 1)) did not start: $(head -c 300 "$work/run.out" | tr '\n"\\' '   ')"
    break
  fi
  n=$((n + 1))
done
if [ -n "$cut" ]; then
  echo "$tag: stopped at $n of $want sandboxes: $cut"
fi
sleep "$settle"
set -- $(measure); many_n=$1; many_o=$2; many_g=$3; many_v=$4
a2=$(avail_kib); many_drop=$((a0 - a2))
[ "$many_n" = "$n" ] || echo "$tag: warning: $n sandboxes started, $many_n shims found"
echo "$tag: $n sandboxes: PSS without guest RAM $(mib "$many_o") MiB, with guest RAM $(mib $((many_o + many_g))) MiB (guest RAM touched $(mib "$many_g") MiB; $many_v virtiofsd); test host MemAvailable -$(mib "$many_drop") MiB"

awk -v a="$arch" -v n="$n" -v w="$want" -v m="$mem" -v fs="$shared_fs" -v t="$total_kib" \
    -v o1="$one_o" -v g1="$one_g" -v d1="$one_drop" -v on="$many_o" -v gn="$many_g" -v dn="$many_drop" \
    -v json="$work/result.json" -v cut="$cut" -v cpu="$one_cpu" -v win="$window" '
  function f(x) { return sprintf("%.1f", x / 1024) }
  BEGIN {
    w1 = o1 + g1; wn = on + gn
    rx = (o1 > 0) ? on / (n * o1) : 0; rw = (w1 > 0) ? wn / (n * w1) : 0; rd = (d1 > 0) ? dn / (n * d1) : 0
    printf "bench overhead %s: per sandbox, 1 alone: %s MiB without guest RAM, %s MiB with\n", a, f(o1), f(w1)
    printf "bench overhead %s: per sandbox, %d together: %s MiB without guest RAM, %s MiB with\n", a, n, f(on / n), f(wn / n)
    printf "bench overhead %s: ratio %d sandboxes / (%d x one): %.2f without guest RAM, %.2f with (test host MemAvailable drop: %.2f)\n", a, n, n, rx, rw, rd
    printf "{\"arch\": \"%s\", \"guest_memory_mib\": %d, \"shared_fs\": \"%s\", \"test_host_memory_mib\": %s, \"sandboxes_asked\": %d, \"sandboxes\": %d, \"cut\": \"%s\", ", a, m, fs, f(t), w, n, cut > json
    printf "\"one\": {\"pss_mib_without_guest_ram\": %s, \"pss_mib_with_guest_ram\": %s, \"guest_ram_touched_mib\": %s, \"mem_available_drop_mib\": %s, \"idle_cpu_ms_per_s\": %s, \"idle_window_s\": %d}, ", f(o1), f(w1), f(g1), f(d1), cpu, win > json
    printf "\"many\": {\"pss_mib_without_guest_ram\": %s, \"pss_mib_with_guest_ram\": %s, \"guest_ram_touched_mib\": %s, \"mem_available_drop_mib\": %s, ", f(on), f(wn), f(gn), f(dn) > json
    printf "\"per_sandbox_pss_mib_without_guest_ram\": %s, \"per_sandbox_pss_mib_with_guest_ram\": %s}, ", f(on / n), f(wn / n) > json
    printf "\"ratio_without_guest_ram\": %.3f, \"ratio_with_guest_ram\": %.3f, \"ratio_mem_available_drop\": %.3f}\n", rx, rw, rd > json
  }'
mkdir -p "$root/out/bench"
cp "$work/result.json" "$root/out/bench/overhead-$arch.json"
echo "$tag: wrote out/bench/overhead-$arch.json"
