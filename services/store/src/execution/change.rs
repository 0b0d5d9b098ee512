//! [`Change`]: one run changing inside a transaction (its row, and its session's when
//! the transcript or the session's active run changes, both already locked). Events get
//! the next gapless sequence numbers in memory; [`Change::save`] writes the run, the
//! session and the events together.

use agentry_core::{
    Error, Result,
    run::{
        Approval, EventBody, MessageBody, MessageRole, Run, RunEvent, RunStatus, Session,
        StopReason, ToolCall,
    },
    time::Micros,
};
use sea_query::{Expr, LockType, Order, Query};

use super::{
    Wakes,
    rows::{RunRow, insert_events, save_run, save_session, select_runs},
};
use crate::{
    db::Tx,
    rows::to_json,
    tables::{Messages, Runs, ToolCalls},
};

pub(crate) struct Change<'s> {
    pub run: Run,
    /// Locked by the caller when the change touches the transcript or ends the run.
    pub session: Option<&'s mut Session>,
    pub events: Vec<RunEvent>,
    pub now: Micros,
}

#[derive(sqlx::FromRow)]
struct OpenCall {
    call_id: String,
    tool: String,
}

impl<'s> Change<'s> {
    pub fn new(run: Run, session: Option<&'s mut Session>, now: Micros) -> Self {
        Self {
            run,
            session,
            events: Vec::new(),
            now,
        }
    }

    /// Appends an event (the next sequence, the current attempt).
    pub fn event(&mut self, body: EventBody) {
        self.run.last_sequence += 1;
        self.events.push(RunEvent {
            sequence: self.run.last_sequence,
            attempt: self.run.attempt,
            body,
            create_time: self.now,
        });
    }

    /// Moves the run along the state machine and appends the status event.
    pub fn status(&mut self, to: RunStatus, stop_reason: StopReason, message: &str) -> Result<()> {
        let run = &mut self.run;
        if !run.status.can_become(to) {
            return Err(Error::internal(format!(
                "illegal run transition {} → {}",
                run.status.as_str(),
                to.as_str()
            )));
        }
        let previous = run.status;
        run.status = to;
        run.update_time = self.now;
        if !to.is_leased() {
            run.lease_expire_time = None;
        }
        if to.is_terminal() {
            run.stop_reason = stop_reason;
            run.end_time = Some(self.now);
            run.ready = false;
        }
        self.event(EventBody::StatusChanged {
            previous: Some(previous),
            status: to,
            stop_reason,
            message: message.to_owned(),
        });
        Ok(())
    }

    pub fn approval_decided(&mut self, approval: &Approval) {
        self.event(EventBody::ApprovalDecided {
            approval: approval.clone(),
        });
    }

    /// The transcript length before this change's messages.
    pub fn message_count(&self) -> i64 {
        self.session.as_ref().map_or(0, |s| s.message_count)
    }

    /// Appends messages to the session's transcript; returns their sequence numbers.
    pub async fn append_messages(
        &mut self,
        tx: &mut Tx,
        bodies: &[MessageBody],
    ) -> Result<Vec<i64>> {
        let session = self
            .session
            .as_deref_mut()
            .ok_or_else(|| Error::internal("a transcript change without its session"))?;
        append_messages(tx, session, &self.run, bodies, self.now).await
    }

    /// Closes every tool call the run left open with a synthetic result, so the
    /// transcript stays valid for the next run of the session.
    async fn close_open_calls(&mut self, tx: &mut Tx, status: &str) -> Result<()> {
        let open: Vec<OpenCall> = tx
            .fetch_all(
                &Query::select()
                    .columns([ToolCalls::CallId, ToolCalls::Tool])
                    .from(ToolCalls::Table)
                    .and_where(Expr::col(ToolCalls::WorkspaceId).eq(self.run.workspace.as_str()))
                    .and_where(Expr::col(ToolCalls::RunId).eq(self.run.id.as_str()))
                    .and_where(Expr::col(ToolCalls::Open).eq(1))
                    .order_by(ToolCalls::CallId, Order::Asc)
                    .to_owned(),
            )
            .await?;
        if open.is_empty() {
            return Ok(());
        }
        let mut bodies = Vec::with_capacity(open.len());
        for call in open {
            let call = ToolCall {
                id: call.call_id,
                tool: call.tool,
                arguments: None,
                result: Some(serde_json::json!({ "status": status })),
                is_error: true,
            };
            self.event(EventBody::ToolCallCompleted {
                call: call.clone(),
                synthetic: true,
            });
            bodies.push(MessageBody {
                role: MessageRole::Tool,
                content: String::new(),
                tool_call: Some(call),
            });
        }
        self.append_messages(tx, &bodies).await?;
        tx.execute(
            &Query::update()
                .table(ToolCalls::Table)
                .value(ToolCalls::Open, 0)
                .and_where(Expr::col(ToolCalls::WorkspaceId).eq(self.run.workspace.as_str()))
                .and_where(Expr::col(ToolCalls::RunId).eq(self.run.id.as_str()))
                .to_owned(),
        )
        .await?;
        Ok(())
    }

    /// Ends the run: closes its open tool calls, appends the terminal status event last,
    /// and hands the session to the next queued run.
    pub async fn finish(
        &mut self,
        tx: &mut Tx,
        wakes: &mut Wakes,
        to: RunStatus,
        stop_reason: StopReason,
        message: &str,
    ) -> Result<()> {
        let synthetic = match to {
            RunStatus::Cancelled | RunStatus::TimedOut => "cancelled",
            _ => "failed",
        };
        self.close_open_calls(tx, synthetic).await?;
        let was_leased = self.run.status.is_leased();
        self.status(to, stop_reason, message)?;
        if was_leased {
            wakes.slot(&self.run.workspace);
        }
        wakes.run(&self.run);
        let now = self.now;
        if let Some(session) = self.session.as_deref_mut()
            && session.active_run == self.run.id
        {
            handoff(tx, session, wakes, now).await?;
        }
        Ok(())
    }

    /// Back to the queue for another attempt, not before `delay`; the failed attempt's
    /// open tool calls are closed first.
    pub async fn requeue(
        &mut self,
        tx: &mut Tx,
        wakes: &mut Wakes,
        stop_reason: StopReason,
        message: &str,
        delay: Micros,
    ) -> Result<()> {
        self.close_open_calls(tx, "failed").await?;
        self.status(RunStatus::Queued, stop_reason, message)?;
        self.run.attempt += 1;
        self.run.next_attempt_time = self.now.saturating_add(delay);
        wakes.queue(&self.run);
        wakes.run(&self.run);
        Ok(())
    }

    /// Writes the run, its session (if locked) and the new events.
    pub async fn save(self, tx: &mut Tx) -> Result<Run> {
        if let Some(session) = self.session {
            save_session(tx, session, self.now).await?;
        }
        save_run(tx, &self.run).await?;
        insert_events(tx, &self.run, &self.events).await?;
        Ok(self.run)
    }
}

/// Appends messages to a locked session's transcript; returns their sequence numbers.
pub(crate) async fn append_messages(
    tx: &mut Tx,
    session: &mut Session,
    run: &Run,
    bodies: &[MessageBody],
    now: Micros,
) -> Result<Vec<i64>> {
    let mut sequences = Vec::with_capacity(bodies.len());
    // Chunked: SQLite binds at most 32766 parameters per statement.
    for chunk in bodies.chunks(500) {
        let mut stmt = Query::insert()
            .into_table(Messages::Table)
            .columns([
                Messages::WorkspaceId,
                Messages::ProjectId,
                Messages::SessionId,
                Messages::Sequence,
                Messages::Role,
                Messages::Content,
                Messages::ToolCall,
                Messages::RunId,
                Messages::Superseded,
                Messages::CreateTime,
            ])
            .to_owned();
        for body in chunk {
            session.message_count += 1;
            sequences.push(session.message_count);
            stmt.values_panic([
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
            ]);
        }
        tx.execute(&stmt).await?;
    }
    Ok(sequences)
}

/// Gives the session to its oldest waiting run, whose input joins the transcript now.
/// The caller writes the session back ([`Change::save`]).
pub(crate) async fn handoff(
    tx: &mut Tx,
    session: &mut Session,
    wakes: &mut Wakes,
    now: Micros,
) -> Result<()> {
    let next: Option<RunRow> = tx
        .fetch_optional(
            &select_runs()
                .and_where(Expr::col(Runs::WorkspaceId).eq(session.workspace.as_str()))
                .and_where(Expr::col(Runs::ProjectId).eq(session.project.as_str()))
                .and_where(Expr::col(Runs::SessionId).eq(session.id.as_str()))
                .and_where(Expr::col(Runs::Status).eq(RunStatus::Queued.as_str()))
                .and_where(Expr::col(Runs::Ready).eq(0))
                .order_by(Runs::CreateTime, Order::Asc)
                .order_by(Runs::RunId, Order::Asc)
                .limit(1)
                .lock(LockType::NoKeyUpdate)
                .to_owned(),
        )
        .await?;
    match next {
        Some(row) => {
            let mut next: Run = row.try_into()?;
            next.ready = true;
            next.update_time = now;
            let input = next.input.clone();
            append_messages(tx, session, &next, &input, now).await?;
            save_run(tx, &next).await?;
            session.active_run = next.id.clone();
            wakes.queue(&next);
        }
        None => session.active_run.clear(),
    }
    Ok(())
}
