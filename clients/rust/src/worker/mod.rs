//! The worker side: serve agents by turning handlers' streams of [`Step`]s into leased
//! runs.
//!
//! A handler takes a [`TaskContext`] and returns a `Stream` of steps (write it with
//! [`steps`], or any stream). For every run it leases (PollTask, long-polled), the worker:
//!
//! - heartbeats in the background with `HeartbeatTask(wait)`, which the server answers at
//!   once when the run is cancelled: the handler's [`CancelToken`] is set and its stream
//!   is dropped, and the attempt ends CANCELLED;
//! - batches the yielded steps into AppendRunEvents (every `flush_interval` or
//!   `batch_size` events, and always before a plan or the end);
//! - ends the attempt: CompleteTask when the stream ends (with the trailing
//!   [`Step::Message`]s as output), FailTask when it yields an `Err` (retryable per
//!   [`HandlerError::retryable`]), nothing when the lease was lost (the server re-queues
//!   the run) or a plan awaits a human.
//!
//! The worker's own calls ride out a server restart (see [`lease`]): a transport failure
//! is retried with the same `request_id` until the lease would have run out, and is never
//! reported as the handler's failure; PollTask is retried for as long as it takes.
//!
//! [`StopHandle::stop`] stops polling and lets running handlers finish. A worker process
//! that dies simply stops heartbeating: its leases lapse and its runs are retried.

mod attempt;
pub mod lease;
mod steps;
mod task;

use std::{collections::HashMap, sync::Arc, time::Duration};

use futures::{Stream, StreamExt, stream::BoxStream};
use tokio::{sync::Semaphore, task::JoinSet};

pub use steps::{Emitter, HandlerError, Step, StepResult, json_struct, json_value, steps};
pub use task::{CancelToken, TaskContext};

use crate::{Agentry, Error, pb};

type Handler = Arc<dyn Fn(TaskContext) -> BoxStream<'static, StepResult> + Send + Sync>;

/// How a [`Worker`] polls, leases and batches.
#[derive(Debug, Clone)]
pub struct WorkerOptions {
    /// Recorded on leased runs; `host/pid` by default.
    pub identity: String,
    /// Runs handled at once.
    pub concurrency: usize,
    /// How long a PollTask waits for a run (at most 60 s).
    pub poll_wait: Duration,
    /// How long a lease lasts without a heartbeat (1 s to 600 s).
    pub lease_duration: Duration,
    /// How long each HeartbeatTask is held open waiting for a cancel. The server extends
    /// the lease to `heartbeat_wait + lease_duration` from each heartbeat: that sum is how
    /// long a crashed worker holds its runs, and how long a server may be out of reach
    /// before a live worker gives an attempt up.
    pub heartbeat_wait: Duration,
    /// Events buffered before a flush.
    pub batch_size: usize,
    /// How long an event may wait in the buffer.
    pub flush_interval: Duration,
    /// Events a handler may yield while a batch is still being sent (retried through an
    /// outage) before the worker stops pulling its stream.
    pub max_buffered: usize,
    /// Deadline of each attempt of a worker call (a heartbeat gets its wait on top).
    pub call_timeout: Duration,
}

impl Default for WorkerOptions {
    fn default() -> Self {
        let host = std::env::var("HOSTNAME")
            .ok()
            .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
            .map(|h| h.trim().to_owned())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "worker".into());
        Self {
            identity: format!("{host}/{}", std::process::id()),
            concurrency: 4,
            poll_wait: Duration::from_secs(30),
            lease_duration: Duration::from_secs(30),
            heartbeat_wait: Duration::from_secs(20),
            batch_size: 100,
            flush_interval: Duration::from_millis(50),
            max_buffered: 10_000,
            call_timeout: Duration::from_secs(10),
        }
    }
}

/// Stops a [`Worker`] from another task: no more polling; [`Worker::run`] returns once
/// the running handlers have finished.
#[derive(Clone)]
pub struct StopHandle(CancelToken);

impl StopHandle {
    pub fn stop(&self) {
        self.0.cancel();
    }
}

/// Serves agents: leases their runs and drives a handler per run.
pub struct Worker {
    client: Agentry,
    options: WorkerOptions,
    handlers: HashMap<String, Handler>,
    stop: CancelToken,
}

fn workspace_of(agent: &str) -> Result<String, Error> {
    match agent.split('/').collect::<Vec<_>>()[..] {
        ["workspaces", w, "agents", a] if !w.is_empty() && !a.is_empty() => {
            Ok(format!("workspaces/{w}"))
        }
        _ => Err(Error::local(format!(
            "expected workspaces/{{w}}/agents/{{a}}, got {agent:?}"
        ))),
    }
}

impl Worker {
    /// A worker calling through `client` (connected with a WORKER key).
    pub fn new(client: Agentry) -> Self {
        Self::with_options(client, WorkerOptions::default())
    }

    pub fn with_options(client: Agentry, options: WorkerOptions) -> Self {
        Self {
            client,
            options,
            handlers: HashMap::new(),
            stop: CancelToken::new(),
        }
    }

    /// Serves `agent` (`workspaces/{w}/agents/{a}`) with `handler`. A worker serves the
    /// agents of one workspace (its key's).
    pub fn agent<F, S>(&mut self, agent: impl Into<String>, handler: F) -> Result<&mut Self, Error>
    where
        F: Fn(TaskContext) -> S + Send + Sync + 'static,
        S: Stream<Item = StepResult> + Send + 'static,
    {
        let agent = agent.into();
        let workspace = workspace_of(&agent)?;
        if let Some(other) = self.handlers.keys().next()
            && workspace_of(other)? != workspace
        {
            return Err(Error::local(
                "a worker serves the agents of one workspace (its key's)",
            ));
        }
        self.handlers
            .insert(agent, Arc::new(move |task| handler(task).boxed()));
        Ok(self)
    }

    /// A handle that stops [`Worker::run`] from elsewhere (a signal handler, a test).
    pub fn stop_handle(&self) -> StopHandle {
        StopHandle(self.stop.clone())
    }

    /// Polls for runs and handles them until stopped, or until a fatal error: a key that
    /// is refused, an agent that does not exist.
    pub async fn run(self) -> Result<(), Error> {
        let Some(first) = self.handlers.keys().next() else {
            return Err(Error::local("no agent registered"));
        };
        let request = pb::PollTaskRequest {
            parent: workspace_of(first)?,
            agents: self.handlers.keys().cloned().collect(),
            identity: self.options.identity.clone(),
            wait: Some(duration(self.options.poll_wait)),
            lease_duration: Some(duration(self.options.lease_duration)),
        };
        let this = Arc::new(self);
        let slots = Arc::new(Semaphore::new(this.options.concurrency.max(1)));
        let mut running = JoinSet::new();
        let outcome = loop {
            while running.try_join_next().is_some() {}
            let slot = tokio::select! {
                _ = this.stop.cancelled() => break Ok(()),
                slot = slots.clone().acquire_owned() => slot.expect("never closed"),
            };
            let task = match this.poll(&request).await {
                Ok(Some(task)) => task,
                Ok(None) => continue,
                Err(error) => break Err(error),
            };
            let worker = this.clone();
            running.spawn(async move {
                worker.execute(task).await;
                drop(slot);
            });
        };
        while running.join_next().await.is_some() {}
        outcome
    }

    /// One leased task, or None when the wait passed or the worker is stopping. Failures
    /// of the transport (and INTERNAL) are retried with backoff for as long as they last.
    async fn poll(&self, request: &pb::PollTaskRequest) -> Result<Option<pb::Task>, Error> {
        let mut failures = 0;
        let deadline = self.options.poll_wait + self.options.call_timeout;
        loop {
            let mut client = self.client.execution.clone();
            let call = lease::with_deadline(deadline, client.poll_task(request.clone()));
            // A run leased in the instant of a stop is retried once its lease lapses.
            let answer = tokio::select! {
                _ = self.stop.cancelled() => return Ok(None),
                answer = call => answer,
            };
            let error = match answer {
                Ok(answer) => {
                    if failures > 0 {
                        tracing::info!(failures, "poll succeeded again");
                    }
                    return Ok(answer.task);
                }
                Err(error)
                    if lease::is_transient(&error) || error.code == tonic::Code::Internal =>
                {
                    error
                }
                Err(error) => return Err(error),
            };
            failures += 1;
            if failures == 1 || failures % 10 == 0 {
                tracing::warn!(%error, attempt = failures + 1, "poll failed; retrying");
            }
            tokio::select! {
                _ = self.stop.cancelled() => return Ok(None),
                _ = tokio::time::sleep(lease::backoff(failures, Some(&error))) => {}
            }
        }
    }
}

pub(crate) fn duration(d: Duration) -> prost_types::Duration {
    prost_types::Duration {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
    }
}
