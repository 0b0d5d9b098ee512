//! The waiters of this process, by key (as etcd's watcher groups: a map from key to its
//! waiters, not a broadcast that every waiter filters). Publishing a key touches only the
//! waiters of that key:
//!
//! - a context or run key wakes each of its waiters;
//! - a queue key wakes one waiter of that agent's queue that is not already woken (the
//!   oldest first): a new run is work for one poller, not for all of them. A waiter that
//!   goes away woken but before it looked hands the wake-up on to the next;
//! - a queue key of any agent (a slot was freed) wakes one waiter per agent queue of
//!   the workspace;
//! - an `Under` key (a delete) wakes every context and run waiter beneath it.
//!
//! A wake-up is a flag and a permit: a waiter woken while it was not waiting finds it
//! when it next waits, so a change published between a look at storage and the wait that
//! follows is never lost, and many changes before one wait cost one look.

use std::{
    collections::BTreeMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
};

use crate::wake::WakeKey;
use tokio::sync::Notify;

type Waiters = BTreeMap<u64, Arc<Waiter>>;

#[derive(Default)]
pub struct Registry {
    inner: Mutex<Inner>,
    /// Waiters woken so far (each wake-up of each waiter once).
    wakeups: AtomicU64,
}

#[derive(Default)]
struct Inner {
    next_id: u64,
    keys: BTreeMap<WakeKey, Waiters>,
}

#[derive(Default)]
struct Waiter {
    /// Set by a wake-up, cleared when the waiter takes it.
    woken: AtomicBool,
    notify: Notify,
}

/// One waiter's interest in some keys; dropping it unregisters them.
pub struct Subscription {
    id: u64,
    keys: Vec<WakeKey>,
    waiter: Arc<Waiter>,
    registry: Arc<Registry>,
}

impl Subscription {
    /// Resolves once a change of one of the keys was published since the last call (or
    /// since the subscription, for the first). Cancel-safe: a wake-up not taken stays.
    pub async fn changed(&self) {
        self.waiter.notify.notified().await;
        // Cleared before the waiter looks at storage: a change published from now on
        // wakes it again.
        self.waiter.woken.store(false, Ordering::SeqCst);
    }

    pub fn keys(&self) -> &[WakeKey] {
        &self.keys
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let mut inner = self.registry.inner.lock().expect("feed registry lock");
        for key in &self.keys {
            if let Some(waiters) = inner.keys.get_mut(key) {
                waiters.remove(&self.id);
                if waiters.is_empty() {
                    inner.keys.remove(key);
                }
            }
        }
        // A queue wake-up this waiter got but never acted on is work for another.
        if self.waiter.woken.load(Ordering::SeqCst) {
            for key in self
                .keys
                .iter()
                .filter(|k| matches!(k, WakeKey::Queue { .. }))
            {
                if let Some(waiters) = inner.keys.get(key) {
                    self.registry.wake_one(waiters);
                }
            }
        }
    }
}

impl Registry {
    /// Registers a waiter on `keys` (all of them are one waiter: a wake-up on any).
    pub fn subscribe(self: &Arc<Self>, keys: Vec<WakeKey>) -> Subscription {
        let waiter = Arc::new(Waiter::default());
        let mut inner = self.inner.lock().expect("feed registry lock");
        inner.next_id += 1;
        let id = inner.next_id;
        for key in &keys {
            inner
                .keys
                .entry(key.clone())
                .or_default()
                .insert(id, waiter.clone());
        }
        Subscription {
            id,
            keys,
            waiter,
            registry: self.clone(),
        }
    }

    /// Wakes the waiters `key` concerns (see the module doc).
    pub fn publish(&self, key: &WakeKey) {
        let inner = self.inner.lock().expect("feed registry lock");
        match key {
            WakeKey::Context { .. } | WakeKey::Run { .. } => {
                if let Some(waiters) = inner.keys.get(key) {
                    self.wake_each(waiters);
                }
            }
            WakeKey::Queue { agent: Some(_), .. } => {
                if let Some(waiters) = inner.keys.get(key) {
                    self.wake_one(waiters);
                }
            }
            WakeKey::Queue {
                workspace,
                agent: None,
            } => {
                // Keys order by variant, then workspace, then agent (None first).
                for (queue, waiters) in inner.keys.range(key.clone()..) {
                    if !matches!(queue, WakeKey::Queue { workspace: w, .. } if w == workspace) {
                        break;
                    }
                    self.wake_one(waiters);
                }
            }
            WakeKey::Under { workspace, project } => {
                for (under, waiters) in &inner.keys {
                    if under.is_under(workspace, project.as_deref()) {
                        self.wake_each(waiters);
                    }
                }
            }
        }
    }

    /// Wakes every waiter: wake-ups may have been lost (the connection that carries
    /// other replicas' changes dropped), so everyone looks at storage once.
    pub fn wake_all(&self) {
        let inner = self.inner.lock().expect("feed registry lock");
        for waiters in inner.keys.values() {
            self.wake_each(waiters);
        }
    }

    /// Waiters woken so far.
    pub fn wakeups(&self) -> u64 {
        self.wakeups.load(Ordering::Relaxed)
    }

    /// Waiters registered now (a waiter on several keys counts once per key).
    pub fn waiting(&self) -> usize {
        let inner = self.inner.lock().expect("feed registry lock");
        inner.keys.values().map(BTreeMap::len).sum()
    }

    fn wake_each(&self, waiters: &Waiters) {
        for waiter in waiters.values() {
            self.wake(waiter);
        }
    }

    /// Wakes the oldest waiter that is not woken already, if any.
    fn wake_one(&self, waiters: &Waiters) {
        for waiter in waiters.values() {
            if self.wake(waiter) {
                return;
            }
        }
    }

    /// False when the waiter was woken already (it will look anyway).
    fn wake(&self, waiter: &Waiter) -> bool {
        if waiter.woken.swap(true, Ordering::SeqCst) {
            return false;
        }
        self.wakeups.fetch_add(1, Ordering::Relaxed);
        waiter.notify.notify_one();
        true
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn registry() -> Arc<Registry> {
        Arc::new(Registry::default())
    }

    /// Whether the subscription has a wake-up waiting (taking it).
    async fn woken(s: &Subscription) -> bool {
        tokio::time::timeout(Duration::from_millis(20), s.changed())
            .await
            .is_ok()
    }

    fn context(c: &str) -> WakeKey {
        WakeKey::context("w", "p", c)
    }

    #[tokio::test]
    async fn a_key_wakes_its_own_waiters_only() {
        let r = registry();
        let a1 = r.subscribe(vec![context("a")]);
        let a2 = r.subscribe(vec![context("a")]);
        let b = r.subscribe(vec![context("b")]);
        let run = r.subscribe(vec![WakeKey::run("w", "p", "a")]);
        r.publish(&context("a"));
        assert!(woken(&a1).await && woken(&a2).await);
        assert!(!woken(&b).await && !woken(&run).await);
        assert_eq!(r.wakeups(), 2);
        // Nothing of another workspace or project either.
        r.publish(&WakeKey::context("v", "p", "b"));
        r.publish(&WakeKey::context("w", "q", "b"));
        assert!(!woken(&b).await);
    }

    #[tokio::test]
    async fn a_change_before_the_wait_is_not_lost_and_many_cost_one_look() {
        let r = registry();
        let s = r.subscribe(vec![context("a")]);
        for _ in 0..5 {
            r.publish(&context("a"));
        }
        assert!(woken(&s).await);
        assert!(!woken(&s).await, "five changes, one look");
        assert_eq!(r.wakeups(), 1);
        r.publish(&context("a"));
        assert!(woken(&s).await, "taken wake-ups re-arm");
    }

    #[tokio::test]
    async fn a_waiting_task_is_woken() {
        let r = registry();
        let s = r.subscribe(vec![context("a")]);
        let waiting = tokio::spawn(async move {
            s.changed().await;
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        r.publish(&context("a"));
        tokio::time::timeout(Duration::from_secs(1), waiting)
            .await
            .expect("woken")
            .unwrap();
    }

    #[tokio::test]
    async fn a_queue_key_wakes_one_idle_poller_of_that_agent_oldest_first() {
        let r = registry();
        let q = |a: &str| WakeKey::queue("w", a);
        let first = r.subscribe(vec![q("echo")]);
        let second = r.subscribe(vec![q("echo"), q("other")]);
        let third = r.subscribe(vec![q("echo")]);
        let other = r.subscribe(vec![q("other")]);
        r.publish(&q("echo"));
        assert_eq!(r.wakeups(), 1);
        r.publish(&q("echo"));
        assert_eq!(r.wakeups(), 2, "the next run goes to the next idle poller");
        assert!(woken(&first).await && woken(&second).await);
        assert!(!woken(&third).await && !woken(&other).await);
        // A woken poller is not woken twice; with none idle, the wake-up has no taker
        // (every woken poller looks, and a new poll looks before it waits).
        r.publish(&q("echo"));
        r.publish(&q("echo"));
        r.publish(&q("echo"));
        assert_eq!(r.wakeups(), 5);
        assert!(woken(&first).await && woken(&second).await && woken(&third).await);
    }

    #[tokio::test]
    async fn a_freed_slot_wakes_one_poller_per_agent_queue_of_the_workspace() {
        let r = registry();
        let echo = [
            r.subscribe(vec![WakeKey::queue("w", "echo")]),
            r.subscribe(vec![WakeKey::queue("w", "echo")]),
        ];
        let other = r.subscribe(vec![WakeKey::queue("w", "other")]);
        let elsewhere = r.subscribe(vec![WakeKey::queue("v", "echo")]);
        let watcher = r.subscribe(vec![WakeKey::context("w", "p", "c")]);
        r.publish(&WakeKey::any_queue("w"));
        assert_eq!(r.wakeups(), 2);
        assert!(woken(&echo[0]).await && !woken(&echo[1]).await);
        assert!(woken(&other).await);
        assert!(!woken(&elsewhere).await && !woken(&watcher).await);
    }

    #[tokio::test]
    async fn a_poller_that_leaves_woken_hands_its_wake_up_on() {
        let r = registry();
        let leaving = r.subscribe(vec![WakeKey::queue("w", "echo")]);
        let staying = r.subscribe(vec![WakeKey::queue("w", "echo")]);
        r.publish(&WakeKey::queue("w", "echo"));
        drop(leaving);
        assert!(woken(&staying).await);
        // One that took its wake-up (and looked) hands nothing on.
        let other = r.subscribe(vec![WakeKey::queue("w", "echo")]);
        r.publish(&WakeKey::queue("w", "echo"));
        assert!(woken(&staying).await, "the oldest idle poller");
        drop(staying);
        assert!(!woken(&other).await);
        assert_eq!(r.waiting(), 1);
        drop(other);
        assert_eq!(r.waiting(), 0, "nothing left behind");
    }

    #[tokio::test]
    async fn a_delete_wakes_the_contexts_and_runs_under_it() {
        let r = registry();
        let in_p = r.subscribe(vec![WakeKey::context("w", "p", "c")]);
        let run_in_p = r.subscribe(vec![WakeKey::run("w", "p", "r")]);
        let in_q = r.subscribe(vec![WakeKey::context("w", "q", "c")]);
        let poller = r.subscribe(vec![WakeKey::queue("w", "echo")]);
        r.publish(&WakeKey::under("w", Some("p")));
        assert!(woken(&in_p).await && woken(&run_in_p).await);
        assert!(!woken(&in_q).await && !woken(&poller).await);
        r.publish(&WakeKey::under("w", None));
        assert!(woken(&in_p).await && woken(&in_q).await);
    }

    #[tokio::test]
    async fn wake_all_wakes_everyone_once() {
        let r = registry();
        let subs: Vec<_> = (0..10)
            .map(|i| r.subscribe(vec![context(&format!("c{i}")), WakeKey::queue("w", "a")]))
            .collect();
        r.wake_all();
        assert_eq!(r.wakeups(), 10);
        for s in &subs {
            assert!(woken(s).await);
        }
    }
}
