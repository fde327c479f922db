//! A userspace RISC-V PLIC, for hosts whose KVM has no in-kernel AIA.
//!
//! Two contexts per hart (M-mode, unused; S-mode), up to 1023 sources, priorities 0..=7.
//! Sources are edge-triggered: [`PlicLine::trigger`] sets a pending bit; a claim returns
//! the best pending, enabled source above the context's threshold and clears it; a
//! complete ends its service. Whenever a hart's best candidate changes, its supervisor
//! external interrupt is raised or lowered through [`HartInterrupt`].

use std::io;
use std::sync::{Arc, Mutex};

use dbs_device::{DeviceIo, IoAddress};

use crate::InterruptLine;

/// Register window size (covers 0x20_0000 + 0x1000 per context for 512 contexts).
pub const PLIC_SIZE: u64 = 0x0400_0000;
/// Highest priority.
pub const MAX_PRIORITY: u32 = 7;

const PENDING_BASE: u64 = 0x1000;
const ENABLE_BASE: u64 = 0x2000;
const ENABLE_STRIDE: u64 = 0x80;
const CONTEXT_BASE: u64 = 0x20_0000;
const CONTEXT_STRIDE: u64 = 0x1000;

/// Raises or lowers one hart's supervisor external interrupt.
pub trait HartInterrupt: Send + Sync {
    /// Sets the line of `hart` to `asserted`.
    fn set(&self, hart: usize, asserted: bool) -> io::Result<()>;
}

struct State {
    priority: Vec<u32>,
    pending: Vec<bool>,
    in_service: Vec<bool>,
    /// enable[ctx][src]
    enable: Vec<Vec<bool>>,
    threshold: Vec<u32>,
    asserted: Vec<bool>,
}

/// The PLIC.
pub struct Plic {
    sources: usize,
    harts: usize,
    state: Mutex<State>,
    hart_irq: Box<dyn HartInterrupt>,
}

impl Plic {
    /// A PLIC with sources 1..`sources` for `harts` harts.
    pub fn new(sources: usize, harts: usize, hart_irq: Box<dyn HartInterrupt>) -> Self {
        let contexts = harts * 2;
        Plic {
            sources,
            harts,
            state: Mutex::new(State {
                priority: vec![0; sources],
                pending: vec![false; sources],
                in_service: vec![false; sources],
                enable: vec![vec![false; sources]; contexts],
                threshold: vec![0; contexts],
                asserted: vec![false; harts],
            }),
            hart_irq,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Best claimable source of S-context `ctx`.
    fn best(&self, s: &State, ctx: usize) -> Option<usize> {
        let mut best: Option<(u32, usize)> = None;
        for src in 1..self.sources {
            let prio = s.priority[src];
            let claimable = s.pending[src] && !s.in_service[src] && s.enable[ctx][src];
            if claimable && prio > s.threshold[ctx] && best.is_none_or(|(p, _)| prio > p) {
                best = Some((prio, src));
            }
        }
        best.map(|(_, src)| src)
    }

    fn update(&self, s: &mut State) {
        for hart in 0..self.harts {
            let want = self.best(s, hart * 2 + 1).is_some();
            if want != s.asserted[hart] {
                match self.hart_irq.set(hart, want) {
                    Ok(()) => s.asserted[hart] = want,
                    Err(e) => log_once(&e),
                }
            }
        }
    }

    /// Marks `source` pending (an edge).
    pub fn raise(&self, source: usize) {
        if source == 0 || source >= self.sources {
            return;
        }
        let mut s = self.lock();
        s.pending[source] = true;
        self.update(&mut s);
    }

    fn read_reg(&self, offset: u64) -> u32 {
        let mut s = self.lock();
        match offset {
            o if o < PENDING_BASE => s.priority.get((o / 4) as usize).copied().unwrap_or(0),
            o if o < ENABLE_BASE => {
                let word = ((o - PENDING_BASE) / 4) as usize;
                bits(&s.pending, word)
            }
            o if o < CONTEXT_BASE => {
                let ctx = ((o - ENABLE_BASE) / ENABLE_STRIDE) as usize;
                let word = (((o - ENABLE_BASE) % ENABLE_STRIDE) / 4) as usize;
                s.enable.get(ctx).map(|e| bits(e, word)).unwrap_or(0)
            }
            o => {
                let ctx = ((o - CONTEXT_BASE) / CONTEXT_STRIDE) as usize;
                if ctx >= s.threshold.len() {
                    return 0;
                }
                match (o - CONTEXT_BASE) % CONTEXT_STRIDE {
                    0 => s.threshold[ctx],
                    4 => {
                        // Claim: the best source leaves pending and enters service.
                        let Some(src) = self.best(&s, ctx) else {
                            return 0;
                        };
                        s.pending[src] = false;
                        s.in_service[src] = true;
                        self.update(&mut s);
                        src as u32
                    }
                    _ => 0,
                }
            }
        }
    }

    fn write_reg(&self, offset: u64, value: u32) {
        let mut s = self.lock();
        match offset {
            o if o < PENDING_BASE => {
                let src = (o / 4) as usize;
                if src > 0 && src < self.sources {
                    s.priority[src] = value.min(MAX_PRIORITY);
                }
            }
            o if o < ENABLE_BASE => {} // pending is read-only
            o if o < CONTEXT_BASE => {
                let ctx = ((o - ENABLE_BASE) / ENABLE_STRIDE) as usize;
                let word = (((o - ENABLE_BASE) % ENABLE_STRIDE) / 4) as usize;
                if let Some(e) = s.enable.get_mut(ctx) {
                    for bit in 0..32 {
                        let src = word * 32 + bit;
                        if src > 0 && src < e.len() {
                            e[src] = value & (1 << bit) != 0;
                        }
                    }
                }
            }
            o => {
                let ctx = ((o - CONTEXT_BASE) / CONTEXT_STRIDE) as usize;
                if ctx >= s.threshold.len() {
                    return;
                }
                match (o - CONTEXT_BASE) % CONTEXT_STRIDE {
                    0 => s.threshold[ctx] = value.min(MAX_PRIORITY),
                    4 => {
                        let src = value as usize;
                        if src < self.sources {
                            s.in_service[src] = false;
                        }
                    }
                    _ => return,
                }
            }
        }
        self.update(&mut s);
    }
}

fn bits(flags: &[bool], word: usize) -> u32 {
    (0..32).fold(0, |acc, bit| {
        let i = word * 32 + bit;
        if flags.get(i).copied().unwrap_or(false) {
            acc | (1 << bit)
        } else {
            acc
        }
    })
}

fn log_once(e: &io::Error) {
    use std::sync::atomic::{AtomicBool, Ordering};
    static LOGGED: AtomicBool = AtomicBool::new(false);
    if !LOGGED.swap(true, Ordering::Relaxed) {
        eprintln!("plic: setting a hart's external interrupt failed: {e}");
    }
}

impl DeviceIo for Plic {
    fn read(&self, _base: IoAddress, offset: IoAddress, data: &mut [u8]) {
        if data.len() == 4 {
            data.copy_from_slice(&self.read_reg(offset.raw_value()).to_le_bytes());
        } else {
            data.fill(0);
        }
    }

    fn write(&self, _base: IoAddress, offset: IoAddress, data: &[u8]) {
        if let Ok(bytes) = <[u8; 4]>::try_from(data) {
            self.write_reg(offset.raw_value(), u32::from_le_bytes(bytes));
        }
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

/// One PLIC source as an [`InterruptLine`].
pub struct PlicLine {
    plic: Arc<Plic>,
    source: usize,
}

impl PlicLine {
    /// The line of `source`.
    pub fn new(plic: Arc<Plic>, source: u32) -> Self {
        PlicLine {
            plic,
            source: source as usize,
        }
    }
}

impl InterruptLine for PlicLine {
    fn trigger(&self) -> io::Result<()> {
        self.plic.raise(self.source);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex as StdMutex;

    #[derive(Default, Clone)]
    struct Lines(Arc<StdMutex<Vec<(usize, bool)>>>);

    impl HartInterrupt for Lines {
        fn set(&self, hart: usize, asserted: bool) -> io::Result<()> {
            self.0.lock().unwrap().push((hart, asserted));
            Ok(())
        }
    }

    fn rd(p: &Plic, off: u64) -> u32 {
        let mut b = [0u8; 4];
        p.read(IoAddress(0), IoAddress(off), &mut b);
        u32::from_le_bytes(b)
    }

    fn wr(p: &Plic, off: u64, v: u32) {
        p.write(IoAddress(0), IoAddress(off), &v.to_le_bytes());
    }

    #[test]
    fn claim_and_complete_drive_the_hart_line() {
        let lines = Lines::default();
        let plic = Plic::new(32, 2, Box::new(lines.clone()));
        let s_ctx_hart1 = 3u64;
        wr(&plic, 4 * 5, 1); // priority of source 5
        wr(&plic, ENABLE_BASE + ENABLE_STRIDE * s_ctx_hart1, 1 << 5);
        plic.raise(5);
        assert_eq!(lines.0.lock().unwrap().last(), Some(&(1, true)));
        assert_eq!(rd(&plic, PENDING_BASE), 1 << 5);
        let claim = CONTEXT_BASE + CONTEXT_STRIDE * s_ctx_hart1 + 4;
        assert_eq!(rd(&plic, claim), 5);
        assert_eq!(lines.0.lock().unwrap().last(), Some(&(1, false)));
        assert_eq!(rd(&plic, claim), 0, "nothing left to claim");
        plic.raise(5); // arrives while in service: waits for completion
        assert_eq!(lines.0.lock().unwrap().last(), Some(&(1, false)));
        wr(&plic, claim, 5); // complete
        assert_eq!(lines.0.lock().unwrap().last(), Some(&(1, true)));
    }

    #[test]
    fn threshold_masks_and_garbage_is_ignored() {
        let lines = Lines::default();
        let plic = Plic::new(8, 1, Box::new(lines.clone()));
        wr(&plic, 4 * 3, 2);
        wr(&plic, ENABLE_BASE + ENABLE_STRIDE, 1 << 3);
        wr(&plic, CONTEXT_BASE + CONTEXT_STRIDE, 2); // threshold 2 masks priority 2
        plic.raise(3);
        assert!(lines.0.lock().unwrap().is_empty());
        // Out-of-range sources, contexts and widths do nothing and do not panic.
        plic.raise(0);
        plic.raise(1000);
        wr(&plic, CONTEXT_BASE + CONTEXT_STRIDE * 500, 1);
        wr(&plic, CONTEXT_BASE + CONTEXT_STRIDE * 500 + 4, 99);
        wr(&plic, ENABLE_BASE + ENABLE_STRIDE * 99, u32::MAX);
        let mut wide = [0u8; 8];
        plic.read(IoAddress(0), IoAddress(0), &mut wide);
        assert_eq!(rd(&plic, PLIC_SIZE - 4), 0);
        wr(&plic, CONTEXT_BASE + CONTEXT_STRIDE, 0);
        assert_eq!(lines.0.lock().unwrap().last(), Some(&(0, true)));
    }
}
