//! The change feed: how a waiter learns that what it waits for changed. Storage is the
//! truth; a wake-up only says "look again". The store publishes the [`WakeKey`]s of
//! each committed transaction to the [`Registry`] of every replica (its own directly,
//! the others' through its database); a waiter subscribes to its keys before its first
//! look at storage, so no change between that look and its wait is lost.

mod registry;

pub use registry::{Registry, Subscription};

use crate::wake::WakeKey;

/// The port through which the server waits for changes.
pub trait ChangeFeed: Send + Sync {
    /// A waiter on `keys`: woken when a change of any of them commits, on any replica.
    fn subscribe(&self, keys: Vec<WakeKey>) -> Subscription;
    /// Waiters woken so far in this process (a test and metrics hook).
    fn wakeups(&self) -> u64;
    /// Waiters registered now (one per key a waiter follows).
    fn waiting(&self) -> usize;
}
