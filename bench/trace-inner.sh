#!/bin/sh
# Runs inside a KVM test host (see bench/trace.sh): RUNS `ctr run --rm … true` with the
# shim at debug level, then the median duration of every traced phase (the time since
# the phase before it in the same operation) and the guest's uptime when its agent
# started and listened. POSIX sh + awk: the riscv64 test host has busybox only.
#
# Before/after in one invocation: with TRACE_B (a `key = value` line for
# [hypervisor.dragonball], e.g. "enable_hugepages = true"), TRACE_B_KERNEL (another guest
# kernel) or TRACE_B_SHIM (another shim binary), a second containerd runs variant B and
# the runs alternate A, B, A, B…; each variant gets its own table. TRACE_KERNEL and
# TRACE_SHIM replace A's kernel and shim. TRACE_B_THP (never, madvise or always) is the
# test host's transparent huge page mode during B's runs (A's keep the mode found).
set -eu
arch="$1"; runs="${2:-10}"
root="$(cd "$(dirname "$0")/.." && pwd)"
out="$root/out/$arch"
if [ "$arch" = riscv64 ]; then kernel="$out/Image"; else kernel="$out/vmlinux"; fi
work="$(mktemp -d /tmp/kata-trace.XXXXXX)"
PATH="$out:$PATH"; export PATH
ab=0
[ -n "${TRACE_B:-}${TRACE_B_KERNEL:-}${TRACE_B_SHIM:-}${TRACE_B_THP:-}" ] && ab=1
thp_knob=/sys/kernel/mm/transparent_hugepage/enabled
thp_a=""; thp_b=""
if [ -n "${TRACE_B_THP:-}" ]; then
  [ -w "$thp_knob" ] || { echo "bench trace $arch: TRACE_B_THP: this host has no $thp_knob"; exit 1; }
  thp_a=$(sed 's/.*\[\(.*\)\].*/\1/' "$thp_knob"); thp_b="$TRACE_B_THP"
fi
cpids=""
trap 'for p in $cpids; do kill $p 2>/dev/null; wait $p 2>/dev/null; done; [ -z "$thp_a" ] || echo "$thp_a" > "$thp_knob"; rm -rf "$work"' EXIT

# Starts variant $1's containerd in $work/$1 with guest kernel $2, shim $3 (empty: ours)
# and the [hypervisor.dragonball] line $4 (empty: none).
start_variant() {
  d="$work/$1"; mkdir -p "$d"
  sed -e "s|@PREFIX@/share/kata-containers/[A-Za-z]*-dragonball|$2|" \
      -e "s|@PREFIX@/share/kata-containers/kata-containers-initrd.img|$out/kata-containers-initrd.img|" \
      -e '/^\[runtime\]/,/^\[/ s|^enable_debug = .*|enable_debug = true|' \
      "$root/configuration/configuration-dragonball-$arch.toml" > "$d/configuration.toml"
  if [ -n "$4" ]; then
    key="${4%%=*}"; key=$(echo "$key" | tr -d ' ')
    if grep -q "^$key = " "$d/configuration.toml"; then
      sed -i "/^\[hypervisor.dragonball\]/,/^\[/ s|^$key = .*|$4|" "$d/configuration.toml"
    else
      sed -i "/^\[hypervisor.dragonball\]/a $4" "$d/configuration.toml"
    fi
    grep -qxF "$4" "$d/configuration.toml" || { echo "bench trace $arch: could not set '$4'"; exit 1; }
  fi
  path="$PATH"
  if [ -n "$3" ]; then
    mkdir -p "$d/shim" && cp "$3" "$d/shim/containerd-shim-kata-v2"; path="$d/shim:$PATH"
  fi
  printf 'version = 2\nroot = "%s/root"\nstate = "%s/state"\ndisabled_plugins = ["io.containerd.grpc.v1.cri"]\n[grpc]\n  address = "%s/c.sock"\n[ttrpc]\n  address = "%s/c.sock.ttrpc"\n' \
    "$d" "$d" "$d" "$d" > "$d/containerd.toml"
  PATH="$path" KATA_CONF_FILE="$d/configuration.toml" containerd --config "$d/containerd.toml" >"$d/containerd.log" 2>&1 &
  cpids="$cpids $!"
  i=0; while [ ! -S "$d/c.sock" ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i + 1)); done
  ctr -a "$d/c.sock" images import --all-platforms "$root/out/images/busybox-$arch.tar" >/dev/null
}

start_variant a "${TRACE_KERNEL:-$kernel}" "${TRACE_SHIM:-}" ""
variants="a"
if [ $ab = 1 ]; then
  start_variant b "${TRACE_B_KERNEL:-${TRACE_KERNEL:-$kernel}}" "${TRACE_B_SHIM:-${TRACE_SHIM:-}}" "${TRACE_B:-}"
  variants="a b"
  echo "bench trace $arch: A = ${TRACE_KERNEL:-$kernel}, shim ${TRACE_SHIM:-ours}${thp_a:+, host THP $thp_a}; B = ${TRACE_B_KERNEL:-same kernel}, shim ${TRACE_B_SHIM:-same}, ${TRACE_B:-same configuration}${thp_b:+, host THP $thp_b}"
fi
i=1
while [ $i -le "$runs" ]; do
  for v in $variants; do
    if [ -n "$thp_b" ]; then
      if [ $v = b ]; then echo "$thp_b" > "$thp_knob"; else echo "$thp_a" > "$thp_knob"; fi
    fi
    ctr -a "$work/$v/c.sock" run --rm --runtime io.containerd.kata.v2 docker.io/library/busybox:latest "t$i" true >/dev/null
  done
  i=$((i + 1))
done
sleep 1
for v in $variants; do
[ $ab = 1 ] && echo "bench trace $arch: variant $(echo $v | tr ab AB)"
awk -v arch="$arch" -v runs="$runs" '
  function field(line, key,    m) {
    if (!match(line, "\"" key "\":\"[^\"]*\"")) return ""
    m = substr(line, RSTART, RLENGTH)
    sub("^\"" key "\":\"", "", m); sub("\"$", "", m)
    return m
  }
  function number(line, key,    m) {
    if (!match(line, "\"" key "\":[0-9.]+")) return ""
    m = substr(line, RSTART, RLENGTH); sub("^\"" key "\":", "", m)
    return m
  }
  # Guest work: what waits on the guest kernel, the agent or the workload.
  function side(op, phase) {
    if (op == "guest uptime" || phase ~ /in the guest|agent connected|exit seen/) return "guest"
    return "host"
  }
  function add(key, value) {
    n[key]++; v[key, n[key]] = value
    if (!(key in seen)) { seen[key] = 1; order[++keys] = key }
  }
  /"msg":"trace"/ {
    op = field($0, "op"); id = field($0, "id"); phase = field($0, "phase"); ms = field($0, "ms")
    run = op SUBSEP id
    add(op " / " phase, ms - (run in last ? last[run] : 0))
    last[run] = ms
    next
  }
  /"msg":"vmm trace: / {
    line = field($0, "msg"); sub("^vmm trace: ", "", line)
    at = line; sub(/.* at /, "", at); sub(/ ms$/, "", at)
    phase = line; sub(/ at [0-9.]+ ms$/, "", phase)
    if (phase == "KVM VM created") vmprev = 0
    add("vmm build / " phase, at - vmprev)
    vmprev = at
    next
  }
  /"msg":"kata-agent starting"/ { u = number($0, "uptime_s"); if (u != "") add("guest uptime / at agent start (since guest boot)", u * 1000) }
  /"msg":"agent listening"/ { u = number($0, "uptime_s"); if (u != "") add("guest uptime / at agent listening (since guest boot)", u * 1000) }
  function median(key,    i, j, t, c) {
    c = n[key]
    for (i = 1; i <= c; i++) a[i] = v[key, i] + 0
    for (i = 2; i <= c; i++) { t = a[i]; for (j = i - 1; j >= 1 && a[j] > t; j--) a[j + 1] = a[j]; a[j + 1] = t }
    return (c % 2) ? a[(c + 1) / 2] : (a[c / 2] + a[c / 2 + 1]) / 2
  }
  END {
    printf "bench trace %s: medians over %d ctr run --rm true, ms since the phase before in the same operation;\n", arch, runs
    printf "bench trace %s: sandbox start (and vmm build inside it) nest in container create / sandbox ready\n", arch
    for (k = 1; k <= keys; k++) {
      key = order[k]; split(key, parts, " / ")
      printf "bench trace %s: %-6s %-22s %-58s %9.1f  (n=%d)\n", arch, side(parts[1], parts[2]), parts[1], parts[2], median(key), n[key]
    }
  }
' "$work/$v/containerd.log"
done
