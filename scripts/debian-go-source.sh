# Sourced by the riscv64 cross-build scripts (containerd, runc): a Debian bookworm Go
# source package built in GOPATH mode with Debian's Go libraries, no module proxy.
#
#   debian_source_version PKG          -> $version (newest source version apt knows)
#   debian_source_dest PKG SCRIPT      -> $dest (cache dir keyed by version + scripts)
#   debian_go_source_tree PKG WHAT     -> cd into the unpacked, dh-configured source,
#                                         $src and $upstream set, Go env exported
# SCRIPT is the calling script; `cache` and `sudo` are set here.

cache="${KATA_RV_CACHE:-$HOME/.cache/kata-rv}"
sudo=""; [[ $(id -u) -eq 0 ]] || sudo="sudo"

debian_source_version() {
  version="$(apt-cache showsrc "$1" 2>/dev/null | awk '/^Version:/ {print $2}' | sort -V | tail -1)"
  if [[ -z "$version" ]]; then
    echo "$1 riscv64: $1 sources unknown to apt: run 'make setup'" >&2
    exit 1
  fi
}

debian_source_dest() {
  debian_source_version "$1"
  local key
  key="$( { echo "$version"; cat "$2" "${BASH_SOURCE[0]}"; } | sha256sum | cut -c1-16)"
  dest="$cache/$1/riscv64-$key"
}

debian_go_source_tree() {
  local pkg="$1" what="$2"
  local work="$dest.build"
  rm -rf "$work" && mkdir -p "$work"
  cd "$work"
  echo "$pkg riscv64: building $version ($what)" >&2
  apt-get source -qq "$pkg=$version" >/dev/null 2>&1
  src="$(find "$work" -maxdepth 1 -type d -name "$pkg-*" | head -1)"
  cd "$src"
  dh_auto_configure --buildsystem=golang --builddirectory=_build >/dev/null
  upstream="$(dpkg-parsechangelog -S Version | sed 's/-[^-]*$//')"
  export GOPATH="$src/_build" GOCACHE="$src/_build/go-build" GO111MODULE=off GOPROXY=off GOFLAGS= GOTOOLCHAIN=local
  export GOOS=linux GOARCH=riscv64
}

# Moves the finished $dest.tmp into place and removes the build tree.
debian_source_finish() {
  rm -rf "$dest" && mv "$dest.tmp" "$dest"
  rm -rf "$dest.build"
}
