//! One leased attempt from PollTask to CompleteTask or FailTask: the handler's stream
//! pulled step by step, the heartbeat that renews the lease and brings the cancel, the
//! flusher that sends buffered events, and the call that ends the attempt.

use std::{sync::atomic::Ordering, time::Duration};

use futures::{StreamExt, stream::BoxStream};

use super::{
    HandlerError, StepResult, Worker, duration,
    task::{Settings, TaskContext, is_stale, request_id},
};
use crate::{Error, pb};

/// How the handler's stream ended.
enum Outcome {
    /// The stream ended: CompleteTask with the trailing messages.
    Finished,
    /// The run was cancelled: the stream was dropped, CompleteTask CANCELLED.
    Cancelled,
    /// The handler yielded an error: FailTask.
    Failed(HandlerError),
    /// The server refused the handler's events: FailTask.
    Refused(Error),
    /// The lease ended (lost, or a plan went to a human): nothing to report.
    Ended,
}

impl Worker {
    pub(super) async fn execute(&self, task: pb::Task) {
        let settings = Settings {
            batch_size: self.options.batch_size.max(1),
            flush_interval: self.options.flush_interval,
            max_buffered: self.options.max_buffered.max(1),
        };
        let run_agent = task
            .run
            .as_ref()
            .map(|r| r.agent.clone())
            .unwrap_or_default();
        let agent = task
            .agent
            .as_ref()
            .map(|a| a.name.clone())
            .unwrap_or_default();
        let ctx = TaskContext::new(
            task,
            self.client.clone(),
            self.client.clone(),
            settings,
            self.options.call_timeout,
        );
        let run = ctx.0.lease.run.clone();
        tracing::info!(run = %run, attempt = ctx.attempt(), "attempt leased");
        let heartbeat = tokio::spawn(heartbeat(
            ctx.clone(),
            self.options.heartbeat_wait,
            self.options.lease_duration,
        ));
        let flusher = tokio::spawn(flusher(ctx.clone()));
        let outcome = match self
            .handlers
            .get(&run_agent)
            .or_else(|| self.handlers.get(&agent))
        {
            Some(handler) => drive(&ctx, handler(ctx.clone())).await,
            None => Outcome::Failed(HandlerError::fatal(
                "NoHandler",
                format!("no handler for agent {agent}"),
            )),
        };
        match finish(&ctx, outcome).await {
            Ok(()) => {}
            Err(error) if is_stale(&error) => {
                tracing::warn!(run = %run, %error, "lease lost before the attempt ended");
            }
            Err(error) => tracing::error!(run = %run, %error, "could not end the attempt"),
        }
        ctx.0.ending.store(true, Ordering::SeqCst);
        heartbeat.abort();
        flusher.abort();
    }
}

/// Pulls the handler's stream to its end, turning steps into buffered events. A cancel,
/// a lost lease or a refused batch drops the stream at once.
async fn drive(ctx: &TaskContext, mut stream: BoxStream<'static, StepResult>) -> Outcome {
    let inner = &ctx.0;
    loop {
        let item = tokio::select! {
            biased;
            _ = inner.ended.cancelled() => return Outcome::Ended,
            _ = inner.cancel.cancelled() => return Outcome::Cancelled,
            _ = inner.interrupted.notified() => {
                match inner.failure.lock().expect("failure").take() {
                    Some(error) => return Outcome::Refused(error),
                    None => continue,
                }
            }
            item = stream.next() => item,
        };
        if ctx.lease_ended() {
            return Outcome::Ended;
        }
        let step = match item {
            None => return Outcome::Finished,
            Some(Err(error)) => return Outcome::Failed(error),
            Some(Ok(step)) => step,
        };
        ctx.add(step);
        let buffered = ctx.buffered();
        // A batch in flight (perhaps retried through an outage) sends these too when it
        // is done; the handler only waits once the buffer is too full.
        if buffered >= inner.settings.batch_size
            && (!ctx.flushing() || buffered >= inner.settings.max_buffered)
        {
            match ctx.flush().await {
                Ok(()) => {}
                Err(error) if is_stale(&error) => {
                    ctx.lost(&error);
                    return Outcome::Ended;
                }
                Err(error) => return Outcome::Refused(error),
            }
        }
    }
}

/// Sends what is left and ends the attempt with CompleteTask or FailTask.
async fn finish(ctx: &TaskContext, outcome: Outcome) -> Result<(), Error> {
    let inner = &ctx.0;
    let mut failure = match outcome {
        Outcome::Ended => return Ok(()),
        Outcome::Finished => None,
        other => Some(other),
    };
    if ctx.lease_ended() {
        return Ok(());
    }
    if failure.is_some() {
        ctx.flush_trailing(); // a failed attempt's messages are events, not output
    }
    match ctx.flush().await {
        Ok(()) => {}
        Err(error) if is_stale(&error) => return Err(error),
        // The server refused the events: the attempt cannot succeed; a handler's own
        // failure is reported before this one.
        Err(error) => {
            failure.get_or_insert(Outcome::Refused(error));
        }
    }
    // A batch the flusher sent may have been refused after the handler finished.
    if let Some(error) = inner.failure.lock().expect("failure").take() {
        failure.get_or_insert(Outcome::Refused(error));
    }
    inner.ending.store(true, Ordering::SeqCst);
    let token = inner.task.task_token.clone();
    let complete = |output, stop_reason: pb::StopReason| pb::CompleteTaskRequest {
        task_token: token.clone(),
        output,
        stop_reason: stop_reason as i32,
        request_id: request_id(),
        ..Default::default()
    };
    let fail = match failure {
        None => Some(complete(ctx.take_trailing(), pb::StopReason::Unspecified)),
        Some(Outcome::Cancelled) => Some(complete(Vec::new(), pb::StopReason::Cancelled)),
        Some(_) => None,
    };
    let calls = &inner.calls;
    if let Some(request) = fail {
        inner
            .lease
            .call("CompleteTask", Duration::ZERO, || {
                let (mut client, request) = (calls.execution.clone(), request.clone());
                async move { client.complete_task(request).await }
            })
            .await?;
        return Ok(());
    }
    let error = match failure {
        Some(Outcome::Failed(error)) => {
            if !error.retryable {
                tracing::error!(run = %inner.lease.run, %error, "handler failed");
            }
            error
        }
        Some(Outcome::Refused(error)) => {
            HandlerError::fatal(format!("{:?}", error.kind), error.to_string())
        }
        _ => unreachable!("handled above"),
    };
    let request = pb::FailTaskRequest {
        task_token: token,
        error: Some(pb::RunError {
            r#type: error.error_type,
            message: error.message,
            details: error.details,
        }),
        retryable: error.retryable,
        next_retry_delay: error.retry_after.filter(|_| error.retryable).map(duration),
        request_id: request_id(),
    };
    inner
        .lease
        .call("FailTask", Duration::ZERO, || {
            let (mut client, request) = (calls.execution.clone(), request.clone());
            async move { client.fail_task(request).await }
        })
        .await?;
    Ok(())
}

/// Renews the lease until the attempt ends, and delivers a cancel. A heartbeat the server
/// cannot answer is retried until the lease runs out, then the attempt is abandoned.
/// After a cancel the server answers at once, so the wind-down is covered by plain
/// renewals; so is the final CompleteTask or FailTask.
async fn heartbeat(ctx: TaskContext, heartbeat_wait: Duration, lease_duration: Duration) {
    let inner = &ctx.0;
    let mut wait = heartbeat_wait;
    while !ctx.lease_ended() {
        let request = pb::HeartbeatTaskRequest {
            task_token: inner.task.task_token.clone(),
            wait: Some(duration(wait)),
        };
        let calls = &inner.calls;
        let answer = inner
            .lease
            .call("HeartbeatTask", wait, || {
                let (mut client, request) = (calls.execution.clone(), request.clone());
                async move { client.heartbeat_task(request).await }
            })
            .await;
        let ending = inner.ending.load(Ordering::SeqCst);
        match answer {
            Ok(answer) => {
                inner.lease.grant(answer.lease_expire_time.as_ref());
                if answer.cancel_requested && !ending {
                    ctx.cancelled();
                }
            }
            Err(error) => {
                if !ending {
                    ctx.lost(&error); // once ending, the attempt's own last call reports
                }
                return;
            }
        }
        if inner.cancel.is_cancelled() || ending {
            wait = Duration::ZERO;
            tokio::time::sleep((lease_duration / 3).max(Duration::from_millis(200))).await;
        }
    }
}

/// Sends buffered events `flush_interval` after the first of them was buffered.
async fn flusher(ctx: TaskContext) {
    let inner = &ctx.0;
    loop {
        inner.pending.notified().await;
        tokio::time::sleep(inner.settings.flush_interval).await;
        match ctx.flush().await {
            Ok(()) => {}
            Err(error) if is_stale(&error) => {
                ctx.lost(&error);
                return;
            }
            Err(error) => {
                ctx.failed(error);
                return;
            }
        }
    }
}
