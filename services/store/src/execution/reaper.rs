//! Timers of runs, for the background reaper: lapsed leases (retry or fail with
//! WORKER_LOST; a CANCELLING run becomes CANCELLED), run timeouts (TIMED_OUT), expired
//! approvals (rejected) and backoff wake-ups. Each run is handled in its own transaction
//! under the same locks and guards as worker calls, so a reaper on any replica can never
//! overwrite a run that finished meanwhile.

use agentry_core::{
    Result,
    names::RunName,
    run::{Decision, RunStatus, StopReason},
    time::{Micros, now_micros},
};
use sea_query::{Expr, Query};

use super::{
    Wakes,
    change::Change,
    rows::{lock_run, lock_session},
    worker_lost,
};
use crate::{Store, tables::Runs};

/// How many runs one pass handles per kind of timer.
const BATCH: u64 = 200;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Timer {
    Lease,
    Deadline,
    Approval,
}

#[derive(sqlx::FromRow)]
struct Due {
    workspace_id: String,
    run_id: String,
    project_id: String,
    session_id: String,
}

impl Store {
    /// One pass over every timer that fell due by now; `since` is the previous pass's
    /// time (backoffs that ended in between wake pollers). Returns the runs changed.
    pub async fn reap_runs(&self, since: Micros) -> Result<u64> {
        let now = now_micros();
        let mut changed = 0;
        for (timer, column) in [
            (Timer::Lease, Runs::LeaseExpireTime),
            (Timer::Deadline, Runs::Deadline),
            (Timer::Approval, Runs::ApprovalExpireTime),
        ] {
            let due: Vec<Due> = self
                .db
                .fetch_all(
                    &Query::select()
                        .columns([
                            Runs::WorkspaceId,
                            Runs::RunId,
                            Runs::ProjectId,
                            Runs::SessionId,
                        ])
                        .from(Runs::Table)
                        .and_where(Expr::col(column).lt(now))
                        .limit(BATCH)
                        .to_owned(),
                )
                .await?;
            for due in due {
                let name = RunName {
                    workspace: due.workspace_id,
                    project: due.project_id,
                    session: due.session_id,
                    run: due.run_id,
                };
                if self.fire(&name, timer).await? {
                    changed += 1;
                }
            }
        }
        let woken: Vec<(String,)> = self
            .db
            .fetch_all(
                &Query::select()
                    .distinct()
                    .column(Runs::WorkspaceId)
                    .from(Runs::Table)
                    .and_where(Expr::col(Runs::Status).eq(RunStatus::Queued.as_str()))
                    .and_where(Expr::col(Runs::NextAttemptTime).gt(since))
                    .and_where(Expr::col(Runs::NextAttemptTime).lte(now))
                    .to_owned(),
            )
            .await?;
        let mut wakes = Wakes::default();
        for (workspace,) in woken {
            wakes.queue(&workspace);
        }
        self.wake(&wakes);
        Ok(changed)
    }

    async fn fire(&self, name: &RunName, timer: Timer) -> Result<bool> {
        let now = now_micros();
        let mut wakes = Wakes::default();
        let mut tx = self.db.begin().await?;
        let mut session = lock_session(&mut tx, &name.session()).await?;
        let run = lock_run(&mut tx, name).await?;
        let mut change = Change::new(run, Some(&mut session), now);
        let run = &change.run;
        match timer {
            Timer::Lease => {
                if !run.status.is_leased() || run.lease_expire_time.is_none_or(|t| t >= now) {
                    return Ok(false);
                }
                let w = &mut wakes;
                if run.status == RunStatus::Cancelling {
                    let message = "the lease lapsed while cancelling";
                    change
                        .finish(
                            &mut tx,
                            w,
                            RunStatus::Cancelled,
                            StopReason::Cancelled,
                            message,
                        )
                        .await?;
                } else {
                    let lost = worker_lost();
                    change.run.error = Some(lost.clone());
                    let policy = &change.run.retry_policy;
                    if policy.retries(change.run.attempt, &lost.error_type) {
                        let delay = policy.backoff(change.run.attempt);
                        change
                            .requeue(&mut tx, w, StopReason::WorkerLost, &lost.message, delay)
                            .await?;
                    } else {
                        change
                            .finish(
                                &mut tx,
                                w,
                                RunStatus::Failed,
                                StopReason::WorkerLost,
                                &lost.message,
                            )
                            .await?;
                    }
                }
            }
            Timer::Deadline => {
                if run.status.is_terminal() || run.deadline().is_none_or(|d| d >= now) {
                    return Ok(false);
                }
                let message = "the run timed out";
                change
                    .finish(
                        &mut tx,
                        &mut wakes,
                        RunStatus::TimedOut,
                        StopReason::Timeout,
                        message,
                    )
                    .await?;
            }
            Timer::Approval => {
                let expired = run.status == RunStatus::RequiresAction
                    && run
                        .approval
                        .as_ref()
                        .is_some_and(|a| a.decision.is_none() && a.expire_time < now);
                if !expired {
                    return Ok(false);
                }
                let mut approval = change.run.approval.take().expect("checked above");
                approval.decision = Some(Decision::Reject);
                approval.decided_by = "expired".into();
                change.approval_decided(&approval);
                change.run.approval = Some(approval);
                let message = "the plan expired without a decision";
                change.status(RunStatus::Queued, StopReason::Unspecified, message)?;
                change.run.next_attempt_time = now;
                wakes.queue(&change.run.workspace);
                wakes.run(&change.run);
            }
        }
        change.save(&mut tx).await?;
        wakes.notify(&mut tx, &self.replica).await?;
        tx.commit().await?;
        self.wake(&wakes);
        Ok(true)
    }
}
