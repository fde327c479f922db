#!/usr/bin/env bash
# Cross-builds a static riscv64 `runc` from Debian bookworm's own runc source package with
# Debian's Go libraries (GOPATH mode, no module proxy), for the runc baseline of
# `make bench BENCH=ctr` in the riscv64 KVM test host. runc needs cgo (its nsenter is C),
# so this links statically against the riscv64 cross glibc. Built without the seccomp
# tag: Debian has no riscv64 libseccomp, and runc 1.1's seccomp tables lack riscv64.
# Cached by the source version and this script; prints the binary's path last.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache="${KATA_RV_CACHE:-$HOME/.cache/kata-rv}"
sudo=""; [[ $(id -u) -eq 0 ]] || sudo="sudo"

version="$(apt-cache showsrc runc 2>/dev/null | awk '/^Version:/ {print $2}' | sort -V | tail -1)"
if [[ -z "$version" ]]; then
  echo "runc-riscv64.sh: runc sources unknown to apt: run 'make setup'" >&2
  exit 1
fi
key="$( { echo "$version"; cat "$here/runc-riscv64.sh"; } | sha256sum | cut -c1-16)"
dest="$cache/runc/riscv64-$key"
if [[ -x "$dest/runc" ]]; then
  echo "runc riscv64: cached" >&2
  echo "$dest/runc"
  exit 0
fi

if ! command -v go >/dev/null || ! command -v dh_auto_configure >/dev/null \
   || [[ ! -d /usr/share/gocode/src/github.com/opencontainers/runtime-spec ]] \
   || ! command -v riscv64-linux-gnu-gcc >/dev/null; then
  echo "runc riscv64: installing runc's build dependencies (Go and its libraries)" >&2
  DEBIAN_FRONTEND=noninteractive $sudo apt-get build-dep -y -qq runc >/dev/null
fi

work="$cache/runc/build-$key"
rm -rf "$work" && mkdir -p "$work"
cd "$work"
echo "runc riscv64: building $version (static, cgo, no seccomp)" >&2
apt-get source -qq "runc=$version" >/dev/null 2>&1
src="$(find "$work" -maxdepth 1 -type d -name 'runc-*' | head -1)"
cd "$src"
dh_auto_configure --buildsystem=golang --builddirectory=_build >/dev/null
upstream="$(dpkg-parsechangelog -S Version | sed 's/-[^-]*$//')"
export GOPATH="$src/_build" GOCACHE="$src/_build/go-build" GO111MODULE=off GOPROXY=off GOFLAGS= GOTOOLCHAIN=local
export GOOS=linux GOARCH=riscv64 CGO_ENABLED=1 CC=riscv64-linux-gnu-gcc
export CGO_CFLAGS="-O2 -ffile-prefix-map=$src=." CGO_LDFLAGS=""
mkdir -p "$dest.tmp"
(cd _build/src/github.com/opencontainers/runc && go build -trimpath -p "${KATA_RV_JOBS:-2}" \
   -tags "urfave_cli_no_docs netgo osusergo" \
   -ldflags "-s -w -buildid= -extldflags -static -X main.version=$upstream -X main.gitCommit=$version" \
   -o "$dest.tmp/runc" .)
rm -rf "$dest" && mv "$dest.tmp" "$dest"
rm -rf "$work"
echo "$dest/runc"
