#!/usr/bin/env bash
# Builds a kata-rv kernel for one architecture from Debian's linux-source-6.12: tinyconfig +
# fragments/common.config + fragments/<arch>.config + olddefconfig, -j2. That is the microVM
# guest kernel; the `kvm-host` flavor (the KVM test host's L1 kernel) adds
# fragments/kvm-host.config + fragments/kvm-host-<arch>.config (KVM, 9p, CNI's needs).
#
# Usage: guest-kernel/build.sh riscv64|x86_64 [guest|kvm-host]
# Output: the kernel lands in a cache dir keyed by the source version and every input
# file; the last line printed is that directory. A second run with the same inputs does
# nothing. The build fails if olddefconfig dropped or changed any requested option.
set -euo pipefail

arch="${1:?usage: build.sh riscv64|x86_64 [guest|kvm-host]}"
flavor="${2:-guest}"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache="${KATA_RV_CACHE:-$HOME/.cache/kata-rv}"
jobs="${KATA_RV_JOBS:-2}"
tarball=/usr/src/linux-source-6.12.tar.xz

case "$arch" in
  riscv64) karch=riscv; cross=riscv64-linux-gnu-; targets=(Image); outputs=(arch/riscv/boot/Image) ;;
  x86_64) karch=x86_64; cross=; targets=(vmlinux bzImage); outputs=(vmlinux arch/x86/boot/bzImage) ;;
  *) echo "build.sh: unknown ARCH '$arch' (expected riscv64 or x86_64)" >&2; exit 2 ;;
esac

fragments=("$here/fragments/common.config" "$here/fragments/$arch.config")
case "$flavor" in
  guest) ;;
  kvm-host) fragments+=("$here/fragments/kvm-host.config" "$here/fragments/kvm-host-$arch.config") ;;
  *) echo "build.sh: unknown flavor '$flavor' (expected guest or kvm-host)" >&2; exit 2 ;;
esac

if [[ ! -f "$tarball" ]]; then
  echo "build.sh: $tarball is missing: run 'make setup' (it installs linux-source-6.12)" >&2
  exit 1
fi
src_version="$(dpkg-query -W -f='${Version}' linux-source-6.12)"
key="$( { echo "$src_version $flavor"; cat "$here/build.sh" "${fragments[@]}"; } | sha256sum | cut -c1-16)"
dest="$cache/kernel/$arch-$flavor-$key"

if [[ -f "$dest/.complete" ]]; then
  echo "kernel $arch $flavor: cached" >&2
  echo "$dest"
  exit 0
fi

src="$cache/src/linux-$src_version"
if [[ ! -f "$src/.unpacked" ]]; then
  echo "kernel: unpacking linux-source $src_version" >&2
  rm -rf "$src" && mkdir -p "$src"
  tar -xJf "$tarball" -C "$src" --strip-components=1
  touch "$src/.unpacked"
fi

build="$cache/kernel/build-$arch-$flavor-$key"
rm -rf "$build" && mkdir -p "$build"
mk=(make -C "$src" O="$build" ARCH="$karch" CROSS_COMPILE="$cross" -j"$jobs")

echo "kernel $arch $flavor: configuring (tinyconfig + fragments)" >&2
"${mk[@]}" tinyconfig >/dev/null
(cd "$build" && ARCH="$karch" CROSS_COMPILE="$cross" "$src/scripts/kconfig/merge_config.sh" -m -O "$build" .config "${fragments[@]}" >/dev/null)
"${mk[@]}" olddefconfig >/dev/null

# Every requested option must have survived olddefconfig with the requested value.
missing=0
while IFS= read -r line; do
  [[ "$line" =~ ^(CONFIG_[A-Za-z0-9_]+)=(.*)$ ]] || continue
  opt="${BASH_REMATCH[1]}"; want="${BASH_REMATCH[2]}"
  if [[ "$want" == n ]]; then
    if grep -q "^$opt=" "$build/.config"; then
      echo "build.sh: $opt must be unset but is $(grep "^$opt=" "$build/.config")" >&2; missing=1
    fi
  elif ! grep -qx "$opt=$want" "$build/.config"; then
    have="$(grep -E "^$opt=|^# $opt is not set" "$build/.config" || echo 'absent')"
    echo "build.sh: requested $opt=$want but olddefconfig gave: $have" >&2; missing=1
  fi
done < <(cat "${fragments[@]}")
if [[ "$missing" != 0 ]]; then
  echo "build.sh: $flavor kernel config for $arch lost requested options (see above); fix guest-kernel/fragments/" >&2
  exit 1
fi

echo "kernel $arch $flavor: building ${targets[*]} with -j$jobs (a few minutes)" >&2
start=$(date +%s)
"${mk[@]}" "${targets[@]}" >"$build/build.log" 2>&1 || { tail -n 40 "$build/build.log" >&2; exit 1; }
echo "kernel $arch $flavor: built in $(( $(date +%s) - start )) s" >&2

tmp="$dest.tmp"
rm -rf "$tmp" && mkdir -p "$tmp"
for o in "${outputs[@]}"; do cp "$build/$o" "$tmp/"; done
cp "$build/.config" "$tmp/config"
touch "$tmp/.complete"
rm -rf "$dest" && mv "$tmp" "$dest"
rm -rf "$build"
echo "$dest"
