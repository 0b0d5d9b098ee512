//! Whether any other replica listens, and the wake-ups held back while none seems to.
//!
//! A committed change's keys go to the other replicas as a NOTIFY (`announce`). A
//! replica alone on its database sends them to nobody but itself, which discards them:
//! a statement, a delivery and two wake-ups per batch for nothing. So a replica that
//! believes itself alone holds its keys instead, and drops them once it hears a
//! liveness NOTIFY of its own that was sent after they were held, provided it heard no
//! other replica before that NOTIFY. Anything from another replica ends the holding for
//! good (this process's lifetime): the held keys go out, and so does everything after.
//!
//! Why dropping is safe. Notifications reach every listener in commit order. Every
//! replica, each time its LISTEN becomes active (start or reconnect), NOTIFYs `hello`
//! and, once that has committed, wakes all of its waiters (which then look at
//! storage). A replica that hears another's `hello` answers with a NOTIFY of its own
//! and, once that has committed, wakes all of its waiters too. Let this replica drop a
//! change W, committed before its own NOTIFY P, having heard no other replica before
//! P. Any other replica R that could wait for W either
//! - started listening after P: its waiters look at storage after its `hello`, which
//!   committed after P and so after W; or
//! - was listening before P: then R's `hello` was sent before P, and this replica heard
//!   it (and never held W) unless it was not listening then; in which case its own
//!   `hello` followed, R answered, and that answer committed after P (this replica
//!   heard nothing of R before P), and R's waiters looked at storage after it.
//!
//! A lost LISTEN connection (this replica cannot know what it missed) sends the held
//! keys and starts over: holding again needs a `hello` and [`PROBATION`] of its own
//! NOTIFYs heard with nobody else's among them. The probation also covers replicas of
//! earlier versions, which do not answer `hello` but NOTIFY once a period.

use std::{collections::HashMap, sync::Mutex};

use agentry_core::wake::WakeKey;

/// Own liveness NOTIFYs heard, after the `hello`, before a replica holds its keys.
pub(crate) const PROBATION: u32 = 3;

/// Keys held at most; beyond, they are sent as if another replica listened.
const MAX_HELD: usize = 65_536;

/// Shared by the announcer (which holds), the liveness NOTIFYs (which number
/// themselves here) and the listener (which confirms and ends the holding).
#[derive(Default)]
pub(crate) struct Company(Mutex<State>);

#[derive(Default)]
struct State {
    /// Another replica was heard: keys always go out.
    shared: bool,
    /// This replica's `hello` has committed since its LISTEN last became active.
    greeted: bool,
    /// Own liveness NOTIFYs heard since then.
    heard: u32,
    /// Liveness NOTIFYs numbered so far (the next is `started + 1`).
    started: u64,
    /// Held keys, each with the number of the last liveness NOTIFY started before it was
    /// held: a NOTIFY numbered higher was sent after the key's change committed.
    held: HashMap<WakeKey, u64>,
}

impl State {
    fn alone(&self) -> bool {
        !self.shared && self.greeted && self.heard >= PROBATION
    }

    fn release(&mut self) -> Vec<WakeKey> {
        self.held.drain().map(|(key, _)| key).collect()
    }
}

impl Company {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Holds the keys of a committed change when this replica is alone; `false`: send
    /// them.
    pub(crate) fn hold(&self, keys: &[WakeKey]) -> bool {
        let mut state = self.state();
        if !state.alone() || state.held.len() + keys.len() > MAX_HELD {
            return false;
        }
        let started = state.started;
        for key in keys {
            state.held.insert(key.clone(), started);
        }
        true
    }

    /// The number of a liveness NOTIFY about to be sent.
    pub(crate) fn ping_starting(&self) -> u64 {
        let mut state = self.state();
        state.started += 1;
        state.started
    }

    /// This replica's `hello` has committed on its current LISTEN connection.
    pub(crate) fn greeted(&self) {
        self.state().greeted = true;
    }

    /// This replica heard its own liveness NOTIFY `number`: the keys held before it was
    /// sent are dropped, unless another replica was heard first.
    pub(crate) fn heard_own(&self, number: u64) {
        let mut state = self.state();
        if state.shared || !state.greeted {
            return;
        }
        state.heard = state.heard.saturating_add(1);
        if state.heard == PROBATION {
            tracing::info!(
                "the change feed hears no other replica: committed changes are no longer NOTIFYed"
            );
        }
        state.held.retain(|_, held_at| *held_at >= number);
    }

    /// Another replica was heard: the keys held so far, to send now (as all later ones).
    pub(crate) fn heard_other(&self) -> Vec<WakeKey> {
        let mut state = self.state();
        if state.alone() {
            tracing::info!(
                "the change feed hears another replica: committed changes are NOTIFYed again"
            );
        }
        state.shared = true;
        state.release()
    }

    /// The LISTEN connection was lost: what was missed meanwhile is unknown. The keys
    /// held so far, to send now; holding again needs a new `hello` and probation.
    pub(crate) fn lost(&self) -> Vec<WakeKey> {
        let mut state = self.state();
        state.greeted = false;
        state.heard = 0;
        state.release()
    }

    #[cfg(test)]
    fn held(&self) -> usize {
        self.state().held.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u32) -> WakeKey {
        WakeKey::context("w", "p", &format!("c{n}"))
    }

    /// A company past its `hello` and probation: holding.
    fn alone() -> Company {
        let company = Company::default();
        company.greeted();
        for _ in 0..PROBATION {
            let n = company.ping_starting();
            company.heard_own(n);
        }
        company
    }

    #[test]
    fn keys_are_sent_until_the_hello_and_the_probation_are_over() {
        let company = Company::default();
        assert!(!company.hold(&[key(1)]), "not greeted");
        let n = company.ping_starting();
        company.heard_own(n);
        assert!(
            !company.hold(&[key(1)]),
            "pings before the hello do not count"
        );
        company.greeted();
        for _ in 1..PROBATION {
            let n = company.ping_starting();
            company.heard_own(n);
            assert!(!company.hold(&[key(1)]), "on probation");
        }
        let n = company.ping_starting();
        company.heard_own(n);
        assert!(company.hold(&[key(1)]));
    }

    #[test]
    fn held_keys_go_once_a_notify_sent_after_them_is_heard() {
        let company = alone();
        let before = company.ping_starting();
        assert!(company.hold(&[key(1), key(2)]));
        company.heard_own(before);
        assert_eq!(
            company.held(),
            2,
            "that NOTIFY may have been sent before the keys"
        );
        let after = company.ping_starting();
        assert!(company.hold(&[key(3)]));
        company.heard_own(after);
        assert_eq!(company.held(), 1, "key 3 came after NOTIFY {after} started");
        let last = company.ping_starting();
        company.heard_own(last);
        assert_eq!(company.held(), 0);
    }

    #[test]
    fn another_replica_ends_the_holding_for_good_and_gets_what_was_held() {
        let company = alone();
        assert!(company.hold(&[key(1)]));
        assert_eq!(company.heard_other(), vec![key(1)]);
        assert!(!company.hold(&[key(2)]));
        company.greeted();
        for _ in 0..=PROBATION {
            let n = company.ping_starting();
            company.heard_own(n);
        }
        assert!(!company.hold(&[key(2)]), "shared stays shared");
    }

    #[test]
    fn a_lost_connection_sends_what_was_held_and_restarts_the_probation() {
        let company = alone();
        assert!(company.hold(&[key(1), key(1), key(2)]));
        let mut released = company.lost();
        released.sort();
        assert_eq!(released, vec![key(1), key(2)]);
        assert!(!company.hold(&[key(3)]), "not greeted since");
        company.greeted();
        assert!(!company.hold(&[key(3)]), "on probation again");
    }

    #[test]
    fn at_most_so_many_keys_are_held() {
        let company = alone();
        let many: Vec<WakeKey> = (0..MAX_HELD as u32).map(key).collect();
        assert!(company.hold(&many));
        assert!(!company.hold(&[key(u32::MAX)]));
    }
}
