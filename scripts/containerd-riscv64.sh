#!/usr/bin/env bash
# Cross-builds static riscv64 `containerd`, `ctr` and `containerd-shim-runc-v2` (for the
# runc baseline of the ctr bench) from Debian bookworm's own containerd
# source package with Debian's Go libraries (GOPATH mode, CGO_ENABLED=0, no module proxy),
# for the riscv64 KVM test host. Cached by the source version and this script. Prints the
# directory holding the binaries on the last line.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache="${KATA_RV_CACHE:-$HOME/.cache/kata-rv}"
sudo=""; [[ $(id -u) -eq 0 ]] || sudo="sudo"

version="$(apt-cache showsrc containerd 2>/dev/null | awk '/^Version:/ {print $2}' | sort -V | tail -1)"
if [[ -z "$version" ]]; then
  echo "containerd-riscv64.sh: containerd sources unknown to apt: run 'make setup'" >&2
  exit 1
fi
key="$( { echo "$version"; cat "$here/containerd-riscv64.sh"; } | sha256sum | cut -c1-16)"
dest="$cache/containerd/riscv64-$key"
if [[ -x "$dest/containerd" && -x "$dest/ctr" && -x "$dest/containerd-shim-runc-v2" ]]; then
  echo "containerd riscv64: cached" >&2
  echo "$dest"
  exit 0
fi

# Debian's Go toolchain and the golang-*-dev libraries containerd builds against.
if ! command -v go >/dev/null || ! command -v dh_auto_configure >/dev/null \
   || [[ ! -d /usr/share/gocode/src/github.com/containerd ]]; then
  echo "containerd riscv64: installing containerd's build dependencies (Go and its libraries)" >&2
  DEBIAN_FRONTEND=noninteractive $sudo apt-get build-dep -y -qq containerd >/dev/null
fi

work="$cache/containerd/build-$key"
rm -rf "$work" && mkdir -p "$work"
cd "$work"
echo "containerd riscv64: building $version (static, CGO_ENABLED=0)" >&2
apt-get source -qq "containerd=$version" >/dev/null 2>&1
src="$(find "$work" -maxdepth 1 -type d -name 'containerd-*' | head -1)"
cd "$src"
dh_auto_configure --buildsystem=golang --builddirectory=_build >/dev/null
pkg=github.com/containerd/containerd
upstream="$(dpkg-parsechangelog -S Version | sed 's/-[^-]*$//')"
export GOPATH="$src/_build" GOCACHE="$src/_build/go-build" GO111MODULE=off GOPROXY=off GOFLAGS= GOTOOLCHAIN=local
export GOOS=linux GOARCH=riscv64 CGO_ENABLED=0
tags="no_btrfs no_devmapper no_zfs no_aufs osusergo netgo static_build"
ldflags="-s -w -X $pkg/version.Version=$upstream -X $pkg/version.Revision=$version -X $pkg/version.Package=$pkg -buildid="
mkdir -p "$dest.tmp"
(cd "_build/src/$pkg" && go build -trimpath -p "${KATA_RV_JOBS:-2}" -tags "$tags" -ldflags "$ldflags" \
   -o "$dest.tmp/" ./cmd/containerd ./cmd/ctr ./cmd/containerd-shim-runc-v2)
rm -rf "$dest" && mv "$dest.tmp" "$dest"
rm -rf "$work"
echo "$dest"
