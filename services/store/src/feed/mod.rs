//! The change feed: who waits for which change, and how a committed write reaches them.
//!
//! A transaction collects the [`WakeKey`]s of what it changes in [`Wakes`]. On Postgres
//! context writes and run changes hand them to [`Announcer`] after commit (batched, see
//! `announce`); other mutations send them with one `pg_notify` as their last statement
//! (a NOTIFY is delivered only if the transaction commits). Once it has committed,
//! the store publishes them to the waiters of this process ([`Registry`], in core), which the replicas skip
//! when their own NOTIFY comes back. [`listen`] carries the other replicas' keys in, and
//! is the safety net: when its connection drops or goes silent, every waiter of this
//! replica looks at storage once, since wake-ups may have been lost meanwhile. Waiters
//! never read storage on a timer of their own, so idle waiters cost nothing. A replica
//! that hears no other replica does not announce at all (`company`).
//!
//! On SQLite one process owns the file: the registry alone carries every wake-up.

mod announce;
mod company;
mod listen;

use std::sync::Arc;

use agentry_core::{
    Result,
    port::{ChangeFeed, Subscription},
    run::Run,
    wake::WakeKey,
};
use sea_query::{Alias, Func, Query, SelectStatement};

pub(crate) use announce::Announcer;

use crate::{
    Store,
    db::{Backend, Tx},
};

/// The Postgres NOTIFY channel of the change feed. A payload is `{replica} {keys}`: the
/// sending replica's id and [`WakeKey::encode_all`] of the keys; or `{replica} !ping
/// {number}`, a replica's numbered liveness NOTIFY, or `{replica} !hello`, sent each
/// time a replica's LISTEN becomes active (neither decodes as keys, so replicas of
/// earlier versions skip them; their own liveness NOTIFY is `{replica} `).
pub const FEED_CHANNEL: &str = "agentry_feed";

/// Payloads stay under Postgres's 8000-byte limit; more keys go in further notifications
/// of the same statement.
const MAX_PAYLOAD: usize = 7000;

impl ChangeFeed for Store {
    fn subscribe(&self, keys: Vec<WakeKey>) -> Subscription {
        self.feed.subscribe(keys)
    }

    fn wakeups(&self) -> u64 {
        self.feed.wakeups()
    }

    fn waiting(&self) -> usize {
        self.feed.waiting()
    }
}

/// Wake keys collected by a transaction.
#[derive(Default)]
pub(crate) struct Wakes(Vec<WakeKey>);

impl Wakes {
    pub(crate) fn of(key: WakeKey) -> Self {
        let mut wakes = Self::default();
        wakes.push(key);
        wakes
    }

    /// The run's events, status or cancel flag changed.
    pub(crate) fn run(&mut self, run: &Run) {
        self.push(WakeKey::run(&run.workspace, &run.project, &run.id));
    }

    /// The run became claimable.
    pub(crate) fn queue(&mut self, run: &Run) {
        self.push(WakeKey::queue(&run.workspace, &run.agent));
    }

    pub(crate) fn push(&mut self, key: WakeKey) {
        if !self.0.contains(&key) {
            self.0.push(key);
        }
    }

    /// NOTIFYs the other replicas inside the transaction (delivered only if it
    /// commits), in one statement.
    pub(crate) async fn notify(&self, tx: &mut Tx, replica: &str) -> Result<()> {
        if tx.backend() != Backend::Postgres || self.0.is_empty() {
            return Ok(());
        }
        tx.execute(&notify_statement(replica, &self.0)).await?;
        Ok(())
    }
}

/// One statement NOTIFYing `keys` from `replica`.
fn notify_statement(replica: &str, keys: &[WakeKey]) -> SelectStatement {
    notify_payloads(payloads(replica, keys))
}

/// One statement NOTIFYing each of `payloads` on [`FEED_CHANNEL`].
fn notify_payloads(payloads: impl IntoIterator<Item = String>) -> SelectStatement {
    let mut select = Query::select();
    for payload in payloads {
        select.expr(
            Func::cust(Alias::new("pg_notify"))
                .arg(FEED_CHANNEL)
                .arg(payload),
        );
    }
    select
}

/// `{replica} {keys}` payloads of at most [`MAX_PAYLOAD`] bytes each.
fn payloads(replica: &str, keys: &[WakeKey]) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    for key in keys {
        let encoded = key.encode();
        if !current.is_empty() && current.len() + 1 + encoded.len() > MAX_PAYLOAD {
            out.push(std::mem::take(&mut current));
        }
        if current.is_empty() {
            current = format!("{replica} {encoded}");
        } else {
            current.push('\n');
            current.push_str(&encoded);
        }
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

const PING: &str = "!ping ";
const HELLO: &str = "!hello";

/// A numbered liveness NOTIFY of `replica`.
fn ping_payload(replica: &str, number: u64) -> String {
    format!("{replica} {PING}{number}")
}

fn hello_payload(replica: &str) -> String {
    format!("{replica} {HELLO}")
}

/// What a notification on [`FEED_CHANNEL`] tells a replica.
#[derive(Debug, PartialEq)]
enum Heard {
    /// Its own liveness NOTIFY, by number.
    OwnPing(u64),
    /// Anything else of its own (keys, its `hello`).
    Own,
    /// Another replica's `hello`: that replica's LISTEN just became active.
    Hello,
    /// Another replica's keys (none: its liveness NOTIFY).
    Other(Vec<WakeKey>),
}

/// What `payload` tells `replica`; `None`: not a payload of the feed.
fn heard(payload: &str, replica: &str) -> Option<Heard> {
    let (from, rest) = payload.split_once(' ')?;
    if from == replica {
        return Some(match rest.strip_prefix(PING).map(str::parse) {
            Some(Ok(number)) => Heard::OwnPing(number),
            _ => Heard::Own,
        });
    }
    Some(if rest == HELLO {
        Heard::Hello
    } else {
        Heard::Other(WakeKey::decode_all(rest).collect())
    })
}

impl Store {
    /// Wakes this process's waiters on the keys of a committed transaction.
    pub(crate) fn wake(&self, wakes: &Wakes) {
        for key in &wakes.0 {
            self.feed.publish(key);
        }
    }

    /// Wakes the waiters of every replica on the keys of a committed transaction that
    /// did not NOTIFY them itself (see `announce`).
    pub(crate) fn wake_everywhere(&self, wakes: &Wakes) {
        self.wake(wakes);
        if let Some(announcer) = &self.announcer {
            announcer.announce(&wakes.0);
        }
    }

    /// A handle on the change feed, for the server to subscribe through.
    pub fn change_feed(&self) -> Arc<dyn ChangeFeed> {
        Arc::new(self.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_payload_names_its_replica_and_its_keys() {
        let keys = [WakeKey::context("w", "p", "c"), WakeKey::any_queue("w")];
        let sent = payloads("r1", &keys);
        assert_eq!(sent, ["r1 c/w/p/c\nq/w"]);
        assert_eq!(heard(&sent[0], "r2"), Some(Heard::Other(keys.to_vec())));
        assert_eq!(
            heard(&sent[0], "r1"),
            Some(Heard::Own),
            "a replica skips its own"
        );
        assert_eq!(heard("garbage", "r2"), None);
    }

    #[test]
    fn pings_and_hellos_are_told_apart_and_carry_no_keys() {
        let ping = ping_payload("r1", 42);
        assert_eq!(heard(&ping, "r1"), Some(Heard::OwnPing(42)));
        assert_eq!(heard(&ping, "r2"), Some(Heard::Other(Vec::new())));
        let hello = hello_payload("r1");
        assert_eq!(heard(&hello, "r1"), Some(Heard::Own));
        assert_eq!(heard(&hello, "r2"), Some(Heard::Hello));
        assert_eq!(
            heard("r1 ", "r2"),
            Some(Heard::Other(Vec::new())),
            "an earlier version's liveness NOTIFY"
        );
        for rest in [&ping[3..], &hello[3..]] {
            assert_eq!(
                WakeKey::decode_all(rest).count(),
                0,
                "{rest}: no keys for earlier versions"
            );
        }
    }

    #[test]
    fn many_keys_split_into_payloads_under_the_limit() {
        let keys: Vec<WakeKey> = (0..1000)
            .map(|i| WakeKey::run("workspace", "project", &format!("run-{i:05}")))
            .collect();
        let sent = payloads("r1", &keys);
        assert!(sent.len() > 1);
        assert!(sent.iter().all(|p| p.len() <= MAX_PAYLOAD));
        let received: Vec<WakeKey> = sent
            .iter()
            .flat_map(|p| match heard(p, "r2") {
                Some(Heard::Other(keys)) => keys,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(received, keys);
    }
}
