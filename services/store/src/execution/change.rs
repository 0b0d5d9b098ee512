//! [`Change`]: one run changing inside a transaction (its row, and its session's when
//! the transcript or the session's active run changes, both already locked). The
//! decisions are `agentry_core::run::RunChange`'s, which a `Change` derefs to; it adds
//! what needs the database: the open tool calls an ending closes, the hand-off of the
//! session to its next queued run, and [`Change::save`], which writes the run, the
//! session, the transcript, the tool calls and the events together.

use std::ops::{Deref, DerefMut};

use agentry_core::{
    Result,
    run::{
        CallChanges, Ending, MessageBody, OpenCall, Run, RunChange, RunStatus, Session, StopReason,
    },
    time::UnixMicros,
};
use sea_query::{Expr, LockType, Order, Query};

use super::{
    Wakes,
    rows::{
        MESSAGE_COLUMNS, RunRow, insert_events, insert_run, save_run, save_session, session_runs,
    },
};
use crate::{
    db::{Tx, map_err},
    rows::{insert_rows, json, to_json},
    tables::{Messages, Runs, ToolCalls},
};

pub(crate) struct Change<'s> {
    core: RunChange,
    /// Locked by the caller when the change touches the transcript or ends the run.
    session: Option<&'s mut Session>,
}

impl Deref for Change<'_> {
    type Target = RunChange;

    fn deref(&self) -> &RunChange {
        &self.core
    }
}

impl DerefMut for Change<'_> {
    fn deref_mut(&mut self) -> &mut RunChange {
        &mut self.core
    }
}

impl<'s> Change<'s> {
    pub fn new(run: Run, session: Option<&'s mut Session>, now: UnixMicros) -> Self {
        Self {
            core: RunChange::new(run, session.as_deref(), now),
            session,
        }
    }

    /// A change core decided already (its session locked by the caller).
    pub fn of(core: RunChange, session: Option<&'s mut Session>) -> Self {
        Self { core, session }
    }

    /// Ends the run into `to` (see [`Change::end`]).
    pub async fn finish(
        &mut self,
        tx: &mut Tx,
        wakes: &mut Wakes,
        to: RunStatus,
        stop_reason: StopReason,
        message: &str,
    ) -> Result<()> {
        self.end(tx, wakes, Ending::finish(to, stop_reason, message))
            .await
    }

    /// Ends the attempt as core decided: closes its open tool calls, applies `ending`,
    /// and hands the session to the next queued run when the run leaves it.
    pub async fn end(&mut self, tx: &mut Tx, wakes: &mut Wakes, ending: Ending) -> Result<()> {
        let (open, waiting) = ending_reads(tx, &self.core.run, self.session.as_deref()).await?;
        self.core.close_calls(open, ending.synthetic_status())?;
        self.core.end(&ending)?;
        if let Some(session) = self.session.as_deref_mut()
            && self.core.hands_off(&ending, session)
        {
            flush(tx, &mut self.core, session).await?;
            if waiting {
                handoff(tx, session, wakes, self.core.now).await?;
            } else {
                session.hand_to(None, self.core.now);
            }
        }
        self.wakes_into(wakes);
        Ok(())
    }

    /// Moves the wake keys core collected so far into `wakes`.
    pub fn wakes_into(&mut self, wakes: &mut Wakes) {
        for key in self.core.wakes.drain(..) {
            wakes.push(key);
        }
    }

    /// Writes the tool-call changes decided so far, before the rest of the change.
    pub async fn write_calls(&mut self, tx: &mut Tx) -> Result<()> {
        let calls = std::mem::take(&mut self.core.calls);
        save_calls(tx, &self.core.run, &calls).await
    }

    /// [`Change::save`], its wake keys into `wakes`.
    pub async fn persist(mut self, tx: &mut Tx, wakes: &mut Wakes) -> Result<Run> {
        self.wakes_into(wakes);
        self.save(tx).await
    }

    /// Writes the run, its session (if locked) with the transcript appends, the tool
    /// call changes and the new events.
    pub async fn save(self, tx: &mut Tx) -> Result<Run> {
        self.write(tx, false).await
    }

    /// [`Change::save`] of a run just created.
    pub async fn insert(self, tx: &mut Tx) -> Result<Run> {
        self.write(tx, true).await
    }

    async fn write(mut self, tx: &mut Tx, new: bool) -> Result<Run> {
        if new {
            insert_run(tx, &self.core.run).await?;
        } else {
            save_run(tx, &self.core.run).await?;
        }
        if let Some(session) = self.session {
            flush(tx, &mut self.core, session).await?;
            save_session(tx, session, self.core.now).await?;
        }
        save_calls(tx, &self.core.run, &self.core.calls).await?;
        insert_events(tx, &self.core.run, &self.core.events).await?;
        Ok(self.core.run)
    }
}

/// The condition of a run waiting behind another in its session: literal SQL, the
/// predicate of the partial index `runs_waiting` (bound values cannot prove it for a
/// prepared statement's cached plan), which holds only waiting runs.
macro_rules! waiting {
    () => {
        "status = 'QUEUED' AND ready = 0"
    };
}

/// Postgres: the tool calls a run left open (as a JSON array of `[call_id, tool]`, in
/// call id order) and whether any run waits behind it in its session, in one statement.
const ENDING_READS: &str = concat!(
    "SELECT (SELECT coalesce(json_agg(json_build_array(call_id, tool) \
ORDER BY call_id), '[]')::text FROM tool_calls \
WHERE workspace_id = $1 AND run_id = $2 AND open = 1) AS open, \
EXISTS (SELECT 1 FROM runs WHERE workspace_id = $1 AND project_id = $3 AND session_id = $4 \
AND ",
    waiting!(),
    ") AS waiting"
);

/// What an ending reads before it decides: the tool calls the run left open, and, with
/// its session locked, whether a run may be waiting behind it there (true unless known
/// otherwise: then the hand-off looks for it).
///
/// On Postgres both come from one statement when the session is locked. The look for
/// waiting runs is sound there: every run that waits in a session was queued under the
/// session's lock, which this transaction holds since its first statement, so this
/// statement's snapshot, taken later, sees every one of them. (The first statement's
/// own snapshot would not: it may have waited for that lock.)
async fn ending_reads(
    tx: &mut Tx,
    run: &Run,
    session: Option<&Session>,
) -> Result<(Vec<OpenCall>, bool)> {
    tx.flush().await?;
    if let Some(session) = session
        && let Some((conn, _span)) = tx.postgres(ENDING_READS)
    {
        let (open, waiting): (String, bool) = sqlx::query_as(ENDING_READS)
            .bind(run.workspace.as_str())
            .bind(run.id.as_str())
            .bind(session.project.as_str())
            .bind(session.id.as_str())
            .fetch_one(conn)
            .await
            .map_err(map_err)?;
        let open: Vec<(String, String)> = json("open", &open)?;
        let open = open
            .into_iter()
            .map(|(id, tool)| OpenCall { id, tool })
            .collect();
        return Ok((open, waiting));
    }
    Ok((open_calls(tx, run).await?, true))
}

/// The tool calls the run left open.
async fn open_calls(tx: &mut Tx, run: &Run) -> Result<Vec<OpenCall>> {
    let open: Vec<(String, String)> = tx
        .fetch_all(
            &Query::select()
                .columns([ToolCalls::CallId, ToolCalls::Tool])
                .from(ToolCalls::Table)
                .and_where(Expr::col(ToolCalls::WorkspaceId).eq(run.workspace.as_str()))
                .and_where(Expr::col(ToolCalls::RunId).eq(run.id.as_str()))
                .and_where(Expr::col(ToolCalls::Open).eq(1))
                .order_by(ToolCalls::CallId, Order::Asc)
                .to_owned(),
        )
        .await?;
    Ok(open
        .into_iter()
        .map(|(id, tool)| OpenCall { id, tool })
        .collect())
}

/// Writes the tool-call changes core decided: new calls inserted (open or not), stored
/// ones that completed (or all of them) closed.
async fn save_calls(tx: &mut Tx, run: &Run, calls: &CallChanges) -> Result<()> {
    if calls.is_empty() {
        return Ok(());
    }
    if !calls.inserted.is_empty() {
        let rows = calls.inserted.iter().map(|(id, tool, open)| {
            [
                run.workspace.clone().into(),
                run.id.clone().into(),
                id.clone().into(),
                tool.clone().into(),
                i32::from(*open).into(),
            ]
        });
        let columns = [
            ToolCalls::WorkspaceId,
            ToolCalls::RunId,
            ToolCalls::CallId,
            ToolCalls::Tool,
            ToolCalls::Open,
        ];
        let insert = insert_rows(ToolCalls::Table, columns, rows);
        tx.execute(&insert).await?;
    }
    if !calls.closed.is_empty() || calls.close_all {
        let mut update = Query::update()
            .table(ToolCalls::Table)
            .value(ToolCalls::Open, 0)
            .and_where(Expr::col(ToolCalls::WorkspaceId).eq(run.workspace.as_str()))
            .and_where(Expr::col(ToolCalls::RunId).eq(run.id.as_str()))
            .to_owned();
        if !calls.close_all {
            update.and_where(Expr::col(ToolCalls::CallId).is_in(calls.closed.iter().cloned()));
        }
        tx.execute(&update).await?;
    }
    Ok(())
}

/// Writes the transcript appends core decided so far.
async fn flush(tx: &mut Tx, core: &mut RunChange, session: &mut Session) -> Result<()> {
    let (first, bodies) = core.take_transcript();
    if bodies.is_empty() {
        return Ok(());
    }
    debug_assert_eq!(first, session.message_count + 1);
    append_messages(tx, session, &core.run, &bodies, core.now).await?;
    Ok(())
}

/// Appends messages to a locked session's transcript; returns their sequence numbers.
pub(crate) async fn append_messages(
    tx: &mut Tx,
    session: &mut Session,
    run: &Run,
    bodies: &[MessageBody],
    now: UnixMicros,
) -> Result<Vec<i64>> {
    let mut sequences = Vec::with_capacity(bodies.len());
    // Chunked: SQLite binds at most 32766 parameters per statement.
    for chunk in bodies.chunks(500) {
        let rows = chunk.iter().map(|body| {
            session.message_count += 1;
            sequences.push(session.message_count);
            [
                session.workspace.clone().into(),
                session.project.clone().into(),
                session.id.clone().into(),
                session.message_count.into(),
                body.role.as_str().into(),
                body.content.clone().into(),
                body.tool_call
                    .as_ref()
                    .map(to_json)
                    .unwrap_or_default()
                    .into(),
                run.id.clone().into(),
                i32::from(run.supersede).into(),
                now.into(),
            ]
        });
        let columns = [
            Messages::WorkspaceId,
            Messages::ProjectId,
            Messages::SessionId,
        ];
        let stmt = insert_rows(
            Messages::Table,
            columns.into_iter().chain(MESSAGE_COLUMNS),
            rows,
        );
        tx.defer(&stmt);
    }
    Ok(sequences)
}

/// Gives the session to its oldest waiting run (`waiting!`), whose input joins the
/// transcript now. The caller writes the session back ([`Change::save`]).
pub(crate) async fn handoff(
    tx: &mut Tx,
    session: &mut Session,
    wakes: &mut Wakes,
    now: UnixMicros,
) -> Result<()> {
    debug_assert_eq!(RunStatus::Queued.as_str(), "QUEUED");
    let next: Option<RunRow> = tx
        .fetch_optional(
            &session_runs(session)
                .and_where(Expr::cust(waiting!()))
                .order_by(Runs::CreateTime, Order::Asc)
                .order_by(Runs::RunId, Order::Asc)
                .limit(1)
                .lock(LockType::NoKeyUpdate)
                .to_owned(),
        )
        .await?;
    let mut next: Option<Run> = next.map(Run::try_from).transpose()?;
    if let Some(key) = session.hand_to(next.as_mut(), now) {
        wakes.push(key);
    }
    if let Some(next) = next {
        let input = next.spec.input.clone();
        append_messages(tx, session, &next, &input, now).await?;
        save_run(tx, &next).await?;
    }
    Ok(())
}
