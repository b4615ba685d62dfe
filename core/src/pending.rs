//! A ceiling on what anonymous clients can make the store hold.
//!
//! Protocol flows that must remember a request before the user has signed in
//! (an OIDC authorization request, a SAML AuthnRequest, a delegation state)
//! ask here first. Each lives at most one `window`; counting the admissions
//! of the last window bounds how many can be alive at once, per node. Past
//! the ceiling the request gets a 503 rather than the server its memory.
//! A flow that completes gives its place back ([`PendingFlowBudget::release`]),
//! so the count is of flows alive or abandoned, not of every sign-in: the
//! ceiling bounds memory, not the rate of sign-ins.
//! Under pressure (past half the ceiling) one client address gets at most a
//! share of it, so that a single anonymous client cannot shut everyone else
//! out; below that, many users behind one address (a campus NAT) sign in
//! freely.

use crate::clock::Clock;
use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

const SLOTS: u64 = 32;
/// One address may hold this fraction of the ceiling.
const ADDRESS_SHARE: u64 = 20;
/// Addresses tracked per window; past it, new addresses share the global
/// budget only (the map itself must stay bounded).
const MAX_ADDRESSES: usize = 100_000;

/// IPv6 clients get a /64 each, so one network is one client.
fn address_key(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => u128::from(u32::from(v4)),
            None => u128::from(v6) & !((1u128 << 64) - 1),
        },
    }
}

pub struct PendingFlowBudget {
    ceiling: u64,
    slot_ms: u64,
    clock: Arc<dyn Clock>,
    /// (slot number, admissions in it), oldest first, and their sum.
    slots: parking_lot::Mutex<(VecDeque<(u64, u64)>, u64)>,
    /// Admissions per address in the current fixed window (its number).
    addresses: parking_lot::Mutex<(u64, HashMap<u128, u64>)>,
}

impl PendingFlowBudget {
    pub fn new(ceiling: u64, window: Duration, clock: Arc<dyn Clock>) -> Self {
        Self {
            ceiling,
            slot_ms: (window.as_millis() as u64 / SLOTS).max(1000),
            clock,
            slots: parking_lot::Mutex::new((VecDeque::new(), 0)),
            addresses: parking_lot::Mutex::new((0, HashMap::new())),
        }
    }

    /// Counts one pending flow of `client`; `false` when the ceiling, or
    /// that address's share of it, is reached.
    pub fn admit(&self, client: Option<IpAddr>) -> bool {
        if let Some(ip) = client {
            let window = self.clock.now() / (self.slot_ms * SLOTS);
            let share = (self.ceiling / ADDRESS_SHARE).max(1);
            let mut guard = self.addresses.lock();
            let (current, counts) = &mut *guard;
            if *current != window {
                *current = window;
                counts.clear();
            }
            let key = address_key(ip);
            let tracked = counts.len();
            let pressed = self.slots.lock().1 >= self.ceiling / 2;
            match counts.get_mut(&key) {
                Some(n) if *n >= share && pressed => return false,
                Some(n) => *n += 1,
                None if tracked < MAX_ADDRESSES => {
                    counts.insert(key, 1);
                }
                None => {}
            }
        }
        self.admit_globally()
    }

    /// Gives back the place of a flow that completed (its record taken).
    /// The place is taken from the newest slot that has one: a flow most
    /// often completes within seconds, in the slot that admitted it.
    pub fn release(&self) {
        let mut guard = self.slots.lock();
        let (slots, total) = &mut *guard;
        if let Some((_, count)) = slots.iter_mut().rev().find(|(_, c)| *c > 0) {
            *count -= 1;
            *total -= 1;
        }
    }

    fn admit_globally(&self) -> bool {
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
            assert!(budget.admit(None));
        }
        clock.advance(Duration::from_secs(30));
        for _ in 0..40 {
            assert!(budget.admit(None));
        }
        assert!(!budget.admit(None), "ceiling reached");
        clock.advance(Duration::from_secs(40));
        assert!(budget.admit(None), "the first 60 have expired");
        for _ in 0..59 {
            assert!(budget.admit(None));
        }
        assert!(!budget.admit(None));
        clock.advance(Duration::from_secs(200));
        assert!(budget.admit(None), "all expired");
    }

    #[test]
    fn completed_flows_give_their_place_back() {
        let clock = Arc::new(ManualClock::new(1_700_000_000_000));
        let budget = PendingFlowBudget::new(100, Duration::from_secs(64), clock.clone());
        let nat: IpAddr = "192.0.2.7".parse().unwrap();
        // Ten times the ceiling from one address, each completed: no refusal.
        for _ in 0..1000 {
            assert!(budget.admit(Some(nat)));
            budget.release();
        }
        for _ in 0..100 {
            assert!(budget.admit(None));
        }
        assert!(!budget.admit(None), "abandoned flows still count");
        budget.release();
        assert!(budget.admit(None));
        // Releasing more than was admitted never wraps.
        let empty = PendingFlowBudget::new(10, Duration::from_secs(64), clock);
        empty.release();
        for _ in 0..10 {
            assert!(empty.admit(None));
        }
        assert!(!empty.admit(None));
    }

    #[test]
    fn one_address_gets_only_its_share() {
        let clock = Arc::new(ManualClock::new(1_700_000_000_000));
        let budget = PendingFlowBudget::new(1000, Duration::from_secs(64), clock.clone());
        // Shares apply under pressure: past half the ceiling.
        for _ in 0..500 {
            assert!(budget.admit(None));
        }
        let flooder: IpAddr = "192.0.2.1".parse().unwrap();
        let same_net: IpAddr = "2001:db8::1".parse().unwrap();
        let same_net_too: IpAddr = "2001:db8::ffff:2".parse().unwrap();
        for _ in 0..50 {
            assert!(budget.admit(Some(flooder)));
        }
        assert!(!budget.admit(Some(flooder)), "a twentieth of the ceiling");
        assert!(
            budget.admit(Some("192.0.2.2".parse().unwrap())),
            "others go on"
        );
        for _ in 0..49 {
            assert!(budget.admit(Some(same_net)));
        }
        assert!(budget.admit(Some(same_net_too)));
        assert!(!budget.admit(Some(same_net_too)), "one /64 is one client");
        clock.advance(Duration::from_secs(70));
        assert!(budget.admit(Some(flooder)), "a new window");
    }

    #[test]
    fn below_half_the_ceiling_one_address_is_not_held_to_its_share() {
        let clock = Arc::new(ManualClock::new(1_700_000_000_000));
        let budget = PendingFlowBudget::new(1000, Duration::from_secs(64), clock);
        let nat: IpAddr = "192.0.2.9".parse().unwrap();
        for _ in 0..500 {
            assert!(budget.admit(Some(nat)), "a campus behind one address");
        }
        assert!(!budget.admit(Some(nat)), "under pressure, its share again");
    }
}
