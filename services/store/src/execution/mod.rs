//! Execution: sessions and their transcripts (`sessions`, `messages`), runs (`runs`),
//! the tool calls a run opened (`tool_calls`) and each run's append-only event log
//! (`run_events`).
//!
//! Every change to a run happens in one transaction that locks the session row (when the
//! transcript or the session's active run changes) and then the run row — always in that
//! order — applies the state machine of `agentry_core::run` in memory, appends the
//! events that describe it with the next gapless sequence numbers, writes the run back
//! and NOTIFYs. A worker call is fenced by the lease it names: the run must still be
//! leased, to the same attempt and lease epoch, with the lease not expired.
//!
//! Claims serialize per workspace on the workspace row (FOR NO KEY UPDATE), which is
//! what keeps `max_concurrent_runs` exact, and pick the run with FOR UPDATE SKIP LOCKED;
//! on SQLite the single writer does both.

mod reaper;
mod runs;
mod sessions;
mod worker;

use std::sync::Arc;

use agentry_core::{
    Error, Result,
    model::Labels,
    names::{RunName, SessionName},
    run::{
        Approval, AutonomyLevel, ContextBinding, EventBody, Message, MessageBody, MessageRole,
        MultitaskStrategy, RetryPolicy, Run, RunError, RunEvent, RunStatus, Session, StopReason,
        ToolCall, Usage,
    },
    time::Micros,
};
use sea_query::{Alias, Expr, Func, LockType, Order, Query, SelectStatement};
use serde::{Deserialize, Serialize};

pub use runs::{NewRun, RunFilter, StatRow};
pub use sessions::NewSession;
pub use worker::EventInput;

use crate::{
    Store,
    db::{Backend, Tx},
    rows::{json, labels, to_json},
    tables::{Messages, RunEvents, Runs, Sessions, ToolCalls},
};

/// The Postgres NOTIFY channel of execution wake-ups: [`run_key`] and [`queue_key`].
pub const RUN_CHANNEL: &str = "agentry_run";

/// Wake-up key of one run (its events, its cancel flag).
pub fn run_key(workspace: &str, run: &str) -> String {
    format!("run:{workspace}:{run}")
}

/// Wake-up key of a workspace's queue (a run may have become claimable).
pub fn queue_key(workspace: &str) -> String {
    format!("queue:{workspace}")
}

/// Called with each wake-up key after the transaction that caused it committed.
pub type Waker = Arc<dyn Fn(&str) + Send + Sync>;

/// Wake-up keys collected by a transaction.
#[derive(Default)]
pub(crate) struct Wakes(Vec<String>);

impl Wakes {
    pub(crate) fn run(&mut self, run: &Run) {
        self.push(run_key(&run.workspace, &run.id));
    }

    pub(crate) fn queue(&mut self, workspace: &str) {
        self.push(queue_key(workspace));
    }

    fn push(&mut self, key: String) {
        if !self.0.contains(&key) {
            self.0.push(key);
        }
    }

    /// NOTIFYs other replicas inside the transaction (delivered only if it commits).
    pub(crate) async fn notify(&self, tx: &mut Tx) -> Result<()> {
        if tx.backend() != Backend::Postgres || self.0.is_empty() {
            return Ok(());
        }
        let mut select = Query::select();
        for key in &self.0 {
            select.expr(
                Func::cust(Alias::new("pg_notify"))
                    .arg(RUN_CHANNEL)
                    .arg(key.as_str()),
            );
        }
        tx.execute(&select).await?;
        Ok(())
    }
}

impl Store {
    /// Installs the in-process wake-up callback.
    pub fn with_waker(mut self, waker: Waker) -> Self {
        self.waker = Some(waker);
        self
    }

    pub(crate) fn wake(&self, wakes: &Wakes) {
        if let Some(waker) = &self.waker {
            for key in &wakes.0 {
                waker(key);
            }
        }
    }
}

/// What CreateRun fixes for the life of a run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct RunSpec {
    pub autonomy: AutonomyLevel,
    pub timeout: Micros,
    pub retry_policy: RetryPolicy,
    pub strategy: MultitaskStrategy,
    pub input: Vec<MessageBody>,
    pub contexts: Vec<ContextBinding>,
    pub labels: Labels,
    pub approval_timeout: Micros,
}

// ---------------------------------------------------------------------------------------
// Rows

#[derive(sqlx::FromRow)]
pub(crate) struct SessionRow {
    workspace_id: String,
    project_id: String,
    session_id: String,
    instance_id: String,
    description: String,
    labels: String,
    active_run: String,
    message_count: i64,
    create_time: i64,
    update_time: i64,
}

impl TryFrom<SessionRow> for Session {
    type Error = Error;

    fn try_from(row: SessionRow) -> Result<Self> {
        Ok(Self {
            labels: labels(&row.labels)?,
            workspace: row.workspace_id,
            project: row.project_id,
            id: row.session_id,
            instance: row.instance_id,
            description: row.description,
            active_run: row.active_run,
            message_count: row.message_count,
            create_time: row.create_time,
            update_time: row.update_time,
        })
    }
}

pub(crate) const SESSION_COLUMNS: [Sessions; 10] = [
    Sessions::WorkspaceId,
    Sessions::ProjectId,
    Sessions::SessionId,
    Sessions::InstanceId,
    Sessions::Description,
    Sessions::Labels,
    Sessions::ActiveRun,
    Sessions::MessageCount,
    Sessions::CreateTime,
    Sessions::UpdateTime,
];

pub(crate) fn session_by_name(name: &SessionName) -> SelectStatement {
    Query::select()
        .columns(SESSION_COLUMNS)
        .from(Sessions::Table)
        .and_where(Expr::col(Sessions::WorkspaceId).eq(name.workspace.as_str()))
        .and_where(Expr::col(Sessions::ProjectId).eq(name.project.as_str()))
        .and_where(Expr::col(Sessions::SessionId).eq(name.session.as_str()))
        .to_owned()
}

pub(crate) async fn lock_session(tx: &mut Tx, name: &SessionName) -> Result<Session> {
    let row: Option<SessionRow> = tx
        .fetch_optional(&session_by_name(name).lock(LockType::NoKeyUpdate).to_owned())
        .await?;
    row.ok_or_else(|| Error::not_found(name.to_string()))?
        .try_into()
}

pub(crate) async fn save_session(tx: &mut Tx, session: &Session, now: Micros) -> Result<()> {
    let stmt = Query::update()
        .table(Sessions::Table)
        .value(Sessions::ActiveRun, session.active_run.as_str())
        .value(Sessions::MessageCount, session.message_count)
        .value(Sessions::UpdateTime, now)
        .and_where(Expr::col(Sessions::WorkspaceId).eq(session.workspace.as_str()))
        .and_where(Expr::col(Sessions::ProjectId).eq(session.project.as_str()))
        .and_where(Expr::col(Sessions::SessionId).eq(session.id.as_str()))
        .to_owned();
    tx.execute(&stmt).await?;
    Ok(())
}

#[derive(sqlx::FromRow)]
pub(crate) struct RunRow {
    workspace_id: String,
    run_id: String,
    project_id: String,
    session_id: String,
    instance_id: String,
    agent_id: String,
    agent_revision: i64,
    status: String,
    stop_reason: String,
    ready: i32,
    spec: String,
    attempt: i32,
    error: String,
    input_tokens: i64,
    output_tokens: i64,
    cost_usd: f64,
    last_sequence: i64,
    cancel_requested: i32,
    supersede: i32,
    approval: String,
    output: String,
    next_attempt_time: i64,
    lease_epoch: i64,
    lease_expire_time: Option<i64>,
    lease_duration: i64,
    worker: String,
    create_time: i64,
    start_time: Option<i64>,
    end_time: Option<i64>,
    update_time: i64,
}

pub(crate) const RUN_COLUMNS: [Runs; 30] = [
    Runs::WorkspaceId,
    Runs::RunId,
    Runs::ProjectId,
    Runs::SessionId,
    Runs::InstanceId,
    Runs::AgentId,
    Runs::AgentRevision,
    Runs::Status,
    Runs::StopReason,
    Runs::Ready,
    Runs::Spec,
    Runs::Attempt,
    Runs::Error,
    Runs::InputTokens,
    Runs::OutputTokens,
    Runs::CostUsd,
    Runs::LastSequence,
    Runs::CancelRequested,
    Runs::Supersede,
    Runs::Approval,
    Runs::Output,
    Runs::NextAttemptTime,
    Runs::LeaseEpoch,
    Runs::LeaseExpireTime,
    Runs::LeaseDuration,
    Runs::Worker,
    Runs::CreateTime,
    Runs::StartTime,
    Runs::EndTime,
    Runs::UpdateTime,
];

fn optional_json<T: serde::de::DeserializeOwned>(column: &str, text: &str) -> Result<Option<T>> {
    if text.is_empty() {
        Ok(None)
    } else {
        json(column, text).map(Some)
    }
}

impl TryFrom<RunRow> for Run {
    type Error = Error;

    fn try_from(row: RunRow) -> Result<Self> {
        let spec: RunSpec = json("spec", &row.spec)?;
        let status = RunStatus::parse(&row.status)
            .ok_or_else(|| Error::internal(format!("unknown run status {:?}", row.status)))?;
        let stop_reason = StopReason::parse(&row.stop_reason)
            .ok_or_else(|| Error::internal(format!("unknown stop reason {:?}", row.stop_reason)))?;
        Ok(Self {
            error: optional_json("error", &row.error)?,
            approval: optional_json("approval", &row.approval)?,
            output: if row.output.is_empty() {
                Vec::new()
            } else {
                json("output", &row.output)?
            },
            workspace: row.workspace_id,
            project: row.project_id,
            session: row.session_id,
            id: row.run_id,
            instance: row.instance_id,
            agent: row.agent_id,
            agent_revision: row.agent_revision,
            status,
            stop_reason,
            autonomy: spec.autonomy,
            timeout: spec.timeout,
            retry_policy: spec.retry_policy,
            strategy: spec.strategy,
            input: spec.input,
            contexts: spec.contexts,
            attempt: row.attempt,
            usage: Usage {
                input_tokens: row.input_tokens,
                output_tokens: row.output_tokens,
                cost_usd: row.cost_usd,
            },
            last_sequence: row.last_sequence,
            cancel_requested: row.cancel_requested != 0,
            approval_timeout: spec.approval_timeout,
            next_attempt_time: row.next_attempt_time,
            labels: spec.labels,
            create_time: row.create_time,
            start_time: row.start_time,
            end_time: row.end_time,
            update_time: row.update_time,
            lease_epoch: row.lease_epoch,
            lease_expire_time: row.lease_expire_time,
            lease_duration: row.lease_duration,
            worker: row.worker,
            ready: row.ready != 0,
            supersede: row.supersede != 0,
        })
    }
}

pub(crate) fn spec_of(run: &Run) -> RunSpec {
    RunSpec {
        autonomy: run.autonomy,
        timeout: run.timeout,
        retry_policy: run.retry_policy.clone(),
        strategy: run.strategy,
        input: run.input.clone(),
        contexts: run.contexts.clone(),
        labels: run.labels.clone(),
        approval_timeout: run.approval_timeout,
    }
}

pub(crate) fn select_runs() -> SelectStatement {
    Query::select()
        .columns(RUN_COLUMNS)
        .from(Runs::Table)
        .to_owned()
}

pub(crate) fn run_by_id(workspace: &str, run: &str) -> SelectStatement {
    select_runs()
        .and_where(Expr::col(Runs::WorkspaceId).eq(workspace))
        .and_where(Expr::col(Runs::RunId).eq(run))
        .to_owned()
}

/// The run a name designates: the id must belong to the named project and session.
pub(crate) fn matches_name(run: Run, name: &RunName) -> Result<Run> {
    if run.project == name.project && run.session == name.session {
        Ok(run)
    } else {
        Err(Error::not_found(name.to_string()))
    }
}

pub(crate) async fn lock_run(tx: &mut Tx, name: &RunName) -> Result<Run> {
    let row: Option<RunRow> = tx
        .fetch_optional(
            &run_by_id(&name.workspace, &name.run)
                .lock(LockType::NoKeyUpdate)
                .to_owned(),
        )
        .await?;
    matches_name(
        row.ok_or_else(|| Error::not_found(name.to_string()))?
            .try_into()?,
        name,
    )
}

fn deadline_of(run: &Run) -> Option<Micros> {
    if run.status.is_terminal() {
        None
    } else {
        run.deadline()
    }
}

/// Writes every mutable column of `run` back (the row is locked by this transaction).
pub(crate) async fn save_run(tx: &mut Tx, run: &Run) -> Result<()> {
    let approval_expiry = match (&run.approval, run.status) {
        (Some(a), RunStatus::RequiresAction) if a.decision.is_none() => Some(a.expire_time),
        _ => None,
    };
    let stmt = Query::update()
        .table(Runs::Table)
        .value(Runs::Status, run.status.as_str())
        .value(Runs::StopReason, run.stop_reason.as_str())
        .value(Runs::Ready, i32::from(run.ready))
        .value(Runs::Attempt, run.attempt)
        .value(
            Runs::Error,
            run.error.as_ref().map(to_json).unwrap_or_default(),
        )
        .value(Runs::InputTokens, run.usage.input_tokens)
        .value(Runs::OutputTokens, run.usage.output_tokens)
        .value(Runs::CostUsd, run.usage.cost_usd)
        .value(Runs::LastSequence, run.last_sequence)
        .value(Runs::CancelRequested, i32::from(run.cancel_requested))
        .value(Runs::Supersede, i32::from(run.supersede))
        .value(
            Runs::Approval,
            run.approval.as_ref().map(to_json).unwrap_or_default(),
        )
        .value(Runs::ApprovalExpireTime, approval_expiry)
        .value(
            Runs::Output,
            if run.output.is_empty() {
                String::new()
            } else {
                to_json(&run.output)
            },
        )
        .value(Runs::NextAttemptTime, run.next_attempt_time)
        .value(Runs::Deadline, deadline_of(run))
        .value(Runs::LeaseEpoch, run.lease_epoch)
        .value(Runs::LeaseExpireTime, run.lease_expire_time)
        .value(Runs::LeaseDuration, run.lease_duration)
        .value(Runs::Worker, run.worker.as_str())
        .value(Runs::StartTime, run.start_time)
        .value(Runs::EndTime, run.end_time)
        .value(Runs::UpdateTime, run.update_time)
        .and_where(Expr::col(Runs::WorkspaceId).eq(run.workspace.as_str()))
        .and_where(Expr::col(Runs::RunId).eq(run.id.as_str()))
        .to_owned();
    tx.execute(&stmt).await?;
    Ok(())
}

pub(crate) async fn insert_run(tx: &mut Tx, run: &Run) -> Result<()> {
    let stmt = Query::insert()
        .into_table(Runs::Table)
        .columns(
            RUN_COLUMNS
                .into_iter()
                .chain([Runs::ApprovalExpireTime, Runs::Deadline]),
        )
        .values_panic([
            run.workspace.clone().into(),
            run.id.clone().into(),
            run.project.clone().into(),
            run.session.clone().into(),
            run.instance.clone().into(),
            run.agent.clone().into(),
            run.agent_revision.into(),
            run.status.as_str().into(),
            run.stop_reason.as_str().into(),
            i32::from(run.ready).into(),
            to_json(&spec_of(run)).into(),
            run.attempt.into(),
            String::new().into(),
            0i64.into(),
            0i64.into(),
            0f64.into(),
            run.last_sequence.into(),
            0i32.into(),
            i32::from(run.supersede).into(),
            String::new().into(),
            String::new().into(),
            run.next_attempt_time.into(),
            0i64.into(),
            None::<i64>.into(),
            0i64.into(),
            String::new().into(),
            run.create_time.into(),
            None::<i64>.into(),
            None::<i64>.into(),
            run.update_time.into(),
            None::<i64>.into(),
            deadline_of(run).into(),
        ])
        .to_owned();
    tx.execute(&stmt).await?;
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Events and the transcript

/// Appends an event to `run` in memory (the next sequence, the current attempt).
pub(crate) fn push_event(run: &mut Run, events: &mut Vec<RunEvent>, body: EventBody, now: Micros) {
    run.last_sequence += 1;
    events.push(RunEvent {
        sequence: run.last_sequence,
        attempt: run.attempt,
        body,
        create_time: now,
    });
}

pub(crate) async fn insert_events(tx: &mut Tx, run: &Run, events: &[RunEvent]) -> Result<()> {
    // Chunked: SQLite binds at most 32766 parameters per statement.
    for chunk in events.chunks(500) {
        let mut stmt = Query::insert()
            .into_table(RunEvents::Table)
            .columns([
                RunEvents::WorkspaceId,
                RunEvents::RunId,
                RunEvents::Sequence,
                RunEvents::Attempt,
                RunEvents::Kind,
                RunEvents::Body,
                RunEvents::CreateTime,
            ])
            .to_owned();
        for event in chunk {
            stmt.values_panic([
                run.workspace.clone().into(),
                run.id.clone().into(),
                event.sequence.into(),
                event.attempt.into(),
                event.body.kind().into(),
                to_json(&event.body).into(),
                event.create_time.into(),
            ]);
        }
        tx.execute(&stmt).await?;
    }
    Ok(())
}

#[derive(sqlx::FromRow)]
pub(crate) struct EventRow {
    sequence: i64,
    attempt: i32,
    body: String,
    create_time: i64,
}

impl TryFrom<EventRow> for RunEvent {
    type Error = Error;

    fn try_from(row: EventRow) -> Result<Self> {
        Ok(Self {
            sequence: row.sequence,
            attempt: row.attempt,
            body: json("body", &row.body)?,
            create_time: row.create_time,
        })
    }
}

/// Appends messages to the session's transcript (the session row is locked); returns
/// their sequence numbers.
pub(crate) async fn append_messages(
    tx: &mut Tx,
    session: &mut Session,
    run: &Run,
    bodies: &[MessageBody],
    now: Micros,
) -> Result<Vec<i64>> {
    if bodies.is_empty() {
        return Ok(Vec::new());
    }
    let mut sequences = Vec::with_capacity(bodies.len());
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

#[derive(sqlx::FromRow)]
pub(crate) struct MessageRow {
    sequence: i64,
    role: String,
    content: String,
    tool_call: String,
    run_id: String,
    superseded: i32,
    create_time: i64,
}

impl TryFrom<MessageRow> for Message {
    type Error = Error;

    fn try_from(row: MessageRow) -> Result<Self> {
        Ok(Self {
            sequence: row.sequence,
            body: MessageBody {
                role: MessageRole::parse(&row.role)
                    .ok_or_else(|| Error::internal(format!("unknown role {:?}", row.role)))?,
                content: row.content,
                tool_call: optional_json("tool_call", &row.tool_call)?,
            },
            run: row.run_id,
            superseded: row.superseded != 0,
            create_time: row.create_time,
        })
    }
}

/// Moves `run` to `to` in memory and appends the status event.
pub(crate) fn set_status(
    run: &mut Run,
    events: &mut Vec<RunEvent>,
    to: RunStatus,
    stop_reason: StopReason,
    message: &str,
    now: Micros,
) -> Result<()> {
    if !run.status.can_become(to) {
        return Err(Error::internal(format!(
            "illegal run transition {} → {}",
            run.status.as_str(),
            to.as_str()
        )));
    }
    let previous = run.status;
    run.status = to;
    run.update_time = now;
    if !to.is_leased() {
        run.lease_expire_time = None;
    }
    if to.is_terminal() {
        run.stop_reason = stop_reason;
        run.end_time = Some(now);
        run.ready = false;
    }
    push_event(
        run,
        events,
        EventBody::StatusChanged {
            previous: Some(previous),
            status: to,
            stop_reason,
            message: message.to_owned(),
        },
        now,
    );
    Ok(())
}

#[derive(sqlx::FromRow)]
struct OpenCall {
    call_id: String,
    tool: String,
}

/// Closes every tool call `run` left open with a synthetic result, so the transcript
/// stays valid for the next run of the session.
pub(crate) async fn close_open_calls(
    tx: &mut Tx,
    session: &mut Session,
    run: &mut Run,
    events: &mut Vec<RunEvent>,
    status: &str,
    now: Micros,
) -> Result<()> {
    let open: Vec<OpenCall> = tx
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
        push_event(
            run,
            events,
            EventBody::ToolCallCompleted {
                call: call.clone(),
                synthetic: true,
            },
            now,
        );
        bodies.push(MessageBody {
            role: MessageRole::Tool,
            content: String::new(),
            tool_call: Some(call),
        });
    }
    append_messages(tx, session, run, &bodies, now).await?;
    tx.execute(
        &Query::update()
            .table(ToolCalls::Table)
            .value(ToolCalls::Open, 0)
            .and_where(Expr::col(ToolCalls::WorkspaceId).eq(run.workspace.as_str()))
            .and_where(Expr::col(ToolCalls::RunId).eq(run.id.as_str()))
            .to_owned(),
    )
    .await?;
    Ok(())
}

/// Ends `run` (session and run locked): closes its open tool calls, appends the terminal
/// status event last, and hands the session to the next queued run.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn finish(
    tx: &mut Tx,
    session: &mut Session,
    run: &mut Run,
    events: &mut Vec<RunEvent>,
    wakes: &mut Wakes,
    to: RunStatus,
    stop_reason: StopReason,
    message: &str,
    now: Micros,
) -> Result<()> {
    let synthetic = match to {
        RunStatus::Cancelled | RunStatus::TimedOut => "cancelled",
        _ => "failed",
    };
    close_open_calls(tx, session, run, events, synthetic, now).await?;
    let was_leased = run.status.is_leased();
    set_status(run, events, to, stop_reason, message, now)?;
    if was_leased {
        wakes.queue(&run.workspace);
    }
    wakes.run(run);
    if session.active_run == run.id {
        handoff(tx, session, wakes, now).await?;
    }
    Ok(())
}

/// Gives the session to its oldest waiting run, whose input joins the transcript now.
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
            wakes.queue(&session.workspace);
        }
        None => session.active_run.clear(),
    }
    save_session(tx, session, now).await
}

/// Reads the events of a run after `after`, oldest first.
pub(crate) fn events_after(workspace: &str, run: &str, after: i64, limit: u64) -> SelectStatement {
    Query::select()
        .columns([
            RunEvents::Sequence,
            RunEvents::Attempt,
            RunEvents::Body,
            RunEvents::CreateTime,
        ])
        .from(RunEvents::Table)
        .and_where(Expr::col(RunEvents::WorkspaceId).eq(workspace))
        .and_where(Expr::col(RunEvents::RunId).eq(run))
        .and_where(Expr::col(RunEvents::Sequence).gt(after))
        .order_by(RunEvents::Sequence, Order::Asc)
        .limit(limit)
        .to_owned()
}

pub(crate) fn stale(message: impl Into<String>) -> Error {
    Error::precondition("STALE_TASK", message)
}

/// A run error with the defaults of a lost worker.
pub(crate) fn worker_lost() -> RunError {
    RunError {
        error_type: "WorkerLost".into(),
        message: "the worker's lease lapsed without a heartbeat".into(),
        details: None,
    }
}

/// Appends an approval-decided event for `approval`.
pub(crate) fn approval_decided(
    run: &mut Run,
    events: &mut Vec<RunEvent>,
    approval: &Approval,
    now: Micros,
) {
    push_event(
        run,
        events,
        EventBody::ApprovalDecided {
            approval: approval.clone(),
        },
        now,
    );
}
