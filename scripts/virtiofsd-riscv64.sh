#!/usr/bin/env bash
# Cross-builds a static riscv64 virtiofsd (for the riscv64 KVM test host) against
# libseccomp and libcap-ng built for riscv64 from Debian's own source packages; cached by
# their versions and this script. Prints the binary's path on the last line.
set -euo pipefail

VIRTIOFSD_VERSION=1.13.2
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache="${KATA_RV_CACHE:-$HOME/.cache/kata-rv}"
jobs="${KATA_RV_JOBS:-2}"

srcver() { apt-cache showsrc "$1" 2>/dev/null | awk '/^Version:/ {print $2}' | sort -V | tail -1; }
seccomp_ver="$(srcver libseccomp)"
capng_ver="$(srcver libcap-ng)"
if [[ -z "$seccomp_ver" || -z "$capng_ver" ]]; then
  echo "virtiofsd-riscv64.sh: libseccomp/libcap-ng sources unknown to apt: run 'make setup'" >&2
  exit 1
fi
key="$( { echo "$VIRTIOFSD_VERSION $seccomp_ver $capng_ver"; cat "$here/virtiofsd-riscv64.sh"; } | sha256sum | cut -c1-16)"
dest="$cache/virtiofsd/riscv64-$key"
if [[ -x "$dest/bin/virtiofsd" ]]; then
  echo "virtiofsd riscv64: cached" >&2
  echo "$dest/bin/virtiofsd"
  exit 0
fi

work="$cache/virtiofsd/build-$key"
prefix="$work/prefix"
rm -rf "$work" && mkdir -p "$prefix"
cd "$work"
echo "virtiofsd riscv64: libseccomp $seccomp_ver, libcap-ng $capng_ver (static, riscv64)" >&2
apt-get source -qq "libseccomp=$seccomp_ver" "libcap-ng=$capng_ver" >/dev/null 2>&1
(cd libseccomp-*/ && ./configure -q --host=riscv64-linux-gnu --enable-static --disable-shared \
   --prefix="$prefix" >/dev/null && make -s -j"$jobs" >/dev/null && make -s install >/dev/null)
(cd libcap-ng-*/ && ./configure -q --host=riscv64-linux-gnu --enable-static --disable-shared \
   --without-python --without-python3 --prefix="$prefix" >/dev/null && \
   make -s -C src -j"$jobs" >/dev/null && make -s -C src install >/dev/null)

echo "virtiofsd riscv64: cargo install virtiofsd $VIRTIOFSD_VERSION (static, a few minutes)" >&2
LIBSECCOMP_LINK_TYPE=static LIBSECCOMP_LIB_PATH="$prefix/lib" \
LIBCAPNG_LINK_TYPE=static LIBCAPNG_LIB_PATH="$prefix/lib" \
CARGO_TARGET_RISCV64GC_UNKNOWN_LINUX_GNU_LINKER=riscv64-linux-gnu-gcc \
CARGO_TARGET_RISCV64GC_UNKNOWN_LINUX_GNU_RUSTFLAGS="-C target-feature=+crt-static" \
  cargo install --locked --quiet -j "$jobs" virtiofsd --version "$VIRTIOFSD_VERSION" \
    --target riscv64gc-unknown-linux-gnu --root "$dest.tmp"
rm -rf "$dest" && mv "$dest.tmp" "$dest"
rm -rf "$work"
echo "$dest/bin/virtiofsd"
