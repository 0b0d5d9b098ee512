//! Claims: PollTask's lease of the oldest runnable run, and the way back to the queue for
//! a claim whose answer never reached its worker.
//!
//! A claim commits before the worker has its task token. If the answer then cannot be
//! built, or the caller is gone (the handler future is dropped when the client cancels),
//! nobody holds the lease: left alone it would lapse after the lease duration, cost the
//! run an attempt (WORKER_LOST) and hold a concurrent-run slot meanwhile. So a [`Claim`]
//! is a guard: until the caller says [`Claim::delivered`], dropping it puts the run back
//! in the queue on the same attempt and at its old place in line. The guard is armed
//! before the COMMIT is sent, so even a caller dropped while the commit is in flight
//! releases it; the release is fenced by the lease like any worker call, so it changes
//! nothing when the commit did not happen or the lease moved on.

use std::{
    collections::HashSet,
    sync::{Arc, Mutex},
    time::Duration,
};

use agentry_core::{
    Error, Result,
    names::InstanceName,
    port::{Claim, ClaimAttempt, ClaimRelease, ClaimRequest, ClaimStore, Release},
    run::{Lease, RunStatus, StopReason},
    time::{UnixMicros, now_micros},
};
use async_trait::async_trait;
use sea_query::{Cond, Expr, Order};

use super::{
    Wakes,
    change::Change,
    rows::{RunRow, select_runs},
    slots::take,
    worker::fenced,
};
use crate::{Store, instances::instance_from_json, tables::Runs};

/// What a release needs: the lease the claim created and what it overwrote.
struct Undelivered {
    store: Store,
    lease: Lease,
    before: Before,
    lease_expire_time: UnixMicros,
}

/// The run's place before the claim, restored by a release.
#[derive(Clone, Copy)]
struct Before {
    start_time: Option<UnixMicros>,
    next_attempt_time: UnixMicros,
}

impl ClaimRelease for Undelivered {
    fn give_back(self: Box<Self>) {
        // Without a runtime (the process is ending) the lease lapses instead.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        runtime.spawn(self.release());
    }
}

impl Undelivered {
    /// Retries while the database is unavailable, for as long as the lease would hold;
    /// after that the reaper's lapse handling takes over.
    async fn release(self) {
        let run = &self.lease.run;
        let mut pause = Duration::from_millis(100);
        loop {
            match self.store.release_claim(&self.lease, self.before).await {
                Ok(true) => {
                    tracing::info!(
                        workspace = %self.lease.workspace,
                        run = %run,
                        attempt = self.lease.attempt,
                        "claim not delivered; run back in the queue"
                    );
                    return;
                }
                Ok(false) => return,
                Err(Error::Unavailable { .. }) if now_micros() < self.lease_expire_time => {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(2));
                }
                Err(error) => {
                    tracing::warn!(
                        workspace = %self.lease.workspace,
                        run = %run,
                        %error,
                        "cannot release an undelivered claim; its lease will lapse"
                    );
                    return;
                }
            }
        }
    }
}

/// The oldest run of `agents` in `workspace` that may be claimed at `now`. The queue
/// condition is literal SQL, not parameters: the plan Postgres caches for the prepared
/// statement can then use the partial index `runs_queue` (a bound status cannot prove
/// its predicate, and the look read about 100 pages of other runs instead of a few).
pub(super) fn candidates(
    workspace: &str,
    agents: &[String],
    now: UnixMicros,
) -> sea_query::SelectStatement {
    debug_assert_eq!(RunStatus::Queued.as_str(), "QUEUED");
    select_runs()
        .and_where(Expr::col(Runs::WorkspaceId).eq(workspace))
        .and_where(Expr::cust("status = 'QUEUED' AND ready = 1"))
        .and_where(Expr::col(Runs::AgentId).is_in(agents.iter().map(String::as_str)))
        .and_where(Expr::col(Runs::NextAttemptTime).lte(now))
        .cond_where(
            Cond::any()
                .add(Expr::col(Runs::Deadline).is_null())
                .add(Expr::col(Runs::Deadline).gt(now)),
        )
        .order_by(Runs::NextAttemptTime, Order::Asc)
        .order_by(Runs::RunId, Order::Asc)
        .limit(1)
        .to_owned()
}

#[async_trait]
impl ClaimStore for Store {
    async fn claim_run(&self, claim: ClaimRequest<'_>) -> Result<Option<Claim>> {
        let ClaimRequest {
            workspace,
            agents,
            worker,
            lease_duration,
            attempt,
        } = claim;
        // A cheap look without locks first when the queue is probably empty: an idle
        // poller leaves without a transaction.
        let look_first = match attempt {
            ClaimAttempt::Woken => false,
            ClaimAttempt::TimedOut => true,
            ClaimAttempt::First => !self.backlogs.likely(workspace),
        };
        if look_first {
            let any: Option<RunRow> = self
                .db
                .fetch_optional(&candidates(workspace, agents, now_micros()))
                .await?;
            if any.is_none() {
                self.backlogs.found(workspace, attempt, false);
                return Ok(None);
            }
        }
        let mut tx = self.db.begin().await?;
        let Some((run, instance)) = take(&mut tx, workspace, agents, now_micros()).await? else {
            // The TAKE may have locked a free slot: gone before another claim looks.
            tx.rollback().await;
            self.backlogs.found(workspace, attempt, false);
            return Ok(None);
        };
        self.backlogs.found(workspace, attempt, true);
        // The clock is read after the slot is taken: the run that freed it committed
        // before, so start_time never precedes the end_time of the run whose slot this
        // one takes.
        let now = now_micros();
        let mut change = Change::new(run, None, now);
        let before = Before {
            start_time: change.run.start_time,
            next_attempt_time: change.run.next_attempt_time,
        };
        change.run.attempt = change.run.attempt.max(1);
        change.run.lease_epoch += 1;
        change.run.lease_duration = lease_duration;
        change.run.worker = worker.map(str::to_owned);
        change.run.start_time.get_or_insert(now);
        change.status(RunStatus::Running, StopReason::Unspecified, "")?;
        let lease_expire_time = now.saturating_add(lease_duration);
        change.run.lease_expire_time = Some(lease_expire_time);
        let run = change.save(&mut tx).await?;
        // The task carries the instance as of the claim (on Postgres read by the TAKE);
        // a failed read undoes the claim.
        let of = InstanceName::new(&run.workspace, &run.project, &run.instance);
        let instance = instance_from_json(&mut tx, instance.as_deref(), &of).await?;
        let mut wakes = Wakes::default();
        wakes.run(&run);
        let release = Release::armed(Undelivered {
            store: self.clone(),
            lease: run.lease(),
            before,
            lease_expire_time,
        });
        tx.commit().await?;
        self.wake_everywhere(&wakes);
        crate::observe::run_picked_up(now - before.next_attempt_time);
        Ok(Some(Claim::new(run, instance, release)))
    }
}

impl Store {
    /// Puts an undelivered claim back: QUEUED on the same attempt with its old place in
    /// line, or CANCELLED if a cancel arrived meanwhile. False when the lease no longer
    /// holds (the claim never committed, or the run moved on).
    async fn release_claim(&self, lease: &Lease, before: Before) -> Result<bool> {
        let now = now_micros();
        let mut wakes = Wakes::default();
        let mut tx = self.db.begin().await?;
        let (mut session, run) = match fenced(&mut tx, lease, now, true).await {
            Ok(found) => found,
            Err(error) if error.reason() == "STALE_TASK" => {
                tx.rollback().await;
                return Ok(false);
            }
            Err(error) => return tx.fail(error).await,
        };
        let mut change = Change::new(run, session.as_mut(), now);
        if change.run.status == RunStatus::Cancelling {
            let message = "cancelled before a worker received the run";
            change
                .finish(
                    &mut tx,
                    &mut wakes,
                    RunStatus::Cancelled,
                    StopReason::Cancelled,
                    message,
                )
                .await?;
        } else {
            let message = "the claim did not reach its worker; back in the queue";
            change.status(RunStatus::Queued, StopReason::Unspecified, message)?;
            change.run.lease_epoch += 1;
            change.run.start_time = before.start_time;
            change.run.next_attempt_time = before.next_attempt_time;
            wakes.queue(&change.run);
            wakes.run(&change.run);
        }
        change.save(&mut tx).await?;
        tx.commit().await?;
        self.wake_everywhere(&wakes);
        Ok(true)
    }
}

/// Which workspaces' queues held a run at their pollers' latest first claim, in this
/// process: a PollTask's first claim goes straight to its transaction there (under a
/// backlog, a worker back from a run finds the next one), and looks first elsewhere (at
/// light load it finds none, and the look spares a transaction). Only first claims
/// count: a claim after a wake-up finds the run it was woken for, which says nothing
/// of what the next first claim will find. A guess either way costs a round trip or
/// two, never the outcome.
#[derive(Clone, Default)]
pub(crate) struct Backlogs(Arc<Mutex<HashSet<String>>>);

impl Backlogs {
    fn likely(&self, workspace: &str) -> bool {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(workspace)
    }

    fn found(&self, workspace: &str, attempt: ClaimAttempt, run: bool) {
        if attempt != ClaimAttempt::First {
            return;
        }
        let mut set = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if !run {
            set.remove(workspace);
        } else if !set.contains(workspace) {
            set.insert(workspace.to_owned());
        }
    }
}
