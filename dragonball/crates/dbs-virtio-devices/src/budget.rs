//! Bounded work per event. All devices share one event-loop thread with the VMM's API, and
//! a guest can refill a queue as fast as it is drained. So a device handles at most
//! [`CHAINS_PER_EVENT`] descriptor chains of a queue per turn of the loop, then re-arms
//! the queue's eventfd: the loop serves every other ready source first and comes back for
//! the rest. A guest that keeps a queue busy delays only its own device.

use vmm_sys_util::eventfd::EventFd;

/// Most descriptor chains of one queue handled per event.
pub const CHAINS_PER_EVENT: usize = 256;

/// What is left of one event's work on one queue.
#[derive(Debug)]
pub struct Budget {
    left: usize,
}

impl Budget {
    /// A full budget for one event.
    pub fn per_event() -> Self {
        Self {
            left: CHAINS_PER_EVENT,
        }
    }

    /// Spends one chain's worth; false once nothing is left.
    pub fn take(&mut self) -> bool {
        if self.left == 0 {
            return false;
        }
        self.left -= 1;
        true
    }

    /// Whether it ran out, so more work may be waiting.
    pub fn spent(&self) -> bool {
        self.left == 0
    }

    /// Re-arms `kick` if the budget ran out, so the rest is handled on a later turn.
    pub fn rearm_if_spent(&self, kick: &EventFd) {
        if self.spent()
            && let Err(e) = kick.write(1)
        {
            log::warn!("re-arming a queue event: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spent_budget_rearms_its_queue() {
        let kick = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let mut budget = Budget::per_event();
        let mut taken = 0;
        while budget.take() {
            taken += 1;
        }
        assert_eq!(taken, CHAINS_PER_EVENT);
        budget.rearm_if_spent(&kick);
        assert_eq!(kick.read().unwrap(), 1);
        let fresh = Budget::per_event();
        fresh.rearm_if_spent(&kick);
        assert!(kick.read().is_err(), "an unspent budget does not re-arm");
    }
}
