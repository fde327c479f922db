#!/bin/sh
# Runs inside a KVM test host (see bench/density.sh): idle sandboxes started one after
# the other (`ctr run -d … sleep 100000`), each start timed, with the test host's
# MemAvailable after it. Stops when a start takes 2x the median of the first three, when
# MemAvailable falls below one sandbox's share + MARGIN_MIB, at MAX, or when a start
# fails; then starts as many runc containers the same way as the baseline. Prints each
# start and a summary; writes out/bench/density-<arch>.json. POSIX sh (busybox on riscv64).
# Environment: MEM (guest MiB, default 128), MAX (default 40), MARGIN_MIB (default 256).
set -eu
arch="$1"
mem="${MEM:-128}"; max="${MAX:-40}"; margin="${MARGIN_MIB:-256}"
root="$(cd "$(dirname "$0")/.." && pwd)"
out="$root/out/$arch"
if [ "$arch" = riscv64 ]; then kernel="$out/Image"; else kernel="$out/vmlinux"; fi
work="$(mktemp -d /tmp/kata-density.XXXXXX)"
PATH="$out:$PATH"; export PATH
tag="bench density $arch"

. "$root/bench/containerd-lib.sh"
write_kata_config
grep -q "^default_memory = $mem\$" "$work/configuration.toml" || { echo "$tag: could not set default_memory"; exit 1; }

start_private_containerd
: > "$work/ids"

# Every container started here goes: killed, deleted (which stops each VM), removed.
cleanup() {
  ids=$(cat "$work/ids" 2>/dev/null || true)
  for id in $ids; do $ctr task kill -s KILL "$id" >/dev/null 2>&1 || true; done
  j=0
  while [ $j -lt 300 ] && $ctr task ls 2>/dev/null | awk '$3 == "RUNNING" {f = 1} END {exit !f}'; do
    sleep 0.2; j=$((j + 1))
  done
  for id in $ids; do
    $ctr task rm -f "$id" >/dev/null 2>&1 || true
    $ctr containers rm "$id" >/dev/null 2>&1 || true
  done
  j=0; while [ $j -lt 300 ] && [ -n "$(shims)" ]; do sleep 0.2; j=$((j + 1)); done
  echo "$tag: cleaned up: $($ctr containers ls -q 2>/dev/null | wc -l) containers and $(shims | wc -l) shims left"
  kill $cpid 2>/dev/null || true; wait $cpid 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
i=0; while [ ! -S "$work/c.sock" ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i + 1)); done
$ctr images import --all-platforms "$root/out/images/busybox-$arch.tar" >/dev/null
image=docker.io/library/busybox:latest

# Starts one container: runtime id [flags]; prints its start in ms, or fails.
start_one() {
  rt="$1"; id="$2"; shift 2
  echo "$id" >> "$work/ids"
  t0=$(now_ms)
  $ctr run -d --runtime "$rt" "$@" "$image" "$id" sleep 100000 >"$work/run.out" 2>&1 || return 1
  echo $(( $(now_ms) - t0 ))
}

total_kib=$(awk '/^MemTotal:/ {print $2}' /proc/meminfo)
a0=$(avail_kib)
echo "$tag: test host $(mib "$total_kib") MiB RAM, MemAvailable $(mib "$a0") MiB; sandboxes of $mem MiB, at most $max"
n=0; cut=""; first3=""; base=0; : > "$work/kata"
while [ $n -lt "$max" ]; do
  a=$(avail_kib)
  if [ $n -gt 0 ]; then
    share=$(( (a0 - a) / n ))
    if [ "$a" -lt $((share + margin * 1024)) ]; then
      cut="memory: MemAvailable $(mib "$a") MiB < one sandbox ($(mib "$share") MiB) + margin $margin MiB"; break
    fi
  fi
  if ! ms=$(start_one io.containerd.kata.v2 "d$((n + 1))"); then
    cut="sandbox $((n + 1)) did not start: $(head -c 300 "$work/run.out" | tr '\n"\\' '   ')"; break
  fi
  n=$((n + 1))
  echo "$n $ms $(avail_kib)" >> "$work/kata"
  echo "$tag: kata sandbox $n started in $ms ms; MemAvailable $(mib "$(avail_kib)") MiB"
  if [ $n -le 3 ]; then first3="$first3 $ms"; fi
  if [ $n -eq 3 ]; then base=$(echo "$first3" | tr ' ' '\n' | grep . | median); fi
  if [ $n -gt 3 ] && [ "$ms" -ge $((base * 2)) ]; then
    cut="latency: start $n took $ms ms, 2x the first three's median ($base ms)"; break
  fi
done
[ -n "$cut" ] || cut="MAX ($max) reached"
echo "$tag: stopped at $n kata sandboxes: $cut"
[ $n -gt 0 ] || exit 1
kata_first=$(head -n 3 "$work/kata" | awk '{print $2}' | median)
kata_last=$(tail -n 1 "$work/kata" | awk '{print $2}')
kata_per=$(( (a0 - $(tail -n 1 "$work/kata" | awk '{print $3}')) / n ))

# The baseline: as many runc containers, the same way.
probe_runc "$tag"
runc_first=0; runc_last=0; m=0
if [ "$runc_ok" = 1 ]; then
  r0=$(avail_kib); : > "$work/runc"
  while [ $m -lt $n ]; do
    ms=$(start_one io.containerd.runc.v2 "r$((m + 1))" $runc_flags) || { echo "$tag: runc container $((m + 1)) did not start"; break; }
    m=$((m + 1)); echo "$m $ms" >> "$work/runc"
  done
  runc_first=$(head -n 3 "$work/runc" | awk '{print $2}' | median)
  runc_last=$(tail -n 1 "$work/runc" | awk '{print $2}')
  echo "$tag: runc: $m containers; first three's median start $runc_first ms, the last $runc_last ms; MemAvailable -$(mib $((r0 - $(avail_kib)))) MiB"
fi

awk -v a="$arch" -v m="$mem" -v n="$n" -v cut="$cut" -v kf="$kata_first" -v kl="$kata_last" -v kp="$kata_per" \
    -v rm="$m" -v rf="$runc_first" -v rl="$runc_last" -v t="$total_kib" -v json="$work/result.json" '
  BEGIN {
    kg = (kf > 0) ? kl / kf : 0; rg = (rf > 0) ? rl / rf : 0
    printf "bench density %s: %d kata sandboxes of %d MiB (%s); start: first three median %d ms, the last %d ms (%.2fx); %.1f MiB of MemAvailable each\n", a, n, m, cut, kf, kl, kg, kp / 1024
    if (rm > 0) printf "bench density %s: runc, %d containers: first three median %d ms, the last %d ms (%.2fx); kata/runc at the last start: %.2f\n", a, rm, rf, rl, rg, (rl > 0) ? kl / rl : 0
    printf "{\"arch\": \"%s\", \"guest_memory_mib\": %d, \"test_host_memory_mib\": %.1f, \"sandboxes\": %d, \"stopped_by\": \"%s\", \"kata\": {\"first3_median_ms\": %d, \"last_ms\": %d, \"growth\": %.3f, \"mem_available_mib_per_sandbox\": %.1f}, \"runc\": {\"containers\": %d, \"first3_median_ms\": %d, \"last_ms\": %d, \"growth\": %.3f}}\n", a, m, t / 1024, n, cut, kf, kl, kg, kp / 1024, rm, rf, rl, rg > json
  }'
mkdir -p "$root/out/bench"
cp "$work/result.json" "$root/out/bench/density-$arch.json"
echo "$tag: wrote out/bench/density-$arch.json"
