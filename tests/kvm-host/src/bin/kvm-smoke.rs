//! Runs the KVM smoke test of this binary's architecture and prints what it saw.
//! Exit status 0 only if every step passed.

fn main() {
    let mut report = kvm_host::smoke::Report::default();
    match kvm_host::smoke::run(&mut report) {
        Ok(()) => {}
        Err(e) => {
            eprintln!("kvm-smoke: FAIL: {e:#}");
            std::process::exit(1);
        }
    }
}
