//! Concurrent-run slots (`run_slots`): one row per run a workspace may have RUNNING or
//! CANCELLING at once, free (`run_id` NULL) or held by that run.
//!
//! A claim takes a free slot and the run it leases together ([`take`]); on Postgres in
//! one statement, both rows with SKIP LOCKED, so the claims of one workspace proceed
//! side by side on different slots and runs and the quota holds without counting
//! anything. A run gives its slot back in the transaction that takes it out of RUNNING
//! or CANCELLING, or deletes it: triggers on `runs` do that (migration 0006), so no path
//! that changes a run's status, present or future, can leak a slot.
//!
//! A limit lowered under more held slots than it allows leaves a surplus
//! (`run_slot_surplus`): that many held slots are deleted instead of freed as their runs
//! let go of them, so no run starts until fewer runs than the new limit hold a slot.
//! Always: slots − surplus = `max_concurrent_runs`, and no slot is free while the
//! surplus is above zero.

use agentry_core::{Error, Result, run::Run, time::UnixMicros};
use sea_query::{Expr, LockType, OnConflict, Order, Query};

use super::{claim::candidates, rows::RunRow};
use crate::{
    db::{Tx, map_err},
    instances::instance_json,
    tables::{RunSlotSurplus, RunSlots},
};

/// The largest `max_concurrent_runs`: each slot is a row.
pub(crate) const MAX_CONCURRENT_RUNS: i32 = 10_000;

/// Slot rows inserted per statement.
const CHUNK: i32 = 500;

/// INVALID_ARGUMENT when `max_concurrent_runs` is above [`MAX_CONCURRENT_RUNS`].
pub(crate) fn check_limit(max_concurrent_runs: i32) -> Result<()> {
    if max_concurrent_runs > MAX_CONCURRENT_RUNS {
        return Err(Error::invalid(
            "workspace.quotas.max_concurrent_runs",
            format!("must be at most {MAX_CONCURRENT_RUNS}"),
        ));
    }
    Ok(())
}

/// Adds free slots `first..=last` to `workspace`.
pub(crate) async fn add(tx: &mut Tx, workspace: &str, first: i32, last: i32) -> Result<()> {
    let mut from = first.max(1);
    while from <= last {
        let to = last.min(from + CHUNK - 1);
        let mut insert = Query::insert()
            .into_table(RunSlots::Table)
            .columns([RunSlots::WorkspaceId, RunSlots::Slot])
            .to_owned();
        for slot in from..=to {
            insert.values_panic([workspace.into(), slot.into()]);
        }
        tx.execute(&insert).await?;
        from = to + 1;
    }
    Ok(())
}

/// Moves `workspace` to `limit` slots: more free slots (or less surplus), or fewer free
/// slots (and a surplus for the held ones above the limit).
pub(crate) async fn resize(tx: &mut Tx, workspace: &str, limit: i32) -> Result<()> {
    // Every slot row locked first (Postgres): a run letting go of its slot meanwhile has
    // locked its row before it reads the surplus, so either this sees the slot free or
    // that run sees the new surplus (see the trigger in migration 0006).
    let slots: Vec<(i32, Option<String>)> = tx
        .fetch_all(
            &Query::select()
                .columns([RunSlots::Slot, RunSlots::RunId])
                .from(RunSlots::Table)
                .and_where(Expr::col(RunSlots::WorkspaceId).eq(workspace))
                .order_by(RunSlots::Slot, Order::Asc)
                .lock(LockType::Update)
                .to_owned(),
        )
        .await?;
    let before: Option<(i32,)> = tx
        .fetch_optional(
            &Query::select()
                .column(RunSlotSurplus::Surplus)
                .from(RunSlotSurplus::Table)
                .and_where(Expr::col(RunSlotSurplus::WorkspaceId).eq(workspace))
                .lock(LockType::Update)
                .to_owned(),
        )
        .await?;
    let before = before.map_or(0, |(surplus,)| surplus);
    let mut surplus = before;
    let change = limit.max(0) - (slots.len() as i32 - surplus);
    if change > 0 {
        let cancelled = change.min(surplus);
        surplus -= cancelled;
        let top = slots.last().map_or(0, |(slot, _)| *slot);
        add(tx, workspace, top + 1, top + change - cancelled).await?;
    } else if change < 0 {
        // The free slots go first (the highest), then held ones as they are freed.
        let free: Vec<i32> = slots
            .iter()
            .rev()
            .filter(|(_, run)| run.is_none())
            .map(|(slot, _)| *slot)
            .take(change.unsigned_abs() as usize)
            .collect();
        surplus += -change - free.len() as i32;
        if !free.is_empty() {
            tx.execute(
                &Query::delete()
                    .from_table(RunSlots::Table)
                    .and_where(Expr::col(RunSlots::WorkspaceId).eq(workspace))
                    .and_where(Expr::col(RunSlots::Slot).is_in(free))
                    .to_owned(),
            )
            .await?;
        }
    }
    if surplus != before {
        tx.execute(
            &Query::insert()
                .into_table(RunSlotSurplus::Table)
                .columns([RunSlotSurplus::WorkspaceId, RunSlotSurplus::Surplus])
                .values_panic([workspace.into(), surplus.into()])
                .on_conflict(
                    OnConflict::column(RunSlotSurplus::WorkspaceId)
                        .update_column(RunSlotSurplus::Surplus)
                        .to_owned(),
                )
                .to_owned(),
        )
        .await?;
    }
    Ok(())
}

/// Postgres: a free slot and the oldest claimable run, both SKIP LOCKED, and the slot
/// marked held by the run when both exist; answers the run (not yet changed) and its
/// instance as JSON (`instance_json!`).
const TAKE: &str = concat!(
    r#"WITH slot AS MATERIALIZED (
    SELECT slot FROM run_slots
    WHERE workspace_id = $1 AND run_id IS NULL
    ORDER BY slot
    LIMIT 1
    FOR UPDATE SKIP LOCKED
), run AS MATERIALIZED (
    SELECT * FROM runs
    WHERE workspace_id = $1 AND status = 'QUEUED' AND ready = 1 AND agent_id = ANY($2)
      AND next_attempt_time <= $3 AND (deadline IS NULL OR deadline > $3)
      AND EXISTS (SELECT 1 FROM slot)
    ORDER BY next_attempt_time, run_id
    LIMIT 1
    FOR NO KEY UPDATE SKIP LOCKED
), held AS (
    UPDATE run_slots SET run_id = run.run_id
    FROM slot, run
    WHERE run_slots.workspace_id = $1 AND run_slots.slot = slot.slot
)
SELECT run.*, "#,
    instance_json!("run"),
    " AS instance FROM run"
);

#[derive(sqlx::FromRow)]
struct Taken {
    #[sqlx(flatten)]
    run: RunRow,
    instance: Option<String>,
}

/// Takes a free slot of `workspace` for its oldest run of `agents` claimable at `now`,
/// and answers that run (still QUEUED: the caller changes it) with, on Postgres, its
/// instance as JSON (for `instances::instance_from_json`; `None` on SQLite). `None`
/// when there is no free slot or no such run; then nothing changed.
pub(super) async fn take(
    tx: &mut Tx,
    workspace: &str,
    agents: &[String],
    now: UnixMicros,
) -> Result<Option<(Run, Option<String>)>> {
    if let Some((conn, _span)) = tx.postgres(TAKE) {
        let row: Option<Taken> = sqlx::query_as(TAKE)
            .bind(workspace)
            .bind(agents)
            .bind(now)
            .fetch_optional(conn)
            .await
            .map_err(map_err)?;
        return row
            .map(|taken| Ok((Run::try_from(taken.run)?, taken.instance)))
            .transpose();
    }
    // SQLite: the single writer serializes claims; the run first, then a slot for it.
    let row: Option<RunRow> = tx
        .fetch_optional(&candidates(workspace, agents, now))
        .await?;
    let Some(run) = row.map(Run::try_from).transpose()? else {
        return Ok(None);
    };
    let free = Query::select()
        .column(RunSlots::Slot)
        .from(RunSlots::Table)
        .and_where(Expr::col(RunSlots::WorkspaceId).eq(workspace))
        .and_where(Expr::col(RunSlots::RunId).is_null())
        .order_by(RunSlots::Slot, Order::Asc)
        .limit(1)
        .to_owned();
    let taken = tx
        .execute(
            &Query::update()
                .table(RunSlots::Table)
                .value(RunSlots::RunId, run.id.as_str())
                .and_where(Expr::col(RunSlots::WorkspaceId).eq(workspace))
                .and_where(Expr::col(RunSlots::Slot).in_subquery(free))
                .to_owned(),
        )
        .await?;
    Ok((taken > 0).then_some((run, None)))
}
