//! A ceiling on what anonymous clients can make the store hold.
//!
//! Protocol flows that must remember a request before the user has signed in
//! (an OIDC authorization request, a SAML AuthnRequest, a delegation state)
//! ask here first. Each lives at most one `window`; counting the admissions
//! of the last window bounds how many can be alive at once, per node. Past
//! the ceiling the request gets a 503 rather than the server its memory.

use crate::clock::Clock;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

const SLOTS: u64 = 32;

pub struct PendingFlowBudget {
    ceiling: u64,
    slot_ms: u64,
    clock: Arc<dyn Clock>,
    /// (slot number, admissions in it), oldest first, and their sum.
    slots: parking_lot::Mutex<(VecDeque<(u64, u64)>, u64)>,
}

impl PendingFlowBudget {
    pub fn new(ceiling: u64, window: Duration, clock: Arc<dyn Clock>) -> Self {
        Self {
            ceiling,
            slot_ms: (window.as_millis() as u64 / SLOTS).max(1000),
            clock,
            slots: parking_lot::Mutex::new((VecDeque::new(), 0)),
        }
    }

    /// Counts one pending flow; `false` when the ceiling is reached.
    pub fn admit(&self) -> bool {
        let now = self.clock.now() / self.slot_ms;
        let mut guard = self.slots.lock();
        let (slots, total) = &mut *guard;
        // One extra slot: a flow admitted at the start of the oldest slot may
        // still be alive at its end.
        while slots.front().is_some_and(|(n, _)| *n + SLOTS < now) {
            if let Some((_, count)) = slots.pop_front() {
                *total -= count;
            }
        }
        if *total >= self.ceiling {
            return false;
        }
        match slots.back_mut() {
            Some((n, count)) if *n == now => *count += 1,
            _ => slots.push_back((now, 1)),
        }
        *total += 1;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    #[test]
    fn the_ceiling_holds_until_the_window_has_passed() {
        let clock = Arc::new(ManualClock::new(1_700_000_000_000));
        let budget = PendingFlowBudget::new(100, Duration::from_secs(64), clock.clone());
        for _ in 0..60 {
            assert!(budget.admit());
        }
        clock.advance(Duration::from_secs(30));
        for _ in 0..40 {
            assert!(budget.admit());
        }
        assert!(!budget.admit(), "ceiling reached");
        clock.advance(Duration::from_secs(40));
        assert!(budget.admit(), "the first 60 have expired");
        for _ in 0..59 {
            assert!(budget.admit());
        }
        assert!(!budget.admit());
        clock.advance(Duration::from_secs(200));
        assert!(budget.admit(), "all expired");
    }
}
