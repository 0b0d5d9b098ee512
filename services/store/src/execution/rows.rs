//! Rows of the execution tables and the statements that read and write them whole.

use agentry_core::{
    Error, Result,
    absent::{non_empty, or_empty},
    model::Instance,
    names::{InstanceName, RunName, SessionName},
    run::{
        Message, MessageBody, MessageRole, Run, RunEvent, RunStatus, Session, StopReason, Usage,
    },
    time::UnixMicros,
};
use sea_query::{Condition, Expr, LockType, Order, Query, SelectStatement};

use super::RunSpec;
use crate::{
    db::{Tx, map_err},
    instances::{instance_from_json, instance_json},
    record::{optional_record, record, to_record},
    rows::{
        columns, decode, found, insert_row, insert_rows, json, labels, select_all, to_json, values,
    },
    tables::{Messages, RunEvents, Runs, Sessions},
};

#[derive(sqlx::FromRow, serde::Deserialize)]
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

decode!(SessionRow => Session, |row| Ok(Self {
    workspace: row.workspace_id,
    project: row.project_id,
    id: row.session_id,
    instance: row.instance_id,
    description: row.description,
    active_run: non_empty(row.active_run),
    message_count: row.message_count,
    create_time: row.create_time,
    update_time: row.update_time,
    labels: labels(&row.labels)?,
}));

columns!(
    /// The columns of `messages` that a [`MessageRow`] decodes, in its order.
    pub(crate) MESSAGE_COLUMNS: Messages [
        Sequence, Role, Content, ToolCall, RunId, Superseded, CreateTime
    ]
);

columns!(pub(crate) SESSION_COLUMNS: Sessions [
    WorkspaceId, ProjectId, SessionId, InstanceId, Description, Labels, ActiveRun, MessageCount,
    CreateTime, UpdateTime
]);

/// The row of session `name`.
pub(crate) fn session_key(name: &SessionName) -> Condition {
    Condition::all()
        .add(Expr::col(Sessions::WorkspaceId).eq(name.workspace.as_str()))
        .add(Expr::col(Sessions::ProjectId).eq(name.project.as_str()))
        .add(Expr::col(Sessions::SessionId).eq(name.session.as_str()))
}

pub(crate) fn session_by_name(name: &SessionName) -> SelectStatement {
    select_all(Sessions::Table, SESSION_COLUMNS)
        .cond_where(session_key(name))
        .to_owned()
}

pub(crate) async fn lock_session(tx: &mut Tx, name: &SessionName) -> Result<Session> {
    let locked = session_by_name(name).lock(LockType::NoKeyUpdate).to_owned();
    found(tx.fetch_optional::<SessionRow>(&locked).await?, name)
}

/// Postgres: [`lock_session`] and the session's instance in one statement.
const LOCK_SESSION_WITH_INSTANCE: &str = concat!(
    "SELECT s.*, ",
    instance_json!("s"),
    " AS instance FROM sessions s \
     WHERE s.workspace_id = $1 AND s.project_id = $2 AND s.session_id = $3 \
     FOR NO KEY UPDATE OF s"
);

#[derive(sqlx::FromRow)]
struct SessionWithInstance {
    #[sqlx(flatten)]
    session: SessionRow,
    instance: Option<String>,
}

/// The session locked as [`lock_session`] locks it, and its instance as `read_instance`
/// reads it: one statement (one round trip) on Postgres, two on SQLite. The instance is
/// read in the statement's snapshot, taken when the call had already begun.
pub(crate) async fn lock_session_with_instance(
    tx: &mut Tx,
    name: &SessionName,
) -> Result<(Session, Instance)> {
    let (session, instance) = match tx.postgres(LOCK_SESSION_WITH_INSTANCE) {
        Some((conn, _span)) => {
            let row: Option<SessionWithInstance> = sqlx::query_as(LOCK_SESSION_WITH_INSTANCE)
                .bind(name.workspace.as_str())
                .bind(name.project.as_str())
                .bind(name.session.as_str())
                .fetch_optional(conn)
                .await
                .map_err(map_err)?;
            let SessionWithInstance { session, instance } =
                row.ok_or_else(|| Error::not_found(name.to_string()))?;
            (Session::try_from(session)?, instance)
        }
        None => (lock_session(tx, name).await?, None),
    };
    let of = InstanceName::new(&session.workspace, &session.project, &session.instance);
    let instance = instance_from_json(tx, instance.as_deref(), &of).await?;
    Ok((session, instance))
}

/// Saves a locked session's run-related columns (deferred: see `Tx::defer_row`).
pub(crate) async fn save_session(tx: &mut Tx, session: &Session, now: UnixMicros) -> Result<()> {
    let stmt = Query::update()
        .table(Sessions::Table)
        .value(Sessions::ActiveRun, or_empty(&session.active_run))
        .value(Sessions::MessageCount, session.message_count)
        .value(Sessions::UpdateTime, now)
        .and_where(Expr::col(Sessions::WorkspaceId).eq(session.workspace.as_str()))
        .and_where(Expr::col(Sessions::ProjectId).eq(session.project.as_str()))
        .and_where(Expr::col(Sessions::SessionId).eq(session.id.as_str()))
        .to_owned();
    let key = format!(
        "sessions/{}/{}/{}",
        session.workspace, session.project, session.id
    );
    tx.defer_row(key, &stmt).await
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

columns!(pub(crate) RUN_COLUMNS: Runs [
    WorkspaceId, RunId, ProjectId, SessionId, InstanceId, AgentId, AgentRevision, Status,
    StopReason, Ready, Spec, Attempt, Error, InputTokens, OutputTokens, CostUsd, LastSequence,
    CancelRequested, Supersede, Approval, Output, NextAttemptTime, LeaseEpoch, LeaseExpireTime,
    LeaseDuration, Worker, CreateTime, StartTime, EndTime, UpdateTime
]);

fn optional_json<T: serde::de::DeserializeOwned>(column: &str, text: &str) -> Result<Option<T>> {
    if text.is_empty() {
        Ok(None)
    } else {
        json(column, text).map(Some)
    }
}

decode!(RunRow => Run, |row| {
    let status = RunStatus::parse(&row.status)
        .ok_or_else(|| Error::internal(format!("unknown run status {:?}", row.status)))?;
    let stop_reason = StopReason::parse(&row.stop_reason)
        .ok_or_else(|| Error::internal(format!("unknown stop reason {:?}", row.stop_reason)))?;
    Ok(Self {
        error: optional_json("error", &row.error)?,
        approval: optional_record("approval", &row.approval)?,
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
        spec: record::<RunSpec>("spec", &row.spec)?,
        attempt: row.attempt,
        usage: Usage {
            input_tokens: row.input_tokens,
            output_tokens: row.output_tokens,
            cost_usd: row.cost_usd,
        },
        last_sequence: row.last_sequence,
        cancel_requested: row.cancel_requested != 0,
        next_attempt_time: row.next_attempt_time,
        create_time: row.create_time,
        start_time: row.start_time,
        end_time: row.end_time,
        update_time: row.update_time,
        lease_epoch: row.lease_epoch,
        lease_expire_time: row.lease_expire_time,
        lease_duration: row.lease_duration,
        worker: non_empty(row.worker),
        ready: row.ready != 0,
        supersede: row.supersede != 0,
    })
});

pub(crate) fn select_runs() -> SelectStatement {
    select_all(Runs::Table, RUN_COLUMNS)
}

/// The runs of `session`.
pub(crate) fn session_runs(session: &Session) -> SelectStatement {
    select_runs()
        .and_where(Expr::col(Runs::WorkspaceId).eq(session.workspace.as_str()))
        .and_where(Expr::col(Runs::ProjectId).eq(session.project.as_str()))
        .and_where(Expr::col(Runs::SessionId).eq(session.id.as_str()))
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
    let locked = run_by_id(&name.workspace, &name.run)
        .lock(LockType::NoKeyUpdate)
        .to_owned();
    matches_name(
        found(tx.fetch_optional::<RunRow>(&locked).await?, name)?,
        name,
    )
}

fn deadline_of(run: &Run) -> Option<UnixMicros> {
    if run.status.is_terminal() {
        None
    } else {
        run.deadline()
    }
}

/// Writes every mutable column of `run` back (the row is locked by this transaction),
/// deferred (see `Tx::defer_row`).
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
            run.approval.as_ref().map(to_record).unwrap_or_default(),
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
        .value(Runs::Worker, or_empty(&run.worker))
        .value(Runs::StartTime, run.start_time)
        .value(Runs::EndTime, run.end_time)
        .value(Runs::UpdateTime, run.update_time)
        .and_where(Expr::col(Runs::WorkspaceId).eq(run.workspace.as_str()))
        .and_where(Expr::col(Runs::RunId).eq(run.id.as_str()))
        .to_owned();
    tx.defer_row(run_key(run), &stmt).await
}

/// The deferred-write key of a run's row.
fn run_key(run: &Run) -> String {
    format!("runs/{}/{}", run.workspace, run.id)
}

pub(crate) async fn insert_run(tx: &mut Tx, run: &Run) -> Result<()> {
    let stmt = insert_row(
        Runs::Table,
        RUN_COLUMNS
            .into_iter()
            .chain([Runs::ApprovalExpireTime, Runs::Deadline]),
        values![
            run.workspace,
            run.id,
            run.project,
            run.session,
            run.instance,
            run.agent,
            run.agent_revision,
            run.status.as_str(),
            run.stop_reason.as_str(),
            i32::from(run.ready),
            to_record(&run.spec),
            run.attempt,
            String::new(),
            0i64,
            0i64,
            0f64,
            run.last_sequence,
            0i32,
            i32::from(run.supersede),
            String::new(),
            String::new(),
            run.next_attempt_time,
            0i64,
            None::<i64>,
            0i64,
            String::new(),
            run.create_time,
            None::<i64>,
            None::<i64>,
            run.update_time,
            None::<i64>,
            deadline_of(run),
        ],
    );
    tx.defer_row(run_key(run), &stmt).await
}

/// Inserts `events` of `run` (deferred: see `Tx::defer`).
pub(crate) async fn insert_events(tx: &mut Tx, run: &Run, events: &[RunEvent]) -> Result<()> {
    // Chunked: SQLite binds at most 32766 parameters per statement.
    for chunk in events.chunks(500) {
        let rows = chunk.iter().map(|event| {
            [
                run.workspace.clone().into(),
                run.id.clone().into(),
                event.sequence.into(),
                event.attempt.into(),
                event.body.kind().into(),
                to_record(&event.body).into(),
                event.create_time.into(),
            ]
        });
        let columns = [
            RunEvents::WorkspaceId,
            RunEvents::RunId,
            RunEvents::Sequence,
            RunEvents::Attempt,
            RunEvents::Kind,
            RunEvents::Body,
            RunEvents::CreateTime,
        ];
        tx.defer(&insert_rows(RunEvents::Table, columns, rows));
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

decode!(EventRow => RunEvent, |row| Ok(Self {
    sequence: row.sequence,
    attempt: row.attempt,
    create_time: row.create_time,
    body: record("body", &row.body)?,
}));

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

decode!(MessageRow => Message, |row| Ok(Self {
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
}));

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
