# Sourced by the bench inner scripts (POSIX sh): a private containerd in $work, and the
# runc baseline probe.

# $work/configuration.toml: the shipped configuration for $arch with this build's kernel
# and initrd (under $out) and default_memory = $mem.
write_kata_config() {
  sed -e "s|@PREFIX@/share/kata-containers/[A-Za-z]*-dragonball|$kernel|" \
      -e "s|@PREFIX@/share/kata-containers/kata-containers-initrd.img|$out/kata-containers-initrd.img|" \
      -e "s|^default_memory = .*|default_memory = $mem|" \
      "$root/configuration/configuration-dragonball-$arch.toml" > "$work/configuration.toml"
  # HUGEPAGES=1: guest RAM in transparent huge pages (enable_hugepages).
  if [ "${HUGEPAGES:-0}" = 1 ]; then
    sed -i 's|^enable_hugepages = .*|enable_hugepages = true|' "$work/configuration.toml"
    grep -q '^enable_hugepages = true$' "$work/configuration.toml" || { echo "could not set enable_hugepages"; exit 1; }
  fi
}

# Starts containerd (CRI off) with the kata-rv configuration $work/configuration.toml;
# sets cpid and ctr.
start_private_containerd() {
  printf 'version = 2\nroot = "%s/root"\nstate = "%s/state"\ndisabled_plugins = ["io.containerd.grpc.v1.cri"]\n[grpc]\n  address = "%s/c.sock"\n[ttrpc]\n  address = "%s/c.sock.ttrpc"\n' \
    "$work" "$work" "$work" "$work" > "$work/containerd.toml"
  KATA_CONF_FILE="$work/configuration.toml" containerd --config "$work/containerd.toml" >"$work/containerd.log" 2>&1 &
  cpid=$!
  ctr="ctr -a $work/c.sock"
}

# Sets runc_ok (1 when runc runs here) and runc_flags; messages start with $1. runc
# cannot pivot_root out of an initramfs root (the riscv64 test host's): then it runs
# with --no-pivot (chroot), as it would on such a host.
probe_runc() {
  runc_ok=0; runc_flags=""
  command -v runc >/dev/null 2>&1 || return 0
  if $ctr run --rm --runtime io.containerd.runc.v2 "$image" probe true >"$work/probe" 2>&1; then
    runc_ok=1
  elif $ctr run --rm --no-pivot --runtime io.containerd.runc.v2 "$image" probe2 true >"$work/probe" 2>&1; then
    runc_ok=1; runc_flags="--no-pivot"
    echo "$1: runc runs with --no-pivot (the test host's root is an initramfs)"
  else
    echo "$1: runc cannot run in this test host: $(head -c 300 "$work/probe")"
  fi
}

# "pid id" of every shim server (the re-executed `containerd-shim-kata-v2 … -socket …`).
shims() {
  for p in /proc/[0-9]*; do
    c=$(tr '\0' ' ' < "$p/cmdline" 2>/dev/null) || continue
    case "$c" in
      *containerd-shim-kata-v2\ *\ -socket\ *)
        echo "${p#/proc/} $(echo "$c" | sed -n 's/.* -id \([^ ]*\) .*/\1/p')" ;;
    esac
  done
}

# The test host's MemAvailable in KiB, and KiB as MiB with one decimal.
avail_kib() { awk '/^MemAvailable:/ {print $2}' /proc/meminfo; }
mib() { awk -v k="$1" 'BEGIN {printf "%.1f", k / 1024}'; }
# Milliseconds of uptime; the median of numbers on stdin.
now_ms() { awk '{ printf "%d\n", $1 * 1000 }' /proc/uptime; }
median() { sort -n | awk '{a[NR]=$1} END {if (NR == 0) print 0; else print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }
