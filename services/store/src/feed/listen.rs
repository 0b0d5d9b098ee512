//! Other replicas' wake-ups in, through Postgres LISTEN, and the feed's safety net.
//!
//! A notification is only ever lost while this replica is not listening: its connection
//! dropped, or went silent (a stalled network). So the listener counts silence as a loss
//! too: it NOTIFYs itself once a `period` (one statement per period per replica, however
//! many waiters there are) and expects to hear something within three. On a loss it
//! wakes every waiter of the replica, reconnects, and once listening again wakes them all
//! once more, for what was sent in between. A waiter woken needlessly looks at storage
//! and waits again; one that missed a wake-up would wait for nothing. Silence counts
//! only when a NOTIFY was sent and not heard: when the pool is too busy to send one
//! (many streams opening at once), silence proves nothing, and waking every waiter would
//! only make the pool busier.
//!
//! Each time its LISTEN becomes active the replica NOTIFYs `hello` on that connection and
//! then wakes every waiter; hearing another replica's `hello`, it answers and then wakes
//! every waiter. That exchange is what lets a replica alone hold its keys back
//! (`company`, which also learns here what this replica hears).

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use sqlx::postgres::PgListener;
use tokio::sync::watch;

use super::{
    FEED_CHANNEL, Heard, company::Company, heard, hello_payload, notify_payloads, ping_payload,
};
use crate::{
    Store,
    db::{Backend, map_err},
};

/// Silence for this many periods counts as a lost connection.
const SILENT_PERIODS: u32 = 3;

impl Store {
    /// Carries other replicas' wake-ups to this process's waiters until `stopping` turns
    /// true (Postgres; on SQLite it returns at once). `period`: how often the replica
    /// checks that its LISTEN connection still delivers.
    pub async fn follow_changes(&self, period: Duration, stopping: watch::Receiver<bool>) {
        if self.backend() != Backend::Postgres {
            return;
        }
        let pings = Pings::default();
        tokio::join!(
            self.listen_loop(period, &pings, stopping.clone()),
            self.ping_loop(period, &pings, stopping)
        );
    }

    async fn listen_loop(
        &self,
        period: Duration,
        pings: &Pings,
        mut stopping: watch::Receiver<bool>,
    ) {
        let retry = period.min(Duration::from_secs(1));
        loop {
            let listening = tokio::select! {
                listening = self.db.listen(FEED_CHANNEL) => listening,
                _ = stopping.wait_for(|s| *s) => return,
            };
            let mut listener = match listening {
                Ok(Some(listener)) => listener,
                Ok(None) => return,
                Err(error) => {
                    tracing::warn!(%error, "cannot LISTEN for other replicas' changes; retrying");
                    tokio::select! {
                        () = tokio::time::sleep(retry) => continue,
                        _ = stopping.wait_for(|s| *s) => return,
                    }
                }
            };
            // Whatever was sent while this replica was not listening is lost: every
            // waiter looks, after the `hello` has committed.
            match self
                .notify_on(&mut listener, hello_payload(&self.replica))
                .await
            {
                Ok(()) => {
                    self.company().greeted();
                    self.feed.wake_all();
                    self.hear(&mut listener, period, pings, &mut stopping).await;
                }
                Err(error) => {
                    tracing::warn!(%error, "cannot NOTIFY the other replicas on the LISTEN connection; reconnecting")
                }
            }
            if *stopping.borrow() {
                return;
            }
            self.announcer().send(&self.company().lost());
            crate::observe::feed_reconnected();
            // Waiters look now (and ride out an outage of storage with their backoff).
            self.feed.wake_all();
        }
    }

    /// Hears notifications on `listener` until it is lost, goes silent, or `stopping`.
    async fn hear(
        &self,
        listener: &mut PgListener,
        period: Duration,
        pings: &Pings,
        stopping: &mut watch::Receiver<bool>,
    ) {
        loop {
            let silence = period * SILENT_PERIODS;
            let window_start = pings.now();
            let received = tokio::select! {
                received = tokio::time::timeout(silence, listener.try_recv()) => received,
                _ = stopping.wait_for(|s| *s) => return,
            };
            let notification = match received {
                Ok(Ok(Some(notification))) => notification,
                Ok(Ok(None)) | Ok(Err(_)) => {
                    tracing::warn!("the LISTEN connection was lost; reconnecting");
                    return;
                }
                Err(_) if !pings.unheard_since(window_start, period) => {
                    // No NOTIFY went out long enough ago to have been heard.
                    continue;
                }
                Err(_) => {
                    tracing::warn!(
                        silent_ms = silence.as_millis() as u64,
                        "the LISTEN connection went silent; reconnecting"
                    );
                    return;
                }
            };
            match heard(notification.payload(), &self.replica) {
                None | Some(Heard::Own) => {}
                Some(Heard::OwnPing(number)) => self.company().heard_own(number),
                Some(Heard::Other(keys)) => {
                    self.announcer().send(&self.company().heard_other());
                    for key in keys {
                        self.feed.publish(&key);
                    }
                }
                Some(Heard::Hello) => {
                    self.announcer().send(&self.company().heard_other());
                    // The answer commits before this replica's waiters look.
                    let number = self.company().ping_starting();
                    let answer = ping_payload(&self.replica, number);
                    if let Err(error) = self.notify_on(listener, answer).await {
                        tracing::warn!(%error, "cannot answer another replica's hello; reconnecting");
                        return;
                    }
                    self.feed.wake_all();
                }
            }
        }
    }

    /// NOTIFYs `payload` on the LISTEN connection itself.
    async fn notify_on(
        &self,
        listener: &mut PgListener,
        payload: String,
    ) -> agentry_core::Result<()> {
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(FEED_CHANNEL)
            .bind(payload)
            .execute(listener)
            .await
            .map_err(map_err)?;
        Ok(())
    }

    fn announcer(&self) -> &super::Announcer {
        self.announcer
            .as_ref()
            .expect("a Postgres store has an announcer")
    }

    fn company(&self) -> &Company {
        &self.announcer().company
    }

    /// NOTIFYs this replica's own listener once a period: proof that it still hears,
    /// and (numbered) what lets `company` drop the keys it held.
    async fn ping_loop(
        &self,
        period: Duration,
        pings: &Pings,
        mut stopping: watch::Receiver<bool>,
    ) {
        let mut ticks = tokio::time::interval(period);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                _ = stopping.wait_for(|s| *s) => return,
            }
            let number = self.company().ping_starting();
            let ping = notify_payloads([ping_payload(&self.replica, number)]);
            let sent = tokio::select! {
                sent = tokio::time::timeout(period, self.db.execute(&ping)) => sent,
                _ = stopping.wait_for(|s| *s) => return,
            };
            match sent {
                Ok(Ok(_)) => pings.sent(),
                Ok(Err(error)) => {
                    tracing::debug!(%error, "cannot send the feed's liveness NOTIFY")
                }
                Err(_) => tracing::debug!("the feed's liveness NOTIFY took longer than a period"),
            }
        }
    }
}

/// When this replica's last liveness NOTIFY was sent (committed), in milliseconds since
/// the feed started following (0: none yet).
struct Pings {
    started: Instant,
    last_sent_ms: Arc<AtomicU64>,
}

impl Default for Pings {
    fn default() -> Self {
        Self {
            started: Instant::now(),
            last_sent_ms: Arc::default(),
        }
    }
}

impl Pings {
    fn now(&self) -> u64 {
        self.started.elapsed().as_millis() as u64 + 1
    }

    fn sent(&self) {
        self.last_sent_ms.store(self.now(), Ordering::Relaxed);
    }

    /// Whether a NOTIFY sent after `window_start`, at least `period` ago, went unheard
    /// (the caller heard nothing since `window_start`).
    fn unheard_since(&self, window_start: u64, period: Duration) -> bool {
        let sent = self.last_sent_ms.load(Ordering::Relaxed);
        sent >= window_start && self.now().saturating_sub(sent) >= period.as_millis() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn silence_counts_only_after_a_notify_that_had_time_to_arrive() {
        let pings = Pings::default();
        let period = Duration::from_millis(20);
        let window = pings.now();
        assert!(!pings.unheard_since(window, period), "nothing was sent");
        pings.sent();
        assert!(!pings.unheard_since(window, period), "sent just now");
        std::thread::sleep(Duration::from_millis(30));
        assert!(
            pings.unheard_since(window, period),
            "sent a period ago, not heard"
        );
        let later = pings.now();
        assert!(
            !pings.unheard_since(later, period),
            "sent before this window"
        );
    }
}
