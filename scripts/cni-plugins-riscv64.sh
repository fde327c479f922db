#!/usr/bin/env bash
# Cross-builds static riscv64 CNI plugins (bridge, host-local, loopback, portmap) from
# Debian bookworm's own containernetworking-plugins source package with Debian's Go
# libraries (GOPATH mode, CGO_ENABLED=0, no module proxy), for containerd's CRI inside
# the riscv64 KVM test host. Cached by the source version and the scripts. Prints the
# directory holding the plugins on the last line.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$here/debian-go-source.sh"

pkg_name=golang-github-containernetworking-plugins
plugins=(main/bridge ipam/host-local main/loopback meta/portmap)
debian_source_dest "$pkg_name" "$here/cni-plugins-riscv64.sh"
complete=1
for p in "${plugins[@]}"; do [[ -x "$dest/${p#*/}" ]] || complete=0; done
if (( complete )); then
  echo "cni-plugins riscv64: cached" >&2
  echo "$dest"
  exit 0
fi

if ! command -v go >/dev/null || ! command -v dh_auto_configure >/dev/null \
   || [[ ! -d /usr/share/gocode/src/github.com/vishvananda/netlink ]] \
   || [[ ! -d /usr/share/gocode/src/github.com/networkplumbing/go-nft ]]; then
  echo "cni-plugins riscv64: installing the plugins' build dependencies (Go and its libraries)" >&2
  DEBIAN_FRONTEND=noninteractive $sudo apt-get build-dep -y -qq "$pkg_name" >/dev/null
fi

debian_go_source_tree "$pkg_name" "static, CGO_ENABLED=0"
export CGO_ENABLED=0
pkg=github.com/containernetworking/plugins
ldflags="-s -w -X $pkg/pkg/utils/buildversion.BuildVersion=$upstream -buildid="
mkdir -p "$dest.tmp"
(cd "_build/src/$pkg" && go build -trimpath -p "${KATA_RV_JOBS:-2}" -ldflags "$ldflags" \
   -o "$dest.tmp/" "${plugins[@]/#/./plugins/}")
debian_source_finish
echo "$dest"
