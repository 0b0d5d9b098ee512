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
    Wakes, approval_decided, finish, insert_events, lock_run, lock_session, save_run, save_session,
    set_status, worker::requeue, worker_lost,
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
        let mut run = lock_run(&mut tx, name).await?;
        let mut events = Vec::new();
        match timer {
            Timer::Lease => {
                if !run.status.is_leased() || run.lease_expire_time.is_none_or(|t| t >= now) {
                    return Ok(false);
                }
                if run.status == RunStatus::Cancelling {
                    let message = "the lease lapsed while cancelling";
                    finish(
                        &mut tx,
                        &mut session,
                        &mut run,
                        &mut events,
                        &mut wakes,
                        RunStatus::Cancelled,
                        StopReason::Cancelled,
                        message,
                        now,
                    )
                    .await?;
                } else {
                    let lost = worker_lost();
                    run.error = Some(lost.clone());
                    if run.retry_policy.retries(run.attempt, &lost.error_type) {
                        let delay = run.retry_policy.backoff(run.attempt);
                        requeue(
                            &mut tx,
                            &mut session,
                            &mut run,
                            &mut events,
                            &mut wakes,
                            StopReason::WorkerLost,
                            &lost.message,
                            delay,
                            now,
                        )
                        .await?;
                    } else {
                        finish(
                            &mut tx,
                            &mut session,
                            &mut run,
                            &mut events,
                            &mut wakes,
                            RunStatus::Failed,
                            StopReason::WorkerLost,
                            &lost.message,
                            now,
                        )
                        .await?;
                    }
                }
            }
            Timer::Deadline => {
                if run.status.is_terminal() || run.deadline().is_none_or(|d| d >= now) {
                    return Ok(false);
                }
                finish(
                    &mut tx,
                    &mut session,
                    &mut run,
                    &mut events,
                    &mut wakes,
                    RunStatus::TimedOut,
                    StopReason::Timeout,
                    "the run timed out",
                    now,
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
                let mut approval = run.approval.take().expect("checked above");
                approval.decision = Some(Decision::Reject);
                approval.decided_by = "expired".into();
                approval_decided(&mut run, &mut events, &approval, now);
                run.approval = Some(approval);
                set_status(
                    &mut run,
                    &mut events,
                    RunStatus::Queued,
                    StopReason::Unspecified,
                    "the plan expired without a decision",
                    now,
                )?;
                run.next_attempt_time = now;
                wakes.queue(&run.workspace);
                wakes.run(&run);
            }
        }
        save_session(&mut tx, &session, now).await?;
        save_run(&mut tx, &run).await?;
        insert_events(&mut tx, &run, &events).await?;
        wakes.notify(&mut tx).await?;
        tx.commit().await?;
        self.wake(&wakes);
        Ok(true)
    }
}
