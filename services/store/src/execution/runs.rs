//! Runs, client side: create (with the multitask strategies), read, list, cancel,
//! decide a plan, read the event log. (Statistics are in `stats`.)

use agentry_core::{
    Error, Result,
    model::Page,
    names::{ContextName, ProjectName, RunName},
    port::RunStore,
    run::{
        Admission, ApprovalDecision, Cancel, NewRun, Run, RunChange, RunEvent, RunFilter, Session,
        admit, check_takes_work, interrupt_order,
    },
    time::{UnixMicros, now_micros},
};
use async_trait::async_trait;
use sea_query::{Expr, LockType, Order, Query};

use super::{
    Wakes,
    change::Change,
    rows::{
        EventRow, RunRow, events_after, lock_run, lock_session, lock_session_with_instance,
        matches_name, run_by_id, select_runs, session_runs,
    },
    sessions::{before_cursor, parse_time_cursor, time_cursor},
};
use crate::{
    PageRequest, Store,
    contexts::context_row,
    db::Tx,
    fetch_page,
    mutation::{Mutation, mutate_announcing},
    rows::{ProjectKeyed, decode_all, found, within},
    tables::{Contexts, Messages, Runs},
};

const TERMINAL: [&str; 4] = ["SUCCEEDED", "FAILED", "CANCELLED", "TIMED_OUT"];

/// INTERRUPT and ROLLBACK: cancels every unfinished run of the session as core decides,
/// marking their messages superseded for ROLLBACK.
async fn interrupt(
    tx: &mut Tx,
    session: &mut Session,
    rollback: bool,
    wakes: &mut Wakes,
    now: UnixMicros,
) -> Result<()> {
    let rows: Vec<RunRow> = tx
        .fetch_all(
            &session_runs(session)
                .and_where(Expr::col(Runs::Status).is_not_in(TERMINAL))
                .order_by(Runs::CreateTime, Order::Asc)
                .lock(LockType::NoKeyUpdate)
                .to_owned(),
        )
        .await?;
    let mut runs = decode_all(rows)?;
    interrupt_order(&mut runs, session);
    for run in runs {
        if rollback {
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
        if let Some(ending) = change.interrupt(rollback)? {
            change.end(tx, wakes, ending).await?;
        }
        change.persist(tx, wakes).await?;
    }
    Ok(())
}

/// CreateRun's references: each bound context must exist in the session's project.
async fn check_contexts(tx: &mut Tx, session: &Session, new: &NewRun) -> Result<()> {
    for binding in &new.spec.contexts {
        let name = ContextName::new(&session.workspace, &session.project, &binding.context);
        tx.must_exist(Contexts::Table, context_row(&name), &name)
            .await?;
    }
    Ok(())
}

#[async_trait]
impl RunStore for Store {
    async fn create_run(&self, m: &Mutation, new: NewRun) -> Result<Run> {
        mutate_announcing!(self, m, |tx, wakes| async {
            let now = now_micros();
            let (mut session, instance) = lock_session_with_instance(tx, &new.session).await?;
            check_takes_work(&instance)?;
            check_contexts(tx, &session, &new).await?;
            if let Admission::Interrupt { rollback } = admit(new.spec.strategy, &session)? {
                interrupt(tx, &mut session, rollback, &mut wakes, now).await?;
            }
            let id = uuid::Uuid::now_v7().to_string();
            let change = RunChange::created(&new, &mut session, &instance, id, now)?;
            let mut change = Change::of(change, Some(&mut session));
            change.wakes_into(&mut wakes);
            let run = change.insert(tx).await?;
            Ok(run)
        })
    }

    async fn get_run(&self, name: &RunName) -> Result<Run> {
        let stmt = run_by_id(&name.workspace, &name.run);
        let row = self.db.fetch_optional::<RunRow>(&stmt).await?;
        matches_name(found(row, name)?, name)
    }

    async fn list_runs(
        &self,
        project: &ProjectName,
        filter: &RunFilter,
        page: &PageRequest,
    ) -> Result<Page<Run>> {
        let mut stmt = select_runs()
            .cond_where(Runs::in_project(project))
            .to_owned();
        if let Some(session) = &filter.session {
            stmt.and_where(Expr::col(Runs::SessionId).eq(session.as_str()));
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
        within(&mut stmt, Runs::CreateTime, filter.created);
        if let Some(after) = &page.after {
            let (time, id) = parse_time_cursor(after)?;
            stmt.and_where(before_cursor(Runs::CreateTime, Runs::RunId, time, id));
        }
        stmt.order_by(Runs::CreateTime, Order::Desc)
            .order_by(Runs::RunId, Order::Desc);
        fetch_page::<RunRow, Run>(&self.db, stmt, page.size, |r| {
            time_cursor(r.create_time, &r.id)
        })
        .await
    }

    async fn cancel_run(&self, m: &Mutation, name: &RunName, reason: &str) -> Result<Run> {
        mutate_announcing!(self, m, |tx, wakes| async {
            let now = now_micros();
            let mut session = lock_session(tx, &name.session()).await?;
            let run = lock_run(tx, name).await?;
            let mut change = Change::new(run, Some(&mut session), now);
            match change.cancel(name, reason)? {
                Cancel::End(ending) => change.end(tx, &mut wakes, ending).await?,
                Cancel::Requested => {}
                Cancel::Unchanged => return Ok(change.run.clone()),
            }
            let run = change.persist(tx, &mut wakes).await?;
            Ok(run)
        })
    }

    async fn decide_approval(
        &self,
        m: &Mutation,
        name: &RunName,
        verdict: &ApprovalDecision,
    ) -> Result<Run> {
        let ApprovalDecision {
            approval_id,
            decision,
            comment,
        } = verdict;
        mutate_announcing!(self, m, |tx, wakes| async {
            let now = now_micros();
            let run = lock_run(tx, name).await?;
            let mut change = Change::new(run, None, now);
            change.decide(
                name,
                approval_id,
                *decision,
                comment.as_deref(),
                &m.principal,
            )?;
            let run = change.persist(tx, &mut wakes).await?;
            Ok(run)
        })
    }

    async fn run_events_after(
        &self,
        name: &RunName,
        after: i64,
        limit: u64,
    ) -> Result<Vec<RunEvent>> {
        let (workspace, run) = (name.workspace.as_str(), name.run.as_str());
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
