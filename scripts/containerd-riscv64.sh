#!/usr/bin/env bash
# Cross-builds static riscv64 `containerd`, `ctr` and `containerd-shim-runc-v2` (for the
# runc baseline of the ctr bench) from Debian bookworm's own containerd source package
# with Debian's Go libraries (GOPATH mode, CGO_ENABLED=0, no module proxy), for the
# riscv64 KVM test host. Cached by the source version and the scripts. Prints the
# directory holding the binaries on the last line.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$here/debian-go-source.sh"

debian_source_dest containerd "$here/containerd-riscv64.sh"
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

debian_go_source_tree containerd "static, CGO_ENABLED=0"
export CGO_ENABLED=0
pkg=github.com/containerd/containerd
tags="no_btrfs no_devmapper no_zfs no_aufs osusergo netgo static_build"
ldflags="-s -w -X $pkg/version.Version=$upstream -X $pkg/version.Revision=$version -X $pkg/version.Package=$pkg -buildid="
mkdir -p "$dest.tmp"
(cd "_build/src/$pkg" && go build -trimpath -p "${KATA_RV_JOBS:-2}" -tags "$tags" -ldflags "$ldflags" \
   -o "$dest.tmp/" ./cmd/containerd ./cmd/ctr ./cmd/containerd-shim-runc-v2)
debian_source_finish
echo "$dest"
