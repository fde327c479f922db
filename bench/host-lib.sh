# Sourced by the host side of each bench: `kvm_host ARGS…` runs the KVM test host harness
# from cargo's target dir (the Makefile exports CARGO_TARGET_DIR; by default the cache's
# dir for this clone's path).
kvm_host() {
  local root dir
  root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
  dir="${KATA_RV_CACHE:-$HOME/.cache/kata-rv}/cargo-target/$(printf %s "$root" | sha256sum | cut -c1-12)"
  "${CARGO_TARGET_DIR:-$dir}/release/kvm-host" "$@"
}
