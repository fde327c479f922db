//! The userspace PLIC: any sequence of register reads and writes (priorities, pending,
//! enables, thresholds, claims, completes, out-of-range contexts and sources) and
//! device interrupts. A claim only ever returns a source that exists.
#![no_main]

use std::sync::Arc;

use arbitrary::Arbitrary;
use dbs_device::{DeviceIo, IoAddress};
use dbs_interrupt::plic::{HartInterrupt, PLIC_SIZE, Plic};
use libfuzzer_sys::fuzz_target;

const SOURCES: usize = 32;
const HARTS: usize = 2;

struct Harts;
impl HartInterrupt for Harts {
    fn set(&self, hart: usize, _asserted: bool) -> std::io::Result<()> {
        assert!(hart < HARTS, "the PLIC signalled hart {hart} of {HARTS}");
        Ok(())
    }
}

#[derive(Arbitrary, Debug)]
enum PlicOp {
    Write {
        offset: u32,
        width: u8,
        value: u32,
    },
    Read {
        offset: u32,
        width: u8,
    },
    /// A claim/complete register (context `ctx`): where the interesting state lives.
    Claim {
        ctx: u8,
    },
    Complete {
        ctx: u8,
        source: u16,
    },
    Raise {
        source: u16,
    },
}

fn context_reg(ctx: u8) -> u64 {
    0x20_0000 + u64::from(ctx % 6) * 0x1000 + 4
}

fuzz_target!(|ops: Vec<PlicOp>| {
    let plic = Arc::new(Plic::new(SOURCES, HARTS, Box::new(Harts)));
    let base = IoAddress(0);
    for op in ops {
        match op {
            PlicOp::Write {
                offset,
                width,
                value,
            } => {
                let bytes = value.to_le_bytes();
                let n = usize::from(width % 5);
                plic.write(base, IoAddress(u64::from(offset) % PLIC_SIZE), &bytes[..n]);
            }
            PlicOp::Read { offset, width } => {
                let mut buf = vec![0u8; usize::from(width % 9)];
                plic.read(base, IoAddress(u64::from(offset) % PLIC_SIZE), &mut buf);
            }
            PlicOp::Claim { ctx } => {
                let mut buf = [0u8; 4];
                plic.read(base, IoAddress(context_reg(ctx)), &mut buf);
                let claimed = u32::from_le_bytes(buf) as usize;
                assert!(claimed < SOURCES, "claimed source {claimed} of {SOURCES}");
            }
            PlicOp::Complete { ctx, source } => {
                plic.write(
                    base,
                    IoAddress(context_reg(ctx)),
                    &u32::from(source).to_le_bytes(),
                );
            }
            PlicOp::Raise { source } => plic.raise(usize::from(source)),
        }
    }
});
