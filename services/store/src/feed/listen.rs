//! Other replicas' wake-ups in, through Postgres LISTEN, and the feed's safety net.
//!
//! A notification is only ever lost while this replica is not listening: its connection
//! dropped, or went silent (a stalled network). So the listener counts silence as a loss
//! too: it NOTIFYs itself once a `period` (one statement per period per replica, however
//! many waiters there are) and expects to hear something within three. On a loss it
//! wakes every waiter of the replica, reconnects, and once listening again wakes them all
//! once more, for what was sent in between. A waiter woken needlessly looks at storage
//! and waits again; one that missed a wake-up would wait for nothing.

use std::time::Duration;

use sea_query::{Alias, Func, Query};
use tokio::sync::watch;

use super::{FEED_CHANNEL, keys_from_other};
use crate::{Store, db::Backend};

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
        tokio::join!(
            self.listen_loop(period, stopping.clone()),
            self.ping_loop(period, stopping)
        );
    }

    async fn listen_loop(&self, period: Duration, mut stopping: watch::Receiver<bool>) {
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
            // Whatever was sent while this replica was not listening is lost.
            self.feed.wake_all();
            loop {
                let silence = period * SILENT_PERIODS;
                let received = tokio::select! {
                    received = tokio::time::timeout(silence, listener.try_recv()) => received,
                    _ = stopping.wait_for(|s| *s) => return,
                };
                match received {
                    Ok(Ok(Some(notification))) => {
                        for key in keys_from_other(notification.payload(), &self.replica)
                            .into_iter()
                            .flatten()
                        {
                            self.feed.publish(&key);
                        }
                    }
                    Ok(Ok(None)) | Ok(Err(_)) => {
                        tracing::warn!("the LISTEN connection was lost; reconnecting");
                        break;
                    }
                    Err(_) => {
                        tracing::warn!(
                            silent_ms = silence.as_millis() as u64,
                            "the LISTEN connection went silent; reconnecting"
                        );
                        break;
                    }
                }
            }
            crate::observe::feed_reconnected();
            // Waiters look now (and ride out an outage of storage with their backoff).
            self.feed.wake_all();
        }
    }

    /// NOTIFYs this replica's own listener once a period: proof that it still hears.
    async fn ping_loop(&self, period: Duration, mut stopping: watch::Receiver<bool>) {
        let ping = Query::select()
            .expr(
                Func::cust(Alias::new("pg_notify"))
                    .arg(FEED_CHANNEL)
                    .arg(format!("{} ", self.replica)),
            )
            .to_owned();
        let mut ticks = tokio::time::interval(period);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                _ = stopping.wait_for(|s| *s) => return,
            }
            let sent = tokio::select! {
                sent = tokio::time::timeout(period, self.db.execute(&ping)) => sent,
                _ = stopping.wait_for(|s| *s) => return,
            };
            if let Ok(Err(error)) = sent {
                tracing::debug!(%error, "cannot send the feed's liveness NOTIFY");
            }
        }
    }
}
