//! Runs, worker side: heartbeats, event batches, plans, completion and failure (claims
//! are in `claim`). Every call is fenced by the [`Lease`] it names.

use std::collections::HashMap;

use agentry_core::{
    Error, Result,
    names::SessionName,
    run::{
        Approval, Decision, EventBody, Lease, MessageBody, MessageRole, PlanStep, Run, RunError,
        RunStatus, Session, StopReason, ToolCall, Usage,
    },
    time::{Micros, now_micros},
};
use sea_query::{Expr, LockType, Query};

use super::{
    Wakes,
    change::Change,
    rows::{RunRow, lock_session, run_by_id, save_run},
    stale,
};
use crate::{
    Store,
    db::Tx,
    mutation::{Mutation, mutate},
    tables::ToolCalls,
};

/// One event a worker appends.
#[derive(Debug, Clone)]
pub enum EventInput {
    Delta {
        message_id: String,
        text: String,
    },
    Message(MessageBody),
    ToolStarted(ToolCall),
    ToolCompleted(ToolCall),
    Usage(Usage),
    Custom {
        name: String,
        data: serde_json::Value,
    },
    Error(RunError),
}

impl EventInput {
    fn touches_transcript(&self) -> bool {
        matches!(
            self,
            Self::Message(_) | Self::ToolStarted(_) | Self::ToolCompleted(_)
        )
    }
}

/// A tool call of the run as an event batch sees it.
struct Call {
    tool: String,
    open: bool,
    /// Whether its row exists, and open, before this batch; `None` for a call it starts.
    stored: Option<bool>,
}

/// Locks the session (when asked) and the run, and checks that `lease` still holds.
pub(super) async fn fenced(
    tx: &mut Tx,
    lease: &Lease,
    now: Micros,
    with_session: bool,
) -> Result<(Option<Session>, Run)> {
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
    if run.project != lease.project || run.session != lease.session {
        return Err(stale("the run no longer exists"));
    }
    if run.status.is_terminal() {
        return Err(stale(format!(
            "the run already finished ({})",
            run.status.as_str()
        )));
    }
    if run.attempt != lease.attempt || run.lease_epoch != lease.epoch {
        return Err(stale(format!(
            "this task's lease was superseded: the run is at attempt {}",
            run.attempt
        )));
    }
    if !run.status.is_leased() {
        return Err(stale(format!(
            "the run is no longer leased ({})",
            run.status.as_str()
        )));
    }
    if run.lease_expire_time.is_none_or(|t| t <= now) {
        return Err(stale("the lease expired"));
    }
    Ok((session, run))
}

impl Store {
    /// Renews the lease for `wait` (the caller holds its reply that long) plus the
    /// lease's duration.
    pub async fn heartbeat_task(&self, lease: &Lease, wait: Micros) -> Result<Run> {
        let now = now_micros();
        let mut tx = self.db.begin().await?;
        let (_, mut run) = fenced(&mut tx, lease, now, false).await?;
        run.lease_expire_time = Some(now.saturating_add(wait).saturating_add(run.lease_duration));
        save_run(&mut tx, &run).await?;
        tx.commit().await?;
        Ok(run)
    }

    /// Appends a batch; returns the last sequence and whether a cancel was requested.
    pub async fn append_run_events(
        &self,
        m: &Mutation,
        lease: &Lease,
        inputs: Vec<EventInput>,
    ) -> Result<(i64, bool)> {
        let mut wakes = Wakes::default();
        let with_session = inputs.iter().any(EventInput::touches_transcript);
        let answer = mutate!(self, m, |tx| async {
            let now = now_micros();
            let (mut session, run) = fenced(tx, lease, now, with_session).await?;
            let mut change = Change::new(run, session.as_mut(), now);
            // Tool calls of this batch: id → (tool, open) as known so far.
            let ids: Vec<&str> = inputs
                .iter()
                .filter_map(|e| match e {
                    EventInput::ToolStarted(c) | EventInput::ToolCompleted(c) => {
                        Some(c.id.as_str())
                    }
                    _ => None,
                })
                .collect();
            let mut calls: HashMap<String, Call> = HashMap::new();
            if !ids.is_empty() {
                let known: Vec<(String, String, i32)> = tx
                    .fetch_all(
                        &Query::select()
                            .columns([ToolCalls::CallId, ToolCalls::Tool, ToolCalls::Open])
                            .from(ToolCalls::Table)
                            .and_where(
                                Expr::col(ToolCalls::WorkspaceId).eq(change.run.workspace.as_str()),
                            )
                            .and_where(Expr::col(ToolCalls::RunId).eq(change.run.id.as_str()))
                            .and_where(Expr::col(ToolCalls::CallId).is_in(ids.iter().copied()))
                            .to_owned(),
                    )
                    .await?;
                for (id, tool, open) in known {
                    let stored = Some(open != 0);
                    calls.insert(
                        id,
                        Call {
                            open: open != 0,
                            tool,
                            stored,
                        },
                    );
                }
            }
            let mut messages: Vec<MessageBody> = Vec::new();
            let base = change.message_count();
            for (index, input) in inputs.iter().enumerate() {
                let field = |what: &str| format!("events[{index}].{what}");
                let body = match input {
                    EventInput::Delta { message_id, text } => EventBody::MessageDelta {
                        message_id: message_id.clone(),
                        text: text.clone(),
                    },
                    EventInput::Message(message) => {
                        messages.push(message.clone());
                        EventBody::MessageCompleted {
                            message: message.clone(),
                            sequence: base + messages.len() as i64,
                        }
                    }
                    EventInput::ToolStarted(call) => {
                        if calls.contains_key(&call.id) {
                            return Err(Error::invalid(
                                field("tool_call_started.tool_call.id"),
                                format!("tool call id {:?} was already used in this run", call.id),
                            ));
                        }
                        let new = Call {
                            tool: call.tool.clone(),
                            open: true,
                            stored: None,
                        };
                        calls.insert(call.id.clone(), new);
                        let call = ToolCall {
                            result: None,
                            is_error: false,
                            ..call.clone()
                        };
                        messages.push(MessageBody {
                            role: MessageRole::Assistant,
                            content: String::new(),
                            tool_call: Some(call.clone()),
                        });
                        EventBody::ToolCallStarted { call }
                    }
                    EventInput::ToolCompleted(call) => {
                        let tool = match calls.get_mut(&call.id) {
                            Some(known) if known.open => {
                                known.open = false;
                                known.tool.clone()
                            }
                            _ => {
                                return Err(Error::invalid(
                                    field("tool_call_completed.tool_call.id"),
                                    format!("no open tool call {:?} in this run", call.id),
                                ));
                            }
                        };
                        if !call.tool.is_empty() && call.tool != tool {
                            return Err(Error::invalid(
                                field("tool_call_completed.tool_call.tool"),
                                format!("tool call {:?} was started for tool {tool:?}", call.id),
                            ));
                        }
                        let call = ToolCall {
                            tool,
                            ..call.clone()
                        };
                        messages.push(MessageBody {
                            role: MessageRole::Tool,
                            content: String::new(),
                            tool_call: Some(call.clone()),
                        });
                        EventBody::ToolCallCompleted {
                            call,
                            synthetic: false,
                        }
                    }
                    EventInput::Usage(usage) => {
                        change.run.usage.add(usage);
                        EventBody::Usage {
                            usage: usage.clone(),
                        }
                    }
                    EventInput::Custom { name, data } => EventBody::Custom {
                        name: name.clone(),
                        data: data.clone(),
                    },
                    EventInput::Error(error) => EventBody::Error {
                        error: error.clone(),
                    },
                };
                change.event(body);
            }
            if !messages.is_empty() {
                change.append_messages(tx, &messages).await?;
            }
            // New calls are inserted (open or not); stored ones that closed are updated.
            let new: Vec<(&String, &Call)> =
                calls.iter().filter(|(_, c)| c.stored.is_none()).collect();
            if !new.is_empty() {
                let mut insert = Query::insert()
                    .into_table(ToolCalls::Table)
                    .columns([
                        ToolCalls::WorkspaceId,
                        ToolCalls::RunId,
                        ToolCalls::CallId,
                        ToolCalls::Tool,
                        ToolCalls::Open,
                    ])
                    .to_owned();
                for (id, call) in new {
                    insert.values_panic([
                        change.run.workspace.clone().into(),
                        change.run.id.clone().into(),
                        id.clone().into(),
                        call.tool.clone().into(),
                        i32::from(call.open).into(),
                    ]);
                }
                tx.execute(&insert).await?;
            }
            let closed: Vec<&str> = calls
                .iter()
                .filter(|(_, c)| c.stored == Some(true) && !c.open)
                .map(|(id, _)| id.as_str())
                .collect();
            if !closed.is_empty() {
                tx.execute(
                    &Query::update()
                        .table(ToolCalls::Table)
                        .value(ToolCalls::Open, 0)
                        .and_where(
                            Expr::col(ToolCalls::WorkspaceId).eq(change.run.workspace.as_str()),
                        )
                        .and_where(Expr::col(ToolCalls::RunId).eq(change.run.id.as_str()))
                        .and_where(Expr::col(ToolCalls::CallId).is_in(closed))
                        .to_owned(),
                )
                .await?;
            }
            change.run.update_time = now;
            let run = change.save(tx).await?;
            wakes.run(&run);
            wakes.notify(tx, &self.replica).await?;
            Ok((run.last_sequence, run.cancel_requested))
        })?;
        self.wake(&wakes);
        Ok(answer)
    }

    /// Applies the autonomy matrix to a plan: auto-approved (the lease goes on), or the
    /// run waits for a human in REQUIRES_ACTION and the lease ends.
    pub async fn propose_plan(
        &self,
        m: &Mutation,
        lease: &Lease,
        steps: Vec<PlanStep>,
    ) -> Result<(bool, Approval)> {
        let mut wakes = Wakes::default();
        let answer = mutate!(self, m, |tx| async {
            let now = now_micros();
            let (_, run) = fenced(tx, lease, now, false).await?;
            if run.status == RunStatus::Cancelling {
                return Err(Error::precondition(
                    "CANCEL_REQUESTED",
                    "a cancel was requested; finish the task with FailTask or CompleteTask",
                ));
            }
            let mut approval = Approval {
                id: uuid::Uuid::now_v7().to_string(),
                steps: steps.clone(),
                expire_time: now.saturating_add(run.approval_timeout),
                decision: None,
                comment: String::new(),
                decided_by: String::new(),
            };
            let auto = steps.iter().all(|s| run.autonomy.allows(s.risk));
            let mut change = Change::new(run, None, now);
            change.event(EventBody::PlanProposed {
                approval: approval.clone(),
                auto_approved: auto,
            });
            if auto {
                approval.decision = Some(Decision::Approve);
                approval.decided_by = "auto".into();
                change.approval_decided(&approval);
                change.run.approval = Some(approval.clone());
            } else {
                change.run.approval = Some(approval.clone());
                let message = "waiting for a decision on the plan";
                change.status(RunStatus::RequiresAction, StopReason::Unspecified, message)?;
                change.run.lease_epoch += 1;
                wakes.slot(&change.run.workspace);
            }
            let run = change.save(tx).await?;
            wakes.run(&run);
            wakes.notify(tx, &self.replica).await?;
            Ok((auto, approval))
        })?;
        self.wake(&wakes);
        Ok(answer)
    }

    pub async fn complete_task(
        &self,
        m: &Mutation,
        lease: &Lease,
        output: Vec<MessageBody>,
        usage: Usage,
        stop_reason: StopReason,
    ) -> Result<Run> {
        let mut wakes = Wakes::default();
        let run = mutate!(self, m, |tx| async {
            let now = now_micros();
            let (mut session, run) = fenced(tx, lease, now, true).await?;
            let mut change = Change::new(run, session.as_mut(), now);
            let w = &mut wakes;
            if change.run.status == RunStatus::Cancelling {
                let message = "the worker confirmed the cancel";
                change
                    .finish(tx, w, RunStatus::Cancelled, StopReason::Cancelled, message)
                    .await?;
            } else {
                let sequences = change.append_messages(tx, &output).await?;
                for (message, sequence) in output.iter().zip(sequences) {
                    change.event(EventBody::MessageCompleted {
                        message: message.clone(),
                        sequence,
                    });
                }
                if !usage.is_zero() {
                    change.run.usage.add(&usage);
                    change.event(EventBody::Usage {
                        usage: usage.clone(),
                    });
                }
                change.run.output = output.clone();
                change
                    .finish(tx, w, RunStatus::Succeeded, stop_reason, "")
                    .await?;
            }
            let run = change.save(tx).await?;
            wakes.notify(tx, &self.replica).await?;
            Ok(run)
        })?;
        self.wake(&wakes);
        Ok(run)
    }

    pub async fn fail_task(
        &self,
        m: &Mutation,
        lease: &Lease,
        error: RunError,
        retryable: bool,
        next_retry_delay: Option<Micros>,
    ) -> Result<Run> {
        let mut wakes = Wakes::default();
        let run = mutate!(self, m, |tx| async {
            let now = now_micros();
            let (mut session, run) = fenced(tx, lease, now, true).await?;
            let mut change = Change::new(run, session.as_mut(), now);
            let w = &mut wakes;
            change.event(EventBody::Error {
                error: error.clone(),
            });
            change.run.error = Some(error.clone());
            let attempt = change.run.attempt;
            let policy = &change.run.retry_policy;
            if change.run.status == RunStatus::Cancelling {
                let message = "the worker confirmed the cancel";
                change
                    .finish(tx, w, RunStatus::Cancelled, StopReason::Cancelled, message)
                    .await?;
            } else if retryable && policy.retries(attempt, &error.error_type) {
                let delay = next_retry_delay.unwrap_or_else(|| policy.backoff(attempt));
                change
                    .requeue(tx, w, StopReason::Error, &error.message, delay)
                    .await?;
            } else {
                change
                    .finish(tx, w, RunStatus::Failed, StopReason::Error, &error.message)
                    .await?;
            }
            let run = change.save(tx).await?;
            wakes.notify(tx, &self.replica).await?;
            Ok(run)
        })?;
        self.wake(&wakes);
        Ok(run)
    }
}
