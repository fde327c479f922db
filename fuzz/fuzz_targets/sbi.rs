//! The riscv64 SBI calls KVM hands the VMM (legacy console, DBCN, vendor and experimental
//! ranges): any extension, function and arguments, decoded and served against a small
//! guest memory. A call never prints more than one DBCN chunk, never reads outside
//! guest memory, and answers only with the error codes the SBI spec defines.
#![no_main]

use dbs_arch::riscv64::sbi::{self, DBCN_MAX_CHUNK, SbiCall};
use libfuzzer_sys::fuzz_target;
use vm_memory::{GuestAddress, GuestMemoryMmap};

const RAM_BASE: u64 = 0x8000_0000;
const RAM_SIZE: usize = 0x2000;

fuzz_target!(|input: (u64, u64, [u64; 6])| {
    let (ext, func, args) = input;
    let memory: GuestMemoryMmap =
        GuestMemoryMmap::from_ranges(&[(GuestAddress(RAM_BASE), RAM_SIZE)]).unwrap();
    let call = sbi::decode(ext, func, &args);
    let mut console = Vec::new();
    let ret = sbi::serve(call, &memory, &mut console);
    assert!(
        [
            sbi::SUCCESS,
            sbi::ERR_FAILURE,
            sbi::ERR_NOT_SUPPORTED,
            sbi::ERR_INVALID_PARAM
        ]
        .contains(&ret.error),
        "{call:?} -> {ret:?}"
    );
    assert!(
        console.len() as u64 <= DBCN_MAX_CHUNK,
        "{call:?} printed {}",
        console.len()
    );
    if let SbiCall::DbcnWrite { len, addr } = call {
        // Writing nothing succeeds wherever it points.
        let inside = len == 0
            || addr >= RAM_BASE
                && addr
                    .checked_add(len)
                    .is_some_and(|end| end <= RAM_BASE + RAM_SIZE as u64);
        assert_eq!(ret.error == sbi::SUCCESS, inside, "{call:?} -> {ret:?}");
        if inside {
            assert_eq!(ret.value, len);
            assert_eq!(console.len() as u64, len);
        } else {
            assert!(console.is_empty(), "a refused write printed");
        }
    }
});
