# Sourced by the host side of each bench: `kvm_host ARGS…` runs the KVM test host harness
# from cargo's target dir (the Makefile's CARGO_TARGET_DIR, by default in the cache).
kvm_host() {
  "${CARGO_TARGET_DIR:-${KATA_RV_CACHE:-$HOME/.cache/kata-rv}/cargo-target}/release/kvm-host" "$@"
}
