//! The life of a run: CreateRun with the multitask strategies, cancels, and how a
//! worker's attempt ends (CompleteTask, FailTask, a heartbeat).

use super::{
    Ending, EventBody, MessageBody, MultitaskStrategy, NewRun, Run, RunChange, RunError, RunStatus,
    Session, StopReason, Usage,
};
use crate::{
    Error, Result,
    model::Instance,
    names::RunName,
    time::{DurationMicros, UnixMicros},
};

/// What CreateRun does with the session's unfinished runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// The session is idle: the new run owns it.
    Start,
    /// The new run waits behind the active one.
    Enqueue,
    /// Every unfinished run of the session is cancelled first (their messages
    /// superseded when `rollback`).
    Interrupt { rollback: bool },
}

/// The multitask strategy of a new run, applied to its session.
pub fn admit(strategy: MultitaskStrategy, session: &Session) -> Result<Admission> {
    let Some(active) = &session.active_run else {
        return Ok(Admission::Start);
    };
    match strategy {
        MultitaskStrategy::Reject => Err(Error::precondition(
            "SESSION_BUSY",
            format!(
                "{} has an active run ({}); choose multitask_strategy ENQUEUE, INTERRUPT or ROLLBACK to start another",
                session.name(),
                active
            ),
        )),
        MultitaskStrategy::Enqueue => Ok(Admission::Enqueue),
        MultitaskStrategy::Interrupt => Ok(Admission::Interrupt { rollback: false }),
        MultitaskStrategy::Rollback => Ok(Admission::Interrupt { rollback: true }),
    }
}

/// The order INTERRUPT and ROLLBACK cancel a session's unfinished runs in: queued ones
/// first (oldest first), the active one last, so the session is handed to none of them.
pub fn interrupt_order(runs: &mut [Run], session: &Session) {
    runs.sort_by_key(|r| session.active_run.as_ref() == Some(&r.id));
}

/// What a cancel does.
#[derive(Debug, Clone, PartialEq)]
pub enum Cancel {
    /// The run ends now.
    End(Ending),
    /// The run's worker is asked to stop (CANCELLING).
    Requested,
    /// Already cancelled or cancelling: nothing changes.
    Unchanged,
}

impl Run {
    /// A new QUEUED run of `session` as `instance`; `ready`: it owns the session.
    pub fn queued(
        new: &NewRun,
        session: &Session,
        instance: &Instance,
        id: String,
        ready: bool,
        now: UnixMicros,
    ) -> Self {
        Self {
            workspace: session.workspace.clone(),
            project: session.project.clone(),
            session: session.id.clone(),
            id,
            instance: instance.id.clone(),
            agent: instance.agent.clone(),
            agent_revision: instance.agent_revision,
            status: RunStatus::Queued,
            stop_reason: StopReason::Unspecified,
            spec: new.spec.clone(),
            output: Vec::new(),
            attempt: 0,
            error: None,
            usage: Usage::default(),
            last_sequence: 0,
            cancel_requested: false,
            approval: None,
            next_attempt_time: now,
            create_time: now,
            start_time: None,
            end_time: None,
            update_time: now,
            lease_epoch: 0,
            lease_expire_time: None,
            lease_duration: 0,
            worker: None,
            ready,
            supersede: false,
        }
    }
}

impl RunChange {
    /// CreateRun, once [`admit`] let it in (and the runs it interrupts were handled): a
    /// QUEUED run with id `id` and its first status event. When the session is idle the
    /// run owns it at once: its input joins the transcript and its queue is woken.
    pub fn created(
        new: &NewRun,
        session: &mut Session,
        instance: &Instance,
        id: String,
        now: UnixMicros,
    ) -> Result<Self> {
        let ready = session.active_run.is_none();
        let run = Run::queued(new, session, instance, id, ready, now);
        let mut change = Self::new(run, Some(session), now);
        change.event(EventBody::StatusChanged {
            previous: None,
            status: RunStatus::Queued,
            stop_reason: StopReason::Unspecified,
            message: String::new(),
        });
        if ready {
            session.active_run = Some(change.run.id.clone());
            for message in &new.spec.input {
                change.append(message.clone())?;
            }
            change.wake_queue();
        }
        change.wake_run();
        Ok(change)
    }

    /// CancelRun.
    pub fn cancel(&mut self, name: &RunName, reason: &str) -> Result<Cancel> {
        match self.run.status {
            RunStatus::Queued | RunStatus::RequiresAction => {
                self.run.cancel_requested = true;
                Ok(Cancel::End(Ending::finish(
                    RunStatus::Cancelled,
                    StopReason::Cancelled,
                    reason,
                )))
            }
            RunStatus::Running => {
                self.request_cancel(reason)?;
                Ok(Cancel::Requested)
            }
            RunStatus::Cancelling | RunStatus::Cancelled => Ok(Cancel::Unchanged),
            status => Err(Error::precondition(
                "RUN_FINISHED",
                format!("{name} already finished ({})", status.as_str()),
            )),
        }
    }

    fn request_cancel(&mut self, message: &str) -> Result<()> {
        self.run.cancel_requested = true;
        self.status(RunStatus::Cancelling, StopReason::Unspecified, message)?;
        self.wake_run();
        Ok(())
    }

    /// One unfinished run of a session a new INTERRUPT or ROLLBACK run takes over: how
    /// it ends, if it ends now (a running one is asked to stop instead).
    pub fn interrupt(&mut self, rollback: bool) -> Result<Option<Ending>> {
        let message = if rollback {
            "rolled back by a new run"
        } else {
            "interrupted by a new run"
        };
        if rollback {
            self.run.supersede = true;
        }
        self.run.update_time = self.now;
        match self.run.status {
            RunStatus::Queued | RunStatus::RequiresAction => Ok(Some(Ending::finish(
                RunStatus::Cancelled,
                StopReason::Interrupted,
                message,
            ))),
            RunStatus::Running => {
                self.request_cancel(message)?;
                Ok(None)
            }
            _ => Ok(None),
        }
    }

    /// Renews the lease for `wait` (the worker's reply is held that long) plus the
    /// lease's duration.
    pub fn heartbeat(&mut self, wait: DurationMicros) {
        let expire = self.now.saturating_add(wait);
        self.run.lease_expire_time = Some(expire.saturating_add(self.run.lease_duration));
    }

    /// CompleteTask: the output joins the transcript and the run succeeds, unless a
    /// cancel was requested, which the worker's completion confirms.
    pub fn complete(
        &mut self,
        output: &[MessageBody],
        usage: &Usage,
        stop_reason: StopReason,
    ) -> Result<Ending> {
        if self.run.status == RunStatus::Cancelling {
            return Ok(confirmed_cancel());
        }
        for message in output {
            let sequence = self.append(message.clone())?;
            self.event(EventBody::MessageCompleted {
                message: message.clone(),
                sequence,
            });
        }
        if !usage.is_zero() {
            self.run.usage.add(usage);
            self.event(EventBody::Usage {
                usage: usage.clone(),
            });
        }
        self.run.output = output.to_vec();
        Ok(Ending::finish(RunStatus::Succeeded, stop_reason, ""))
    }

    /// FailTask: another attempt after a backoff (`delay`, or the policy's) while the
    /// retry policy allows one, else FAILED; a requested cancel ends as CANCELLED.
    pub fn fail(
        &mut self,
        error: &RunError,
        retryable: bool,
        delay: Option<DurationMicros>,
    ) -> Ending {
        self.event(EventBody::Error {
            error: error.clone(),
        });
        self.run.error = Some(error.clone());
        let attempt = self.run.attempt;
        let policy = &self.run.spec.retry_policy;
        if self.run.status == RunStatus::Cancelling {
            confirmed_cancel()
        } else if retryable && policy.retries(attempt, &error.error_type) {
            Ending::Requeue {
                reason: StopReason::Error,
                message: error.message.clone(),
                delay: delay.unwrap_or_else(|| policy.backoff(attempt)),
            }
        } else {
            Ending::finish(RunStatus::Failed, StopReason::Error, &error.message)
        }
    }
}

fn confirmed_cancel() -> Ending {
    Ending::finish(
        RunStatus::Cancelled,
        StopReason::Cancelled,
        "the worker confirmed the cancel",
    )
}
