//! Background maintenance on a timer: run timers (lapsed leases, timeouts, expired
//! approvals, ended backoffs), instances whose heartbeat lapsed go OFFLINE, and
//! stored idempotency results older than a day are forgotten, and finished runs are
//! folded into GetRunStats' rollups (`agentry_store`'s `execution::rollup`). Every replica runs it; the
//! run timers split between replicas (SKIP LOCKED) and every change is a guarded,
//! idempotent update, so replicas never conflict. A run the store cannot handle is
//! logged and skipped there, never fatal to a pass (see `agentry_core::port::RunReaper`);
//! a pass is bounded in runs and time, and ends at once when the server stops.

use std::{sync::Arc, time::Duration};

use agentry_core::{
    port::{ReapLimits, ReapReport, RunReaper, Storage},
    time::now_micros,
};
use tokio::sync::watch;

use crate::notify::stopped;

const IDEMPOTENCY_RETENTION_US: i64 = 24 * 3600 * 1_000_000;
/// The GetRunStats roller runs every this many passes, and on every pass while it is
/// behind, for at most [`ROLL_TIME`] each.
const ROLL_EVERY_TICKS: u64 = 10;
const ROLL_TIME: Duration = Duration::from_millis(300);

/// What one pass did, per action: the run timers the store handled and the instances
/// marked OFFLINE.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ReaperActions {
    pub runs: ReapReport,
    pub instances_offline: u64,
}

impl ReaperActions {
    /// Every action with its count, by the name the `action` label of
    /// `agentry_reaper_actions_total` gives it.
    pub fn counts(&self) -> [(&'static str, u64); 9] {
        let runs = &self.runs;
        [
            ("lease_requeued", runs.leases_requeued),
            ("lease_failed", runs.leases_failed),
            ("lease_cancelled", runs.leases_cancelled),
            ("timed_out", runs.timed_out),
            ("approval_expired", runs.approvals_expired),
            ("backoff_woken", runs.backoffs_woken),
            ("instance_offline", self.instances_offline),
            ("run_failed", runs.failed),
            ("run_busy", runs.busy),
        ]
    }

    /// Lapsed leases handled (`agentry_leases_expired_total`).
    pub fn leases_expired(&self) -> u64 {
        self.runs.leases_expired()
    }
}

pub async fn run(store: Arc<dyn Storage>, interval: Duration, mut stop: watch::Receiver<bool>) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut ticks: u64 = 0;
    let mut timers = RunReaper::new(ReapLimits::default());
    let mut rolling_behind = false;
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            () = stopped(&mut stop) => return,
        }
        ticks += 1;
        let pass = pass(store.as_ref(), &mut timers, ticks, &mut rolling_behind);
        tokio::select! {
            actions = pass => record(&actions),
            () = stopped(&mut stop) => return,
        }
    }
}

/// One pass; failures are logged, and what was done is counted even then.
async fn pass(
    store: &dyn Storage,
    timers: &mut RunReaper,
    ticks: u64,
    rolling_behind: &mut bool,
) -> ReaperActions {
    let mut actions = ReaperActions::default();
    match store.reap_runs(timers).await {
        Ok(report) => actions.runs = report,
        Err(error) => tracing::warn!(%error, "reaper could not read the run timers"),
    }
    match store.reap_instances(now_micros()).await {
        Ok(n) => actions.instances_offline = n,
        Err(error) => tracing::warn!(%error, "reaper could not mark offline instances"),
    }
    if ticks % 600 == 1
        && let Err(error) = store
            .purge_idempotency_keys(now_micros() - IDEMPOTENCY_RETENTION_US)
            .await
    {
        tracing::warn!(%error, "reaper could not purge idempotency keys");
    }
    if *rolling_behind || ticks % ROLL_EVERY_TICKS == 1 {
        *rolling_behind = roll(store).await;
    }
    actions
}

/// One bounded pass of the GetRunStats roller; whether it has more to do.
async fn roll(store: &dyn Storage) -> bool {
    match store.roll_run_stats(ROLL_TIME).await {
        Ok((folded, behind)) => {
            if folded > 0 {
                tracing::debug!(folded, behind, "run stats rolled up");
            }
            behind
        }
        Err(error) => {
            tracing::warn!(%error, "reaper could not roll up run stats");
            false
        }
    }
}

/// Counts what a pass did (`agentry_reaper_actions_total{action}`,
/// `agentry_leases_expired_total`) and logs it.
fn record(actions: &ReaperActions) {
    for (action, count) in actions.counts() {
        crate::metrics::reaper_acted(action, count);
    }
    crate::metrics::leases_expired(actions.leases_expired());
    let done: Vec<String> = actions
        .counts()
        .into_iter()
        .filter(|(_, count)| *count > 0)
        .map(|(action, count)| format!("{action}={count}"))
        .collect();
    if !done.is_empty() {
        tracing::info!(
            actions = %done.join(" "),
            leases_expired = actions.leases_expired(),
            "reaper pass"
        );
    }
    if actions.runs.truncated {
        tracing::info!("reaper pass reached its bounds; the rest waits for the next pass");
    }
}
