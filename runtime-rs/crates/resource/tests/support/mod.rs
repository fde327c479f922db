//! What the root tests of this crate share.

/// Whether this test can run: root, or a failure when `KATA_TEST_REQUIRE_KVM=1` (CI)
/// requires it, else a printed skip.
pub fn has_root() -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    assert!(
        std::env::var("KATA_TEST_REQUIRE_KVM").as_deref() != Ok("1"),
        "this test needs root"
    );
    eprintln!("SKIPPED: needs root");
    false
}
