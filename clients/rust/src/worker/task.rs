//! One leased attempt of a run as a handler sees it ([`TaskContext`]): its input, the
//! steps it yields turned into run events, plans, and the cancel or lost lease that ends
//! it.
//!
//! Steps are buffered and sent in batches (AppendRunEvents) by a background flusher or
//! when a batch is full, one batch at a time, each with its own `request_id` kept across
//! retries, so a batch the server already appended is replayed rather than appended
//! twice. While a batch is retried (the server is out of reach) the handler keeps
//! running and its steps keep buffering, up to `max_buffered` events; past that the
//! worker stops pulling the handler's stream until the batch is through.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use tokio::sync::Notify;

use super::{Step, lease::Lease};
use crate::{Agentry, Error, pb};

const MAX_BATCH: usize = 1000; // the server's limit per AppendRunEvents
const STALE_TASK: &str = "STALE_TASK";

/// A flag that can be set once and awaited: a run's cancel, a worker's stop.
#[derive(Clone, Default)]
pub struct CancelToken(Arc<(AtomicBool, Notify)>);

impl CancelToken {
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the flag and wakes every waiter.
    pub fn cancel(&self) {
        self.0.0.store(true, Ordering::SeqCst);
        self.0.1.notify_waiters();
    }

    pub fn is_cancelled(&self) -> bool {
        self.0.0.load(Ordering::SeqCst)
    }

    /// Returns once the flag is set.
    pub async fn cancelled(&self) {
        loop {
            let notified = self.0.1.notified();
            if self.is_cancelled() {
                return;
            }
            notified.await;
        }
    }
}

#[derive(Default)]
struct Events {
    buffer: Vec<pb::RunEventInput>,
    /// Message steps not followed by anything yet: the output, if nothing follows.
    trailing: Vec<pb::Message>,
    /// Open tool call id → tool.
    tools: HashMap<String, String>,
    message_index: usize,
}

pub(crate) struct Settings {
    pub batch_size: usize,
    pub flush_interval: Duration,
    pub max_buffered: usize,
}

pub(crate) struct Inner {
    pub task: pb::Task,
    pub client: Agentry,
    pub calls: Agentry,
    pub lease: Lease,
    pub settings: Settings,
    /// The run was cancelled.
    pub cancel: CancelToken,
    /// This attempt can no longer write to the run (lost lease, plan sent to a human).
    pub ended: CancelToken,
    /// A background flush failed for a reason other than the transport.
    pub failure: Mutex<Option<Error>>,
    pub interrupted: Notify,
    /// CompleteTask or FailTask is under way.
    pub ending: AtomicBool,
    events: Mutex<Events>,
    flush_lock: tokio::sync::Mutex<()>,
    pub pending: Notify,
}

/// One leased attempt of a run, as the handler sees it. Cheap to clone.
#[derive(Clone)]
pub struct TaskContext(pub(crate) Arc<Inner>);

impl TaskContext {
    pub(crate) fn new(
        task: pb::Task,
        client: Agentry,
        calls: Agentry,
        settings: Settings,
        call_timeout: Duration,
    ) -> Self {
        let run = task
            .run
            .as_ref()
            .map(|r| r.name.clone())
            .unwrap_or_default();
        let lease = Lease::new(run, task.lease_expire_time.as_ref(), call_timeout);
        Self(Arc::new(Inner {
            task,
            client,
            calls,
            lease,
            settings,
            cancel: CancelToken::new(),
            ended: CancelToken::new(),
            failure: Mutex::new(None),
            interrupted: Notify::new(),
            ending: AtomicBool::new(false),
            events: Mutex::default(),
            flush_lock: tokio::sync::Mutex::new(()),
            pending: Notify::new(),
        }))
    }

    /// The leased task: run, instance, agent at the pinned revision, attempt, deadline.
    pub fn task(&self) -> &pb::Task {
        &self.0.task
    }

    /// The run (its name, input, autonomy level …).
    pub fn run(&self) -> &pb::Run {
        self.0.task.run.as_ref().expect("a task has a run")
    }

    /// The run's input messages.
    pub fn input(&self) -> &[pb::Message] {
        &self.run().input
    }

    /// The attempt number, from 1.
    pub fn attempt(&self) -> i32 {
        self.0.task.attempt
    }

    /// The decision on this run's plan, when the run resumes after REQUIRES_ACTION.
    pub fn resume(&self) -> Option<&pb::Approval> {
        self.0.task.resume.as_ref()?.approval.as_ref()
    }

    /// A client for the handler's own calls (reading the transcript, writing a context).
    pub fn client(&self) -> Agentry {
        self.0.client.clone()
    }

    /// Set once the run was cancelled; the worker then drops the handler's stream.
    pub fn cancel_token(&self) -> CancelToken {
        self.0.cancel.clone()
    }

    /// Whether this attempt can no longer write to the run (a plan went to a human, or
    /// the lease was lost): the handler should return.
    pub fn lease_ended(&self) -> bool {
        self.0.ended.is_cancelled()
    }

    /// Proposes tool steps (after sending every step yielded so far). `approved`: go on.
    /// Otherwise the run waits for a human and this lease has ended: the handler should
    /// return, and the decision comes back as [`TaskContext::resume`] on a later task.
    pub async fn propose_plan(
        &self,
        steps: Vec<pb::PlanStep>,
    ) -> Result<pb::ProposePlanResponse, Error> {
        self.flush_trailing();
        self.flush().await?;
        let request = pb::ProposePlanRequest {
            task_token: self.0.task.task_token.clone(),
            steps,
            request_id: request_id(),
        };
        let calls = &self.0.calls;
        let answer = self
            .0
            .lease
            .call("ProposePlan", Duration::ZERO, || {
                let (mut client, request) = (calls.execution.clone(), request.clone());
                async move { client.propose_plan(request).await }
            })
            .await;
        match answer {
            Ok(answer) => {
                if !answer.approved {
                    self.0.ended.cancel();
                }
                Ok(answer)
            }
            Err(error) => {
                if is_stale(&error) {
                    self.lost(&error);
                }
                Err(error)
            }
        }
    }

    /// Sends the buffered events now (the worker also does this on its own).
    pub async fn flush(&self) -> Result<(), Error> {
        let _one_at_a_time = self.0.flush_lock.lock().await;
        loop {
            let batch: Vec<_> = {
                let mut events = self.0.events.lock().expect("events");
                let take = events.buffer.len().min(MAX_BATCH);
                events.buffer.drain(..take).collect()
            };
            if batch.is_empty() {
                return Ok(());
            }
            let request = pb::AppendRunEventsRequest {
                task_token: self.0.task.task_token.clone(),
                events: batch,
                request_id: request_id(),
            };
            let calls = &self.0.calls;
            let answer = self
                .0
                .lease
                .call("AppendRunEvents", Duration::ZERO, || {
                    let (mut client, request) = (calls.execution.clone(), request.clone());
                    async move { client.append_run_events(request).await }
                })
                .await?;
            if answer.cancel_requested {
                self.cancelled();
            }
        }
    }

    pub(crate) fn buffered(&self) -> usize {
        self.0.events.lock().expect("events").buffer.len()
    }

    pub(crate) fn flushing(&self) -> bool {
        self.0.flush_lock.try_lock().is_err()
    }

    /// The messages that end the attempt's output, taken.
    pub(crate) fn take_trailing(&self) -> Vec<pb::Message> {
        std::mem::take(&mut self.0.events.lock().expect("events").trailing)
    }

    /// Records the trailing messages as events (something followed them, or the attempt
    /// failed).
    pub(crate) fn flush_trailing(&self) {
        let mut events = self.0.events.lock().expect("events");
        let trailing = std::mem::take(&mut events.trailing);
        for message in trailing {
            push(&mut events, &self.0.pending, completed(message));
        }
    }

    /// Turns a step into a buffered event.
    pub(crate) fn add(&self, step: Step) {
        use pb::run_event_input::Kind;
        if !matches!(step, Step::Usage(_)) {
            self.flush_trailing();
        }
        let mut events = self.0.events.lock().expect("events");
        let kind = match step {
            Step::TextDelta { text, message_id } => {
                let message_id = message_id
                    .unwrap_or_else(|| format!("a{}-m{}", self.attempt(), events.message_index));
                Kind::MessageDelta(pb::MessageDelta { message_id, text })
            }
            Step::Message { role, content } => {
                events.trailing.push(pb::Message {
                    role: role as i32,
                    content,
                    ..Default::default()
                });
                events.message_index += 1;
                return;
            }
            Step::ToolCall {
                id,
                tool,
                arguments,
            } => {
                events.tools.insert(id.clone(), tool.clone());
                Kind::ToolCallStarted(pb::ToolCallStarted {
                    tool_call: Some(pb::ToolCall {
                        id,
                        tool,
                        arguments: Some(arguments),
                        ..Default::default()
                    }),
                })
            }
            Step::ToolResult {
                id,
                result,
                is_error,
            } => {
                let tool = events.tools.remove(&id).unwrap_or_default();
                Kind::ToolCallCompleted(pb::ToolCallCompleted {
                    tool_call: Some(pb::ToolCall {
                        id,
                        tool,
                        result: Some(result),
                        is_error,
                        ..Default::default()
                    }),
                    ..Default::default()
                })
            }
            Step::Usage(usage) => Kind::Usage(usage),
            Step::Custom { name, data } => Kind::Custom(pb::CustomEvent {
                name,
                data: Some(data),
            }),
        };
        push(
            &mut events,
            &self.0.pending,
            pb::RunEventInput { kind: Some(kind) },
        );
    }

    /// The run was cancelled: wake the driver, which drops the handler's stream.
    pub(crate) fn cancelled(&self) {
        if !self.0.cancel.is_cancelled() {
            tracing::info!(run = %self.0.lease.run, "cancel requested");
            self.0.cancel.cancel();
        }
    }

    /// The lease is gone: stop the handler, report nothing.
    pub(crate) fn lost(&self, error: &Error) {
        if !self.0.ended.is_cancelled() {
            tracing::warn!(run = %self.0.lease.run, %error, "lease lost; stopping the handler");
            self.0.ended.cancel();
        }
    }

    /// A background flush was refused (not a transport failure): the attempt fails.
    pub(crate) fn failed(&self, error: Error) {
        tracing::warn!(run = %self.0.lease.run, %error, "appending events failed");
        self.0.failure.lock().expect("failure").get_or_insert(error);
        self.0.interrupted.notify_one();
    }
}

fn push(events: &mut Events, pending: &Notify, event: pb::RunEventInput) {
    events.buffer.push(event);
    pending.notify_one();
}

fn completed(message: pb::Message) -> pb::RunEventInput {
    pb::RunEventInput {
        kind: Some(pb::run_event_input::Kind::MessageCompleted(
            pb::MessageCompleted {
                message: Some(message),
            },
        )),
    }
}

/// A fresh request id, kept across the retries of one call.
pub(crate) fn request_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// Whether `error` says the lease is no longer this attempt's.
pub(crate) fn is_stale(error: &Error) -> bool {
    error.reason() == STALE_TASK || error.reason() == super::lease::LEASE_EXPIRED
}
