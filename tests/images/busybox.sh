#!/usr/bin/env bash
# Provides a static busybox for an architecture and prints its path (last line); the
# list of its applets (absolute paths) is beside it as busybox.links.
#   x86_64:  Debian's busybox-static (/bin/busybox).
#   riscv64: cross-built from Debian's own busybox source package with
#            riscv64-linux-gnu-gcc -static, cached by source version and this script.
set -euo pipefail

arch="${1:?usage: busybox.sh riscv64|x86_64}"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache="${KATA_RV_CACHE:-$HOME/.cache/kata-rv}"
jobs="${KATA_RV_JOBS:-2}"

case "$arch" in
  x86_64)
    [[ -x /bin/busybox ]] || { echo "busybox.sh: /bin/busybox missing: run 'make setup' (busybox-static)" >&2; exit 1; }
    version="$(dpkg-query -W -f='${Version}' busybox-static)"
    dest="$cache/busybox/x86_64-$version"
    if [[ ! -f "$dest/busybox.links" ]]; then
      mkdir -p "$dest.tmp"
      cp /bin/busybox "$dest.tmp/busybox"
      /bin/busybox --list-full | sed 's|^|/|' >"$dest.tmp/busybox.links"
      rm -rf "$dest" && mv "$dest.tmp" "$dest"
    fi
    echo "$dest/busybox"
    exit 0 ;;
  riscv64) ;;
  *) echo "busybox.sh: unknown ARCH '$arch'" >&2; exit 2 ;;
esac

version="$(apt-cache showsrc busybox 2>/dev/null | awk '/^Version:/ {print $2}' | sort -V | tail -1)"
if [[ -z "$version" ]]; then
  echo "busybox.sh: no busybox source package known to apt: run 'make setup' (adds deb-src)" >&2
  exit 1
fi
key="$( { echo "$version"; cat "$here/busybox.sh"; } | sha256sum | cut -c1-16)"
dest="$cache/busybox/riscv64-$key"
if [[ -f "$dest/busybox.links" ]]; then
  echo "busybox riscv64: cached" >&2
  echo "$dest/busybox"
  exit 0
fi

work="$cache/busybox/build-$key"
rm -rf "$work" && mkdir -p "$work"
echo "busybox riscv64: fetching Debian source $version" >&2
(cd "$work" && apt-get source -qq "busybox=$version" >/dev/null 2>&1) || {
  echo "busybox.sh: 'apt-get source busybox=$version' failed (deb-src configured? run 'make setup')" >&2; exit 1; }
src="$(find "$work" -maxdepth 1 -mindepth 1 -type d -name 'busybox-*' | head -1)"

mk=(make -C "$src" ARCH=riscv CROSS_COMPILE=riscv64-linux-gnu- -j"$jobs")
"${mk[@]}" defconfig >/dev/null
cfg="$src/.config"
sed -i -e 's/^# CONFIG_STATIC is not set/CONFIG_STATIC=y/' \
       -e 's/^CONFIG_TC=y/# CONFIG_TC is not set/' \
       -e 's/^CONFIG_FEATURE_TC_INGRESS=y/# CONFIG_FEATURE_TC_INGRESS is not set/' "$cfg"
{ yes '' || true; } | "${mk[@]}" oldconfig >/dev/null
echo "busybox riscv64: building (static, -j$jobs)" >&2
"${mk[@]}" busybox busybox.links >"$work/build.log" 2>&1 || { tail -n 30 "$work/build.log" >&2; exit 1; }

mkdir -p "$dest.tmp"
cp "$src/busybox" "$src/busybox.links" "$dest.tmp/"
rm -rf "$dest" && mv "$dest.tmp" "$dest"
rm -rf "$work"
echo "$dest/busybox"
