//! Runs the KVM smoke test of this binary's architecture and prints what it saw.
//! Exit status 0 only if every step passed.

fn main() {
    match kvm_host::smoke::run() {
        Ok(report) => {
            for line in report {
                println!("{line}");
            }
        }
        Err(e) => {
            eprintln!("kvm-smoke: FAIL: {e:#}");
            std::process::exit(1);
        }
    }
}
