//! Runs, worker side: heartbeats, event batches, plans, completion and failure (claims
//! are in `claim`). Every call is fenced by the [`Lease`] it names; core decides
//! (`agentry_core::run::RunChange`), this persists.

use std::collections::HashMap;

use agentry_core::{
    Error, Result,
    names::SessionName,
    port::WorkerStore,
    run::{
        Approval, Ending, EventInput, KnownCall, Lease, PlanStep, Run, Session, TaskCompletion,
        TaskFailure, stale,
    },
    time::{DurationMicros, UnixMicros, now_micros},
};
use async_trait::async_trait;
use sea_query::{Expr, LockType, Query};

use super::{
    change::Change,
    rows::{RunRow, SessionRow, lock_session, run_by_id, save_run},
};
use crate::{
    Store,
    db::{Tx, map_err},
    mutation::{Mutation, mutate_announcing},
    rows::json,
    tables::ToolCalls,
};

/// Postgres: the session locked, then the run (the session is read by the run row's
/// projection, below the run's lock), in one statement; the session as JSON.
const FENCED_WITH_SESSION: &str = "WITH s AS MATERIALIZED (SELECT * FROM sessions \
WHERE workspace_id = $1 AND project_id = $2 AND session_id = $3 FOR NO KEY UPDATE) \
SELECT r.*, (SELECT to_jsonb(s)::text FROM s) AS session FROM runs r \
WHERE r.workspace_id = $1 AND r.run_id = $4 FOR NO KEY UPDATE OF r";

#[derive(sqlx::FromRow)]
struct FencedRow {
    #[sqlx(flatten)]
    run: RunRow,
    session: Option<String>,
}

/// Locks the session (when asked) and the run, and checks that `lease` still holds. With
/// the session, one statement on Postgres: one round trip fewer for CompleteTask,
/// FailTask and transcript appends.
pub(super) async fn fenced(
    tx: &mut Tx,
    lease: &Lease,
    now: UnixMicros,
    with_session: bool,
) -> Result<(Option<Session>, Run)> {
    if with_session && let Some((conn, _span)) = tx.postgres(FENCED_WITH_SESSION) {
        let row: Option<FencedRow> = sqlx::query_as(FENCED_WITH_SESSION)
            .bind(lease.workspace.as_str())
            .bind(lease.project.as_str())
            .bind(lease.session.as_str())
            .bind(lease.run.as_str())
            .fetch_optional(conn)
            .await
            .map_err(map_err)?;
        let gone = || stale("the run no longer exists");
        let FencedRow { run, session } = row.ok_or_else(gone)?;
        let session: SessionRow = json("session", &session.ok_or_else(gone)?)?;
        let run: Run = run.try_into()?;
        lease.check(&run, now)?;
        return Ok((Some(session.try_into()?), run));
    }
    let session = if with_session {
        let name = SessionName {
            workspace: lease.workspace.clone(),
            project: lease.project.clone(),
            session: lease.session.clone(),
        };
        Some(lock_session(tx, &name).await.map_err(|e| match e {
            Error::NotFound { .. } => stale("the run no longer exists"),
            other => other,
        })?)
    } else {
        None
    };
    let row: Option<RunRow> = tx
        .fetch_optional(
            &run_by_id(&lease.workspace, &lease.run)
                .lock(LockType::NoKeyUpdate)
                .to_owned(),
        )
        .await?;
    let run: Run = row
        .ok_or_else(|| stale("the run no longer exists"))?
        .try_into()?;
    lease.check(&run, now)?;
    Ok((session, run))
}

/// The stored tool calls of `run` among `ids`.
async fn known_calls(tx: &mut Tx, run: &Run, ids: Vec<&str>) -> Result<HashMap<String, KnownCall>> {
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    let known: Vec<(String, String, i32)> = tx
        .fetch_all(
            &Query::select()
                .columns([ToolCalls::CallId, ToolCalls::Tool, ToolCalls::Open])
                .from(ToolCalls::Table)
                .and_where(Expr::col(ToolCalls::WorkspaceId).eq(run.workspace.as_str()))
                .and_where(Expr::col(ToolCalls::RunId).eq(run.id.as_str()))
                .and_where(Expr::col(ToolCalls::CallId).is_in(ids))
                .to_owned(),
        )
        .await?;
    Ok(known
        .into_iter()
        .map(|(id, tool, open)| {
            (
                id,
                KnownCall {
                    tool,
                    open: open != 0,
                },
            )
        })
        .collect())
}

/// Adds `inputs` to the change of a fenced run (its session locked when they touch the
/// transcript), checked against the tool calls it stored.
async fn append(tx: &mut Tx, change: &mut Change<'_>, inputs: &[EventInput]) -> Result<()> {
    let ids = inputs.iter().filter_map(EventInput::call_id).collect();
    let known = known_calls(tx, &change.run, ids).await?;
    change.append_events(inputs, known)
}

#[async_trait]
impl WorkerStore for Store {
    async fn heartbeat_task(&self, lease: &Lease, wait: DurationMicros) -> Result<Run> {
        let now = now_micros();
        let mut tx = self.db.begin().await?;
        let (_, run) = match fenced(&mut tx, lease, now, false).await {
            Ok(fenced) => fenced,
            Err(error) => return tx.fail(error).await,
        };
        let mut change = Change::new(run, None, now);
        change.heartbeat(wait);
        save_run(&mut tx, &change.run).await?;
        tx.commit().await?;
        Ok(change.run.clone())
    }

    async fn append_run_events(
        &self,
        m: &Mutation,
        lease: &Lease,
        inputs: Vec<EventInput>,
    ) -> Result<(i64, bool)> {
        let with_session = inputs.iter().any(EventInput::touches_transcript);
        mutate_announcing!(self, m, |tx, wakes| async {
            let now = now_micros();
            let (mut session, run) = fenced(tx, lease, now, with_session).await?;
            let mut change = Change::new(run, session.as_mut(), now);
            append(tx, &mut change, &inputs).await?;
            let run = change.persist(tx, &mut wakes).await?;
            Ok((run.last_sequence, run.cancel_requested))
        })
    }

    async fn propose_plan(
        &self,
        m: &Mutation,
        lease: &Lease,
        steps: Vec<PlanStep>,
    ) -> Result<(bool, Approval)> {
        mutate_announcing!(self, m, |tx, wakes| async {
            let now = now_micros();
            let (_, run) = fenced(tx, lease, now, false).await?;
            let mut change = Change::new(run, None, now);
            let id = uuid::Uuid::now_v7().to_string();
            let answer = change.propose(id, &steps)?;
            change.persist(tx, &mut wakes).await?;
            Ok(answer)
        })
    }

    async fn complete_task(
        &self,
        m: &Mutation,
        lease: &Lease,
        done: TaskCompletion,
    ) -> Result<Run> {
        let TaskCompletion {
            events,
            output,
            usage,
            stop_reason,
        } = done;
        self.end_task(m, lease, events, move |change| {
            change.complete(&output, &usage, stop_reason)
        })
        .await
    }

    async fn fail_task(&self, m: &Mutation, lease: &Lease, failure: TaskFailure) -> Result<Run> {
        let TaskFailure {
            error,
            retryable,
            next_retry_delay,
        } = failure;
        self.end_task(m, lease, Vec::new(), move |change| {
            Ok(change.fail(&error, retryable, next_retry_delay))
        })
        .await
    }
}

impl Store {
    /// CompleteTask and FailTask: `events` are appended (as AppendRunEvents would), then
    /// the attempt ends as `end` decides, all in one transaction.
    async fn end_task(
        &self,
        m: &Mutation,
        lease: &Lease,
        events: Vec<EventInput>,
        end: impl FnOnce(&mut Change<'_>) -> Result<Ending> + Send,
    ) -> Result<Run> {
        mutate_announcing!(self, m, |tx, wakes| async {
            let now = now_micros();
            let (mut session, run) = fenced(tx, lease, now, true).await?;
            let mut change = Change::new(run, session.as_mut(), now);
            if !events.is_empty() {
                append(tx, &mut change, &events).await?;
                // Written now: the ending closes the calls it finds open in storage.
                change.write_calls(tx).await?;
            }
            let ending = end(&mut change)?;
            change.end(tx, &mut wakes, ending).await?;
            let run = change.persist(tx, &mut wakes).await?;
            Ok(run)
        })
    }
}
