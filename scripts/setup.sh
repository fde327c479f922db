#!/usr/bin/env bash
# One-time (and idempotent) machine setup for kata-rv: Debian packages (bookworm, plus
# QEMU 10 and OpenSBI from bookworm-backports), rustup targets and virtiofsd.
# Quick when nothing is missing. Never adds Debian suites other than bookworm and
# bookworm-backports.
set -euo pipefail

VIRTIOFSD_VERSION=1.13.2
sudo=""
[[ "$(id -u)" == 0 ]] || sudo="sudo"

bookworm_pkgs=(
  linux-source-6.12 gcc-riscv64-linux-gnu libc6-dev-riscv64-cross
  make bc bison flex libelf-dev libssl-dev cpio xz-utils dpkg-dev pkg-config
  containerd runc busybox-static libseccomp-dev libcap-ng-dev iproute2 gperf
  containernetworking-plugins iptables protobuf-compiler
)
backports_pkgs=(qemu-system-misc qemu-system-x86 opensbi)

# The machine's own Debian mirror: the one its apt sources use for bookworm.
mirror="$(apt-get indextargets --format '$(REPO_URI) $(RELEASE) $(TARGET_OF)' 2>/dev/null \
  | awk '$2 == "bookworm" && $3 == "deb" { sub(/\/$/, "", $1); print $1; exit }')"
if [[ -z "$mirror" ]]; then
  echo "setup: no Debian bookworm source in this machine's apt configuration" >&2
  exit 1
fi
sources=/etc/apt/sources.list.d/kata-rv.sources
want_sources="# Added by kata-rv scripts/setup.sh: QEMU 10/OpenSBI from bookworm-backports, and
# source packages (busybox, containerd, CNI plugins) for riscv64 cross-builds, from this
# machine's own mirror.
Types: deb deb-src
URIs: $mirror
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb-src
URIs: $mirror
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg"

installed() { dpkg-query -W -f='${Status} ${Version}\n' "$1" 2>/dev/null | grep -q '^install ok installed'; }
version_of() { dpkg-query -W -f='${Version}' "$1" 2>/dev/null || true; }

need_update=0
if [[ ! -f "$sources" ]] || [[ "$(cat "$sources")" != "$want_sources" ]]; then
  echo "setup: adding $sources (bookworm-backports + deb-src)"
  printf '%s\n' "$want_sources" | $sudo tee "$sources" >/dev/null
  need_update=1
fi

missing=()
for p in "${bookworm_pkgs[@]}"; do installed "$p" || missing+=("$p"); done
missing_bpo=()
for p in "${backports_pkgs[@]}"; do installed "$p" || missing_bpo+=("$p"); done
# bookworm's own QEMU (7.2) has no usable riscv64 AIA: require 10.x from backports.
for p in qemu-system-misc qemu-system-x86; do
  v="$(version_of "$p")"
  if [[ -n "$v" && "$v" != 1:10.* ]]; then missing_bpo+=("$p"); fi
done

if (( ${#missing[@]} + ${#missing_bpo[@]} )) || [[ "$need_update" == 1 ]]; then
  echo "setup: apt-get update"
  $sudo apt-get update -qq
fi
export DEBIAN_FRONTEND=noninteractive
if (( ${#missing_bpo[@]} )); then
  echo "setup: installing from bookworm-backports: ${missing_bpo[*]}"
  $sudo apt-get install -y -qq --no-install-recommends -t bookworm-backports "${missing_bpo[@]}" >/dev/null
fi
if (( ${#missing[@]} )); then
  echo "setup: installing: ${missing[*]}"
  $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The x86_64 KVM test host runs on this machine's root, read-only, with tmpfs on a few
# directories; CNI needs /var/lib/cni (its cache, host-local's leases) to exist for that.
[[ -d /var/lib/cni ]] || $sudo mkdir -p /var/lib/cni

for t in riscv64gc-unknown-linux-gnu x86_64-unknown-linux-musl; do
  if ! rustup target list --installed | grep -qx "$t"; then
    echo "setup: rustup target add $t"
    rustup target add "$t"
  fi
done
for c in clippy rustfmt; do
  if ! rustup component list --installed | grep -q "^$c"; then
    rustup component add "$c"
  fi
done

if [[ "$(virtiofsd --version 2>/dev/null || true)" != *"$VIRTIOFSD_VERSION"* ]]; then
  echo "setup: cargo install virtiofsd $VIRTIOFSD_VERSION (a few minutes, once)"
  cargo install --locked --quiet -j 2 virtiofsd --version "$VIRTIOFSD_VERSION"
fi
# Cargo's target dirs (one per clone path, the Makefile's CARGO_TARGET_DIR) live in the
# cache and keep the artifacts of every build they have seen; past the cap they start over.
target_dir="${KATA_RV_CACHE:-$HOME/.cache/kata-rv}/cargo-target"
cap_gib="${KATA_RV_TARGET_CAP_GIB:-40}"
if [[ -d $target_dir ]] && (( $(du -s --block-size=1G "$target_dir" | cut -f1) > cap_gib )); then
  echo "setup: $target_dir is over ${cap_gib} GiB: removing it (cargo rebuilds)"
  rm -rf "$target_dir"
fi
echo "setup: ok"
