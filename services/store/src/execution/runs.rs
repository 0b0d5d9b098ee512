//! Runs, client side: create (with the multitask strategies), read, list, cancel,
//! decide a plan, read the event log. (Statistics are in `stats`.)

use agentry_core::{
    Error, Result,
    model::{Labels, Page},
    names::{InstanceName, ProjectName, RunName, SessionName},
    run::{
        AutonomyLevel, ContextBinding, Decision, EventBody, MessageBody, MultitaskStrategy,
        RetryPolicy, Run, RunEvent, RunStatus, Session, StopReason, Usage,
    },
    status::InstanceStatus,
    time::{Micros, now_micros},
};
use sea_query::{Cond, Expr, LockType, Order, Query};

use super::{
    Wakes,
    change::{Change, append_messages},
    rows::{
        EventRow, RunRow, events_after, insert_events, insert_run, lock_run, lock_session,
        matches_name, run_by_id, save_session, select_runs,
    },
    sessions::{before_cursor, parse_time_cursor, time_cursor},
};
use crate::{
    PageRequest, Store,
    db::Tx,
    instances::read_instance,
    mutation::{Mutation, mutate},
    paginate,
    tables::{Contexts, Messages, Runs},
};

#[derive(Debug, Clone)]
pub struct NewRun {
    pub session: SessionName,
    pub autonomy: AutonomyLevel,
    /// 0: none.
    pub timeout: Micros,
    pub retry_policy: RetryPolicy,
    pub strategy: MultitaskStrategy,
    pub input: Vec<MessageBody>,
    pub contexts: Vec<ContextBinding>,
    pub labels: Labels,
    pub approval_timeout: Micros,
}

/// Filters of ListRuns.
#[derive(Debug, Clone, Default)]
pub struct RunFilter {
    pub status: Option<RunStatus>,
    pub agent: Option<String>,
    pub instance: Option<String>,
    pub after_time: Option<Micros>,
    pub before_time: Option<Micros>,
}

const TERMINAL: [&str; 4] = ["SUCCEEDED", "FAILED", "CANCELLED", "TIMED_OUT"];

/// INTERRUPT and ROLLBACK: cancels every unfinished run of the session (queued ones
/// first, so that the session is handed to none of them), marking their messages
/// superseded for ROLLBACK.
async fn interrupt(
    tx: &mut Tx,
    session: &mut Session,
    rollback: bool,
    wakes: &mut Wakes,
    now: Micros,
) -> Result<()> {
    let rows: Vec<RunRow> = tx
        .fetch_all(
            &select_runs()
                .and_where(Expr::col(Runs::WorkspaceId).eq(session.workspace.as_str()))
                .and_where(Expr::col(Runs::ProjectId).eq(session.project.as_str()))
                .and_where(Expr::col(Runs::SessionId).eq(session.id.as_str()))
                .and_where(Expr::col(Runs::Status).is_not_in(TERMINAL))
                .order_by(Runs::CreateTime, Order::Asc)
                .lock(LockType::NoKeyUpdate)
                .to_owned(),
        )
        .await?;
    let mut runs = rows
        .into_iter()
        .map(Run::try_from)
        .collect::<Result<Vec<_>>>()?;
    runs.sort_by_key(|r| r.id == session.active_run);
    let message = if rollback {
        "rolled back by a new run"
    } else {
        "interrupted by a new run"
    };
    for mut run in runs {
        if rollback {
            run.supersede = true;
            tx.execute(
                &Query::update()
                    .table(Messages::Table)
                    .value(Messages::Superseded, 1)
                    .and_where(Expr::col(Messages::WorkspaceId).eq(run.workspace.as_str()))
                    .and_where(Expr::col(Messages::RunId).eq(run.id.as_str()))
                    .to_owned(),
            )
            .await?;
        }
        let mut change = Change::new(run, Some(&mut *session), now);
        match change.run.status {
            RunStatus::Queued | RunStatus::RequiresAction => {
                change
                    .finish(
                        tx,
                        wakes,
                        RunStatus::Cancelled,
                        StopReason::Interrupted,
                        message,
                    )
                    .await?;
            }
            RunStatus::Running => {
                change.run.cancel_requested = true;
                change.status(RunStatus::Cancelling, StopReason::Unspecified, message)?;
                wakes.run(&change.run);
            }
            _ => {}
        }
        change.run.update_time = now;
        change.save(tx).await?;
    }
    Ok(())
}

impl Store {
    pub async fn create_run(&self, m: &Mutation, new: NewRun) -> Result<Run> {
        let mut wakes = Wakes::default();
        let run = mutate!(self, m, |tx| async {
            let now = now_micros();
            let mut session = lock_session(tx, &new.session).await?;
            let instance_name = InstanceName {
                workspace: session.workspace.clone(),
                project: session.project.clone(),
                instance: session.instance.clone(),
            };
            let instance = read_instance(tx, &instance_name).await?;
            if instance.status == InstanceStatus::Terminated {
                return Err(Error::precondition(
                    "INSTANCE_TERMINATED",
                    format!("{instance_name} is terminated"),
                ));
            }
            for binding in &new.contexts {
                let found = tx
                    .exists(
                        Contexts::Table,
                        Cond::all()
                            .add(Expr::col(Contexts::WorkspaceId).eq(session.workspace.as_str()))
                            .add(Expr::col(Contexts::ProjectId).eq(session.project.as_str()))
                            .add(Expr::col(Contexts::ContextId).eq(binding.context.as_str())),
                    )
                    .await?;
                if !found {
                    return Err(Error::not_found(format!(
                        "workspaces/{}/projects/{}/contexts/{}",
                        session.workspace, session.project, binding.context
                    )));
                }
            }
            if !session.active_run.is_empty() {
                match new.strategy {
                    MultitaskStrategy::Reject => {
                        return Err(Error::precondition(
                            "SESSION_BUSY",
                            format!(
                                "{} has an active run ({}); choose multitask_strategy ENQUEUE, INTERRUPT or ROLLBACK to start another",
                                new.session, session.active_run
                            ),
                        ));
                    }
                    MultitaskStrategy::Enqueue => {}
                    MultitaskStrategy::Interrupt | MultitaskStrategy::Rollback => {
                        interrupt(
                            tx,
                            &mut session,
                            new.strategy == MultitaskStrategy::Rollback,
                            &mut wakes,
                            now,
                        )
                        .await?;
                    }
                }
            }
            let ready = session.active_run.is_empty();
            let run = Run {
                workspace: session.workspace.clone(),
                project: session.project.clone(),
                session: session.id.clone(),
                id: uuid::Uuid::now_v7().to_string(),
                instance: instance.id.clone(),
                agent: instance.agent.clone(),
                agent_revision: instance.agent_revision,
                status: RunStatus::Queued,
                stop_reason: StopReason::Unspecified,
                autonomy: new.autonomy,
                timeout: new.timeout,
                retry_policy: new.retry_policy.clone(),
                strategy: new.strategy,
                input: new.input.clone(),
                output: Vec::new(),
                contexts: new.contexts.clone(),
                attempt: 0,
                error: None,
                usage: Usage::default(),
                last_sequence: 0,
                cancel_requested: false,
                approval: None,
                approval_timeout: new.approval_timeout,
                next_attempt_time: now,
                labels: new.labels.clone(),
                create_time: now,
                start_time: None,
                end_time: None,
                update_time: now,
                lease_epoch: 0,
                lease_expire_time: None,
                lease_duration: 0,
                worker: String::new(),
                ready,
                supersede: false,
            };
            let mut change = Change::new(run, None, now);
            change.event(EventBody::StatusChanged {
                previous: None,
                status: RunStatus::Queued,
                stop_reason: StopReason::Unspecified,
                message: String::new(),
            });
            let run = change.run;
            insert_run(tx, &run).await?;
            insert_events(tx, &run, &change.events).await?;
            if ready {
                session.active_run = run.id.clone();
                append_messages(tx, &mut session, &run, &new.input, now).await?;
                wakes.queue(&run.workspace);
            }
            save_session(tx, &session, now).await?;
            wakes.run(&run);
            wakes.notify(tx, &self.replica).await?;
            Ok(run)
        })?;
        self.wake(&wakes);
        Ok(run)
    }

    pub async fn get_run(&self, name: &RunName) -> Result<Run> {
        let row: Option<RunRow> = self
            .db
            .fetch_optional(&run_by_id(&name.workspace, &name.run))
            .await?;
        matches_name(
            row.ok_or_else(|| Error::not_found(name.to_string()))?
                .try_into()?,
            name,
        )
    }

    /// Runs of one session (or of the whole project when `session` is `None`), newest
    /// first.
    pub async fn list_runs(
        &self,
        project: &ProjectName,
        session: Option<&str>,
        filter: &RunFilter,
        page: &PageRequest,
    ) -> Result<Page<Run>> {
        let mut stmt = select_runs()
            .and_where(Expr::col(Runs::WorkspaceId).eq(project.workspace.as_str()))
            .and_where(Expr::col(Runs::ProjectId).eq(project.project.as_str()))
            .to_owned();
        if let Some(session) = session {
            stmt.and_where(Expr::col(Runs::SessionId).eq(session));
        }
        if let Some(status) = filter.status {
            stmt.and_where(Expr::col(Runs::Status).eq(status.as_str()));
        }
        if let Some(agent) = &filter.agent {
            stmt.and_where(Expr::col(Runs::AgentId).eq(agent.as_str()));
        }
        if let Some(instance) = &filter.instance {
            stmt.and_where(Expr::col(Runs::InstanceId).eq(instance.as_str()));
        }
        if let Some(after) = filter.after_time {
            stmt.and_where(Expr::col(Runs::CreateTime).gt(after));
        }
        if let Some(before) = filter.before_time {
            stmt.and_where(Expr::col(Runs::CreateTime).lt(before));
        }
        if let Some(after) = &page.after {
            let (time, id) = parse_time_cursor(after)?;
            stmt.and_where(before_cursor(Runs::CreateTime, Runs::RunId, time, id));
        }
        stmt.order_by(Runs::CreateTime, Order::Desc)
            .order_by(Runs::RunId, Order::Desc)
            .limit(page.size as u64 + 1);
        let rows: Vec<RunRow> = self.db.fetch_all(&stmt).await?;
        let items = rows
            .into_iter()
            .map(Run::try_from)
            .collect::<Result<Vec<_>>>()?;
        Ok(paginate(items, page.size, |r| {
            time_cursor(r.create_time, &r.id)
        }))
    }

    pub async fn cancel_run(&self, m: &Mutation, name: &RunName, reason: &str) -> Result<Run> {
        let mut wakes = Wakes::default();
        let run = mutate!(self, m, |tx| async {
            let now = now_micros();
            let mut session = lock_session(tx, &name.session()).await?;
            let run = lock_run(tx, name).await?;
            let mut change = Change::new(run, Some(&mut session), now);
            match change.run.status {
                RunStatus::Queued | RunStatus::RequiresAction => {
                    change.run.cancel_requested = true;
                    change
                        .finish(
                            tx,
                            &mut wakes,
                            RunStatus::Cancelled,
                            StopReason::Cancelled,
                            reason,
                        )
                        .await?;
                }
                RunStatus::Running => {
                    change.run.cancel_requested = true;
                    change.status(RunStatus::Cancelling, StopReason::Unspecified, reason)?;
                    wakes.run(&change.run);
                }
                RunStatus::Cancelling | RunStatus::Cancelled => return Ok(change.run),
                status => {
                    return Err(Error::precondition(
                        "RUN_FINISHED",
                        format!("{name} already finished ({})", status.as_str()),
                    ));
                }
            }
            let run = change.save(tx).await?;
            wakes.notify(tx, &self.replica).await?;
            Ok(run)
        })?;
        self.wake(&wakes);
        Ok(run)
    }

    pub async fn decide_approval(
        &self,
        m: &Mutation,
        name: &RunName,
        approval_id: &str,
        decision: Decision,
        comment: &str,
    ) -> Result<Run> {
        let mut wakes = Wakes::default();
        let run = mutate!(self, m, |tx| async {
            let now = now_micros();
            let run = lock_run(tx, name).await?;
            let pending = run.status == RunStatus::RequiresAction
                && run
                    .approval
                    .as_ref()
                    .is_some_and(|a| a.id == approval_id && a.decision.is_none());
            if !pending {
                return Err(Error::precondition(
                    "APPROVAL_NOT_PENDING",
                    format!(
                        "{name} is not waiting for a decision on approval {}",
                        agentry_core::error::quote(approval_id)
                    ),
                ));
            }
            let mut change = Change::new(run, None, now);
            let mut approval = change.run.approval.take().expect("checked above");
            approval.decision = Some(decision);
            approval.comment = comment.to_owned();
            approval.decided_by = m.principal.clone();
            change.approval_decided(&approval);
            change.run.approval = Some(approval);
            let message = match decision {
                Decision::Approve => "plan approved",
                Decision::Reject => "plan rejected",
            };
            change.status(RunStatus::Queued, StopReason::Unspecified, message)?;
            change.run.next_attempt_time = now;
            let run = change.save(tx).await?;
            wakes.run(&run);
            wakes.queue(&run.workspace);
            wakes.notify(tx, &self.replica).await?;
            Ok(run)
        })?;
        self.wake(&wakes);
        Ok(run)
    }

    /// Events of a run with a sequence above `after`, oldest first, at most `limit`.
    /// With none, NOT_FOUND if the run itself is gone (its project or workspace was
    /// deleted), so that a stream following it ends rather than waiting forever.
    pub async fn run_events_after(
        &self,
        workspace: &str,
        run: &str,
        after: i64,
        limit: u64,
    ) -> Result<Vec<RunEvent>> {
        let rows: Vec<EventRow> = self
            .db
            .fetch_all(&events_after(workspace, run, after, limit))
            .await?;
        if rows.is_empty() {
            let exists = Query::select()
                .expr(Expr::val(1))
                .from(Runs::Table)
                .and_where(Expr::col(Runs::WorkspaceId).eq(workspace))
                .and_where(Expr::col(Runs::RunId).eq(run))
                .to_owned();
            if self.db.fetch_optional::<(i32,)>(&exists).await?.is_none() {
                return Err(Error::not_found(format!("run {run}")));
            }
        }
        rows.into_iter().map(RunEvent::try_from).collect()
    }
}
