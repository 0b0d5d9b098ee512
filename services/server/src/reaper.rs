//! Background maintenance on a timer: run timers (lapsed leases, timeouts, expired
//! approvals, ended backoffs), instances whose heartbeat lapsed go OFFLINE, and
//! stored idempotency results older than a day are forgotten. Every replica runs it; the
//! statements are idempotent guarded updates, so replicas never conflict.

use std::time::Duration;

use agentry_core::time::now_micros;
use agentry_store::Store;
use tokio::sync::watch;

const IDEMPOTENCY_RETENTION_US: i64 = 24 * 3600 * 1_000_000;

pub async fn run(store: Store, interval: Duration, mut stop: watch::Receiver<bool>) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut ticks: u64 = 0;
    let mut since = now_micros();
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stop.wait_for(|stop| *stop) => return,
        }
        ticks += 1;
        let now = now_micros();
        match store.reap_runs(since).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(runs = n, "run timers fired"),
            Err(error) => tracing::warn!(%error, "reaper could not handle run timers"),
        }
        since = now;
        match store.reap_instances(now_micros()).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(instances = n, "heartbeat lapsed; marked offline"),
            Err(error) => tracing::warn!(%error, "reaper could not mark offline instances"),
        }
        if ticks % 600 == 1
            && let Err(error) = store
                .purge_idempotency_keys(now_micros() - IDEMPOTENCY_RETENTION_US)
                .await
        {
            tracing::warn!(%error, "reaper could not purge idempotency keys");
        }
    }
}
