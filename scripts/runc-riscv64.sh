#!/usr/bin/env bash
# Cross-builds a static riscv64 `runc` from Debian bookworm's own runc source package with
# Debian's Go libraries (GOPATH mode, no module proxy), for the runc baseline of
# `make bench BENCH=ctr` in the riscv64 KVM test host. runc needs cgo (its nsenter is C),
# so this links statically against the riscv64 cross glibc. Built without the seccomp
# tag: Debian has no riscv64 libseccomp, and runc 1.1's seccomp tables lack riscv64.
# Cached by the source version and the scripts; prints the binary's path last.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$here/debian-go-source.sh"

debian_source_dest runc "$here/runc-riscv64.sh"
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

debian_go_source_tree runc "static, cgo, no seccomp"
export CGO_ENABLED=1 CC=riscv64-linux-gnu-gcc
export CGO_CFLAGS="-O2 -ffile-prefix-map=$src=." CGO_LDFLAGS=""
mkdir -p "$dest.tmp"
(cd _build/src/github.com/opencontainers/runc && go build -trimpath -p "${KATA_RV_JOBS:-2}" \
   -tags "urfave_cli_no_docs netgo osusergo" \
   -ldflags "-s -w -buildid= -extldflags -static -X main.version=$upstream -X main.gitCommit=$version" \
   -o "$dest.tmp/runc" .)
debian_source_finish
echo "$dest/runc"
