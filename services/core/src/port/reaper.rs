//! The background reaper's bounds, report and memory between passes.

use std::collections::HashMap;

use crate::{
    run::Fired,
    time::{DurationMicros, UnixMicros, now_micros},
};

/// Bounds of one pass.
#[derive(Debug, Clone, Copy)]
pub struct ReapLimits {
    /// Due runs looked at per pass, all timers together.
    pub max_runs: u64,
    /// Time after which a pass stops at the next run.
    pub max_time: std::time::Duration,
    /// Due runs read per query.
    pub page: u64,
}

impl Default for ReapLimits {
    fn default() -> Self {
        Self {
            max_runs: 1000,
            max_time: std::time::Duration::from_secs(2),
            page: 100,
        }
    }
}

/// What one pass did, per action.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ReapReport {
    /// Lapsed leases re-queued for another attempt (WORKER_LOST).
    pub leases_requeued: u64,
    /// Lapsed leases that used up the attempts: FAILED (WORKER_LOST).
    pub leases_failed: u64,
    /// Lapsed leases of CANCELLING runs: CANCELLED.
    pub leases_cancelled: u64,
    /// Runs past their timeout: TIMED_OUT.
    pub timed_out: u64,
    /// Plans nobody decided in time: rejected, the run re-queued.
    pub approvals_expired: u64,
    /// Re-queued runs whose backoff ended, whose workspaces' pollers were woken.
    pub backoffs_woken: u64,
    /// Due runs whose handling failed (each logged with the reason); tried again later.
    pub failed: u64,
    /// Due runs another transaction held (another replica's reaper, a worker call):
    /// left to it or to the next pass.
    pub busy: u64,
    /// The pass stopped at its bounds with due runs left for the next one.
    pub truncated: bool,
}

impl ReapReport {
    /// Lapsed leases handled, however they ended.
    pub fn leases_expired(&self) -> u64 {
        self.leases_requeued + self.leases_failed + self.leases_cancelled
    }

    /// Runs this pass changed.
    pub fn changed(&self) -> u64 {
        self.leases_expired() + self.timed_out + self.approvals_expired
    }
}

impl ReapReport {
    /// Counts what handling one due run did (`None`: another transaction held it).
    pub fn count(&mut self, fired: Option<Fired>) {
        let Some(fired) = fired else {
            self.busy += 1;
            return;
        };
        match fired {
            Fired::LeaseRequeued => self.leases_requeued += 1,
            Fired::LeaseFailed => self.leases_failed += 1,
            Fired::LeaseCancelled => self.leases_cancelled += 1,
            Fired::TimedOut => self.timed_out += 1,
            Fired::ApprovalExpired => self.approvals_expired += 1,
            Fired::Nothing => {}
        }
    }
}

/// What the reaper keeps between passes: where the last one ended in time (for backoff
/// wake-ups) and the runs whose handling failed, with when to try them again.
#[derive(Debug)]
pub struct RunReaper {
    pub limits: ReapLimits,
    since: UnixMicros,
    failing: HashMap<(String, String), Failing>,
}

#[derive(Debug, Clone, Copy)]
struct Failing {
    retry_time: UnixMicros,
    failures: u32,
}

/// The first wait before a failed run is tried again; it doubles up to the maximum.
const FAILED_RETRY_FIRST: DurationMicros = 1_000_000;
const FAILED_RETRY_MAX: DurationMicros = 300_000_000;
/// Failing runs remembered at most; past that the memory starts afresh.
const MAX_FAILING: usize = 10_000;

impl RunReaper {
    pub fn new(limits: ReapLimits) -> Self {
        Self {
            limits,
            since: now_micros(),
            failing: HashMap::new(),
        }
    }

    /// Starts counting backoff wake-ups from `since` (tests: from the beginning).
    pub fn since(mut self, since: UnixMicros) -> Self {
        self.since = since;
        self
    }

    /// Where this pass counts backoff wake-ups from: where the last one ended.
    pub fn backoffs_since(&self) -> UnixMicros {
        self.since
    }

    /// The pass that ran up to `now` is over; the next counts backoffs from there.
    pub fn passed(&mut self, now: UnixMicros) {
        self.since = now;
    }

    /// Whether the run `key` (workspace, run) failed lately and waits before its next try.
    pub fn deferred(&self, key: &(String, String), now: UnixMicros) -> bool {
        self.failing.get(key).is_some_and(|f| f.retry_time > now)
    }

    /// The run `key` was handled: it is tried on time again.
    pub fn handled(&mut self, key: &(String, String)) {
        self.failing.remove(key);
    }

    /// The handling of run `key` failed: it waits longer before each next try. Returns
    /// how many times in a row it failed.
    pub fn failed(&mut self, key: (String, String), now: UnixMicros) -> u32 {
        if self.failing.len() >= MAX_FAILING {
            self.failing.clear();
        }
        let entry = self.failing.entry(key).or_insert(Failing {
            retry_time: now,
            failures: 0,
        });
        entry.failures += 1;
        let wait = FAILED_RETRY_FIRST
            .saturating_mul(1 << entry.failures.min(16).saturating_sub(1))
            .min(FAILED_RETRY_MAX);
        entry.retry_time = now.saturating_add(wait);
        entry.failures
    }
}
