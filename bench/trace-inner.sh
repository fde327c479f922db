#!/bin/sh
# Runs inside a KVM test host (see bench/trace.sh): RUNS `ctr run --rm … true` with the
# shim at debug level, then the median duration of every traced phase (the time since
# the phase before it in the same operation) and the guest's uptime when its agent
# started and listened. POSIX sh + awk: the riscv64 test host has busybox only.
set -eu
arch="$1"; runs="${2:-10}"
root="$(cd "$(dirname "$0")/.." && pwd)"
out="$root/out/$arch"
if [ "$arch" = riscv64 ]; then kernel="$out/Image"; else kernel="$out/vmlinux"; fi
# TRACE_KERNEL and TRACE_SHIM trace another guest kernel or shim (before/after figures).
kernel="${TRACE_KERNEL:-$kernel}"
work="$(mktemp -d /tmp/kata-trace.XXXXXX)"
PATH="$out:$PATH"
if [ -n "${TRACE_SHIM:-}" ]; then
  mkdir -p /tmp/kata-trace-shim && cp "$TRACE_SHIM" /tmp/kata-trace-shim/containerd-shim-kata-v2
  PATH="/tmp/kata-trace-shim:$PATH"
fi
export PATH
sed -e "s|@PREFIX@/share/kata-containers/[A-Za-z]*-dragonball|$kernel|" \
    -e "s|@PREFIX@/share/kata-containers/kata-containers-initrd.img|$out/kata-containers-initrd.img|" \
    -e '/^\[runtime\]/,/^\[/ s|^enable_debug = .*|enable_debug = true|' \
    "$root/configuration/configuration-dragonball-$arch.toml" > "$work/configuration.toml"
printf 'version = 2\nroot = "%s/root"\nstate = "%s/state"\ndisabled_plugins = ["io.containerd.grpc.v1.cri"]\n[grpc]\n  address = "%s/c.sock"\n[ttrpc]\n  address = "%s/c.sock.ttrpc"\n' \
  "$work" "$work" "$work" "$work" > "$work/containerd.toml"
KATA_CONF_FILE="$work/configuration.toml" containerd --config "$work/containerd.toml" >"$work/containerd.log" 2>&1 &
cpid=$!
trap 'kill $cpid 2>/dev/null; wait $cpid 2>/dev/null; rm -rf "$work"' EXIT
i=0; while [ ! -S "$work/c.sock" ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i + 1)); done
ctr="ctr -a $work/c.sock"
$ctr images import --all-platforms "$root/out/images/busybox-$arch.tar" >/dev/null
i=1
while [ $i -le "$runs" ]; do
  $ctr run --rm --runtime io.containerd.kata.v2 docker.io/library/busybox:latest "t$i" true >/dev/null
  i=$((i + 1))
done
sleep 1
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
' "$work/containerd.log"
