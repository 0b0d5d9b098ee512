//! Timers of runs, for the background reaper: lapsed leases (retry or fail with
//! WORKER_LOST; a CANCELLING run becomes CANCELLED), run timeouts (TIMED_OUT), expired
//! approvals (rejected) and backoff wake-ups. Each run is handled in its own transaction
//! under the same locks and guards as worker calls, so a reaper on any replica can never
//! overwrite a run that finished meanwhile.
//!
//! A pass is built so that nothing one run does can stop the others:
//! - due runs are read in timer order (oldest first) in pages, resuming after the last
//!   one seen, so a run that stays due (its handling failed) never hides the ones behind
//!   it, and the three kinds of timer take turns page by page;
//! - a run whose handling fails (an undecodable row, a failing write) is logged with its
//!   name and the reason and skipped; it is tried again in later passes, with backoff, so
//!   a bad row costs little and does not flood the log;
//! - on Postgres the session and run rows are locked with SKIP LOCKED: replicas split
//!   the due runs instead of queueing on each other, and a run a worker call holds just
//!   now is left to the next pass (its guard re-checks everything anyway);
//! - a pass stops after [`ReapLimits`] runs or time, and says so.
//!
//! A database that is unavailable ends the pass (every run would fail alike) without
//! marking any run as bad.

use std::time::Instant;

use agentry_core::{
    Error, Result,
    names::RunName,
    port::{ReapReport, RunReaper},
    run::{Fired, Run, RunStatus, Timer},
    time::{UnixMicros, now_micros},
    wake::WakeKey,
};
use sea_query::{Alias, Expr, LockBehavior, LockType, Order, Query};

use super::{
    Wakes,
    change::Change,
    rows::{RunRow, run_by_id, session_by_name},
};
use crate::{Store, tables::Runs};

/// The most pollers of one agent's queue a round of ended backoffs wakes.
const MAX_WOKEN_PER_QUEUE: i64 = 1024;

/// The column of the time `timer` falls due at.
fn column(timer: Timer) -> Runs {
    match timer {
        Timer::Lease => Runs::LeaseExpireTime,
        Timer::Deadline => Runs::Deadline,
        Timer::Approval => Runs::ApprovalExpireTime,
    }
}

#[derive(sqlx::FromRow)]
struct Due {
    due_time: i64,
    workspace_id: String,
    run_id: String,
    project_id: String,
    session_id: String,
}

/// Where a timer's scan resumes: after (due time, workspace, run).
type Cursor = (i64, String, String);

fn due_runs(
    timer: Timer,
    now: UnixMicros,
    after: Option<&Cursor>,
    limit: u64,
) -> sea_query::SelectStatement {
    let column = column(timer);
    let mut stmt = Query::select()
        .expr_as(Expr::col(column), Alias::new("due_time"))
        .columns([
            Runs::WorkspaceId,
            Runs::RunId,
            Runs::ProjectId,
            Runs::SessionId,
        ])
        .from(Runs::Table)
        .and_where(Expr::col(column).lt(now))
        .order_by(column, Order::Asc)
        .order_by(Runs::WorkspaceId, Order::Asc)
        .order_by(Runs::RunId, Order::Asc)
        .limit(limit)
        .to_owned();
    if let Some((time, workspace, run)) = after {
        stmt.and_where(
            Expr::tuple([
                Expr::col(column).into(),
                Expr::col(Runs::WorkspaceId).into(),
                Expr::col(Runs::RunId).into(),
            ])
            .gt(Expr::tuple([
                Expr::val(*time).into(),
                Expr::val(workspace.as_str()).into(),
                Expr::val(run.as_str()).into(),
            ])),
        );
    }
    stmt
}

impl Store {
    /// One pass over the run timers that fell due, within `reaper.limits`.
    pub async fn reap_runs(&self, reaper: &mut RunReaper) -> Result<ReapReport> {
        let started = Instant::now();
        let now = now_micros();
        let limits = reaper.limits;
        let mut report = ReapReport::default();
        let mut cursors: [Option<Cursor>; 3] = Default::default();
        let mut exhausted = [false; 3];
        let mut looked: u64 = 0;
        'pass: while exhausted.iter().any(|done| !done) {
            for (slot, timer) in Timer::ALL.into_iter().enumerate() {
                if exhausted[slot] {
                    continue;
                }
                let budget = limits.max_runs.saturating_sub(looked);
                if budget == 0 || started.elapsed() >= limits.max_time {
                    report.truncated = true;
                    break 'pass;
                }
                let page = limits.page.clamp(1, budget);
                let due: Vec<Due> = self
                    .db
                    .fetch_all(&due_runs(timer, now, cursors[slot].as_ref(), page))
                    .await?;
                exhausted[slot] = (due.len() as u64) < page;
                for due in due {
                    if started.elapsed() >= limits.max_time {
                        report.truncated = true;
                        break 'pass;
                    }
                    looked += 1;
                    cursors[slot] =
                        Some((due.due_time, due.workspace_id.clone(), due.run_id.clone()));
                    let key = (due.workspace_id.clone(), due.run_id.clone());
                    let name = RunName {
                        workspace: due.workspace_id,
                        project: due.project_id,
                        session: due.session_id,
                        run: due.run_id,
                    };
                    if reaper.deferred(&key, now) {
                        continue;
                    }
                    match self.fire(&name, timer).await {
                        Ok(fired) => {
                            reaper.handled(&key);
                            report.count(fired);
                        }
                        // Every run would fail alike: not this run's fault.
                        Err(error @ Error::Unavailable { .. }) => return Err(error),
                        Err(error) => {
                            let failures = reaper.failed(key, now_micros());
                            report.failed += 1;
                            tracing::warn!(
                                run = %name,
                                timer = ?timer,
                                failures,
                                %error,
                                "reaper skipped a run it could not handle"
                            );
                        }
                    }
                }
            }
        }
        report.backoffs_woken = self
            .wake_ended_backoffs(reaper.backoffs_since(), now)
            .await?;
        reaper.passed(now);
        Ok(report)
    }

    /// Wakes the pollers of workspaces with re-queued runs whose backoff ended in
    /// `(since, now]`; returns how many such runs there are. The re-queued condition is
    /// literal SQL, the predicate of the partial index `runs_backoff` (bound values
    /// cannot prove it for the prepared statement's cached plan).
    async fn wake_ended_backoffs(&self, since: UnixMicros, now: UnixMicros) -> Result<u64> {
        debug_assert_eq!(RunStatus::Queued.as_str(), "QUEUED");
        let woken: Vec<(String, String, i64)> = self
            .db
            .fetch_all(
                &Query::select()
                    .columns([Runs::WorkspaceId, Runs::AgentId])
                    .expr(Expr::col(Runs::RunId).count())
                    .from(Runs::Table)
                    .and_where(Expr::cust("status = 'QUEUED' AND attempt > 1"))
                    .and_where(Expr::col(Runs::NextAttemptTime).gt(since))
                    .and_where(Expr::col(Runs::NextAttemptTime).lte(now))
                    .group_by_col(Runs::WorkspaceId)
                    .group_by_col(Runs::AgentId)
                    .to_owned(),
            )
            .await?;
        let mut runs = 0;
        for (workspace, agent, count) in woken {
            // As many pollers of the agent as there are runs (each wakes one idle one).
            let queue = WakeKey::queue(&workspace, &agent);
            for _ in 0..count.min(MAX_WOKEN_PER_QUEUE) {
                self.feed.publish(&queue);
            }
            runs += count as u64;
        }
        Ok(runs)
    }

    /// Fires `timer` of run `name` as core decides; `None`: another transaction holds it.
    async fn fire(&self, name: &RunName, timer: Timer) -> Result<Option<Fired>> {
        let now = now_micros();
        let mut wakes = Wakes::default();
        let mut tx = self.db.begin().await?;
        // Session, then run: the order every writer locks them in.
        let session = tx
            .fetch_optional::<super::rows::SessionRow>(
                &session_by_name(&name.session())
                    .lock_with_behavior(LockType::NoKeyUpdate, LockBehavior::SkipLocked)
                    .to_owned(),
            )
            .await?;
        let Some(session) = session else {
            return Ok(None);
        };
        let mut session = session.try_into()?;
        let row: Option<RunRow> = tx
            .fetch_optional(
                &run_by_id(&name.workspace, &name.run)
                    .lock_with_behavior(LockType::NoKeyUpdate, LockBehavior::SkipLocked)
                    .to_owned(),
            )
            .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let run: Run = row.try_into()?;
        let mut change = Change::new(run, Some(&mut session), now);
        let (fired, ending) = change.fire(timer)?;
        if fired == Fired::Nothing {
            return Ok(Some(Fired::Nothing));
        }
        if let Some(ending) = ending {
            change.end(&mut tx, &mut wakes, ending).await?;
        }
        change.persist(&mut tx, &mut wakes).await?;
        tx.commit().await?;
        self.wake_everywhere(&wakes);
        Ok(Some(fired))
    }
}
