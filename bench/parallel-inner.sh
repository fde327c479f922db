#!/bin/sh
# Runs inside a KVM test host (see bench/parallel.sh): how sandbox start scales.
# Single: `ctr run -d … sleep 100000` timed until it returns (containerd has then started
# the task) and checked RUNNING, median over RUNS, kata-rv and runc alternating. Parallel:
# N such commands started at once in the background, timed until the last returns, then
# all N checked RUNNING; median over BATCHES (default 1). Prints both, the ratio
# parallel/single and kata-rv/runc; writes out/bench/parallel-<arch>.json. N is cut to
# what the test host's memory holds (MemAvailable over one kata sandbox's share, with
# MARGIN_MIB to spare), and the output says so.
# POSIX sh: the riscv64 test host has busybox only.
# Environment: MEM (guest MiB, default 128), BATCHES, MARGIN_MIB (default 256),
# AGENT_TIMEOUT_S (default 600; 0 keeps the configuration's): the agent's
# reconnect_timeout_ms and create_container_timeout. Under TCG, N guests booting at once
# on the test host's one or two vCPUs take longer than the shipped 60 s to answer.
set -eu
arch="$1"; want="${2:-20}"; runs="${3:-5}"
mem="${MEM:-128}"; batches="${BATCHES:-1}"; margin="${MARGIN_MIB:-256}"
agent_s="${AGENT_TIMEOUT_S:-600}"
root="$(cd "$(dirname "$0")/.." && pwd)"
out="$root/out/$arch"
if [ "$arch" = riscv64 ]; then kernel="$out/Image"; else kernel="$out/vmlinux"; fi
work="$(mktemp -d /tmp/kata-parallel.XXXXXX)"
PATH="$out:$PATH"; export PATH
tag="bench parallel $arch"
sed -e "s|@PREFIX@/share/kata-containers/[A-Za-z]*-dragonball|$kernel|" \
    -e "s|@PREFIX@/share/kata-containers/kata-containers-initrd.img|$out/kata-containers-initrd.img|" \
    -e "s|^default_memory = .*|default_memory = $mem|" \
    "$root/configuration/configuration-dragonball-$arch.toml" > "$work/configuration.toml"
grep -q "^default_memory = $mem\$" "$work/configuration.toml" || { echo "$tag: could not set default_memory"; exit 1; }
if [ "$agent_s" != 0 ]; then
  sed -i -e "s|^reconnect_timeout_ms = .*|reconnect_timeout_ms = $((agent_s * 1000))|" \
      -e "s|^create_container_timeout = .*|create_container_timeout = $agent_s|" "$work/configuration.toml"
  grep -q "^reconnect_timeout_ms = $((agent_s * 1000))\$" "$work/configuration.toml" || { echo "$tag: could not set reconnect_timeout_ms"; exit 1; }
fi
agent_conf=$(awk -F' = ' '/^reconnect_timeout_ms|^create_container_timeout/ {printf "%s%s %s", sep, $1, $2; sep = ", "}' "$work/configuration.toml")
echo "$tag: agent timeouts: $agent_conf (AGENT_TIMEOUT_S=$agent_s; the shipped configuration has 60000 ms and 30 s)"
. "$root/bench/containerd-lib.sh"
start_private_containerd
: > "$work/ids"

# Removes the containers named in $work/ids (and forgets them): tasks killed, then
# deleted (which stops each VM), containers removed; waits until no kata shim is left.
remove_all() {
  ids=$(cat "$work/ids" 2>/dev/null || true)
  for id in $ids; do $ctr task kill -s KILL "$id" >/dev/null 2>&1 || true; done
  j=0
  while [ $j -lt 150 ] && [ "$(running | wc -l)" -gt 0 ]; do sleep 0.2; j=$((j + 1)); done
  for id in $ids; do
    $ctr task rm -f "$id" >/dev/null 2>&1 || true
    $ctr containers rm "$id" >/dev/null 2>&1 || true
  done
  j=0; while [ $j -lt 150 ] && [ "$(shims)" -gt 0 ]; do sleep 0.2; j=$((j + 1)); done
  : > "$work/ids"
}
cleanup() {
  remove_all
  echo "$tag: cleaned up: $($ctr containers ls -q 2>/dev/null | wc -l) containers and $(shims) kata shims left"
  kill $cpid 2>/dev/null || true; wait $cpid 2>/dev/null || true
  rm -rf "$work"
}
# Ids of the running tasks.
running() { $ctr task ls 2>/dev/null | awk '$3 == "RUNNING" {print $1}'; }
# How many kata shim servers run (a count, unlike containerd-lib.sh's list).
shims() {
  k=0
  for p in /proc/[0-9]*; do
    c=$(tr '\0' ' ' < "$p/cmdline" 2>/dev/null) || continue
    case "$c" in *containerd-shim-kata-v2\ *\ -socket\ *) k=$((k + 1)) ;; esac
  done
  echo $k
}
# `ctr run -d` of one sandbox: runtime id [flags]; appends "<status> <end ms>" to $work/<id>.end.
run_one() {
  echo "$2" >> "$work/ids"
  if $ctr run -d ${3:-} --runtime "$1" "$image" "$2" sleep 100000 >"$work/$2.log" 2>&1; then
    echo "0 $(now_ms)" > "$work/$2.end"
  else
    echo "$? $(now_ms)" > "$work/$2.end"
  fi
}
is_running() { running | grep -qx "$1"; }

trap cleanup EXIT
i=0; while [ ! -S "$work/c.sock" ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i + 1)); done
$ctr images import --all-platforms "$root/out/images/busybox-$arch.tar" >/dev/null
image=docker.io/library/busybox:latest

probe_runc "$tag"
kinds="kata"; if [ $runc_ok = 1 ]; then kinds="kata runc"; fi
runtime_of() { if [ "$1" = kata ]; then echo io.containerd.kata.v2; else echo io.containerd.runc.v2; fi; }
flags_of() { if [ "$1" = kata ]; then echo ""; else echo "$runc_flags"; fi; }

# Single starts, alternating; the first kata one also gives a sandbox's memory.
: > "$work/kata.single"; : > "$work/runc.single"; drop=0
r=1
while [ $r -le "$runs" ]; do
  for k in $kinds; do
    id="$k-s$r"
    a0=$(avail_kib)
    start=$(now_ms)
    run_one "$(runtime_of $k)" "$id" "$(flags_of $k)"
    read -r st end < "$work/$id.end"
    if [ "$st" != 0 ] || ! is_running "$id"; then
      echo "$tag: $k single start $r failed (status $st): $(head -c 600 "$work/$id.log")"; exit 1
    fi
    echo $((end - start)) >> "$work/$k.single"
    d=$((a0 - $(avail_kib)))
    if [ $k = kata ] && [ $d -gt $drop ]; then drop=$d; fi
    remove_all
  done
  r=$((r + 1))
done

# How many sandboxes the test host holds.
n=$want; avail=$(avail_kib)
fit=$(( (avail - margin * 1024) / (drop > 0 ? drop : 1) ))
total_kib=$(awk '/^MemTotal:/ {print $2}' /proc/meminfo)
echo "$tag: test host $(mib "$total_kib") MiB RAM, $(mib "$avail") MiB available; one idle kata sandbox of $mem MiB takes $(mib "$drop") MiB of it"
cut=""
if [ "$fit" -lt "$n" ]; then
  cut="cut from $want to $fit: $(mib "$avail") MiB available, $(mib "$drop") MiB per sandbox, $margin MiB margin"
  echo "$tag: N $cut"
  n=$fit
fi

# N at once.
: > "$work/kata.par"; : > "$work/runc.par"; failed=""
b=1
while [ $b -le "$batches" ]; do
  for k in $kinds; do
    rt=$(runtime_of $k); fl=$(flags_of $k)
    pids=""
    start=$(now_ms)
    i=1
    while [ $i -le "$n" ]; do
      run_one "$rt" "$k-p$b-$i" "$fl" &
      pids="$pids $!"
      i=$((i + 1))
    done
    for p in $pids; do wait "$p" || true; done
    all=$(now_ms)
    running > "$work/running"
    ok=0; bad=0; : > "$work/ends"
    i=1
    while [ $i -le "$n" ]; do
      id="$k-p$b-$i"
      read -r st end < "$work/$id.end" || { st=x; end=$all; }
      if [ "$st" = 0 ] && grep -qx "$id" "$work/running"; then
        ok=$((ok + 1)); echo $((end - start)) >> "$work/ends"
      else
        bad=$((bad + 1))
        [ -n "$failed" ] || failed="$id: $(head -c 300 "$work/$id.log" | tr '\n"\\' '   ')"
      fi
      i=$((i + 1))
    done
    last=$(sort -n "$work/ends" | tail -n 1); first=$(sort -n "$work/ends" | head -n 1)
    echo "$tag: $k batch $b: $ok of $n running after $((all - start)) ms (first ${first:-none} ms, median $(median < "$work/ends") ms, last ${last:-none} ms)"
    if [ $bad -gt 0 ]; then echo "$tag: $k batch $b: $bad failed; first: $failed"; fi
    if [ $ok = "$n" ]; then echo "$last" >> "$work/$k.par"; fi
    remove_all
  done
  b=$((b + 1))
done

: > "$work/result.json"
printf '{"arch": "%s", "guest_memory_mib": %d, "agent_timeouts": "%s", "runs": %d, "batches": %d, "n_asked": %d, "n": %d, "cut": "%s"' \
  "$arch" "$mem" "$agent_conf" "$runs" "$batches" "$want" "$n" "$cut" >> "$work/result.json"
for k in $kinds; do
  single=$(median < "$work/$k.single")
  smin=$(sort -n "$work/$k.single" | head -n 1); smax=$(sort -n "$work/$k.single" | tail -n 1)
  echo "$tag: $k single: median $single ms over $runs runs ($(tr '\n' ' ' < "$work/$k.single"))"
  if [ -s "$work/$k.par" ]; then
    par=$(median < "$work/$k.par")
    echo "$tag: $k $n at once: all running after $par ms (median over $(wc -l < "$work/$k.par") batches)"
    awk -v a="$arch" -v k="$k" -v n="$n" -v p="$par" -v s="$single" \
      'BEGIN {printf "bench parallel %s: %s ratio parallel/single = %.2f (%d sandboxes; per sandbox %.0f ms)\n", a, k, p / s, n, p / n}'
    parj="$par"; ratio=$(awk -v p="$par" -v s="$single" 'BEGIN {printf "%.3f", p / s}')
  else
    echo "$tag: $k $n at once: no batch had all $n running"
    parj=null; ratio=null
  fi
  eval "${k}_single=$single ${k}_par=$parj"
  printf ', "%s": {"single_ms": {"median": %s, "min": %s, "max": %s}, "parallel_all_running_ms": %s, "ratio_parallel_single": %s}' \
    "$k" "$single" "$smin" "$smax" "$parj" "$ratio" >> "$work/result.json"
done
if [ $runc_ok = 1 ]; then
  # shellcheck disable=SC2154 # set by the eval above
  awk -v a="$arch" -v ks="$kata_single" -v rs="$runc_single" -v kp="$kata_par" -v rp="$runc_par" 'BEGIN {
    printf "bench parallel %s: ratio kata-rv/runc: single %.2f", a, ks / rs
    if (kp != "null" && rp != "null") printf ", parallel %.2f", kp / rp
    printf "\n" }'
else
  echo "$tag: no runc in this test host: no baseline"
fi
printf '}\n' >> "$work/result.json"
mkdir -p "$root/out/bench"
cp "$work/result.json" "$root/out/bench/parallel-$arch.json"
echo "$tag: wrote out/bench/parallel-$arch.json"
