//! [`RunChange`]: one run changing, in memory. A command applied to it decides the new
//! status and stop reason, appends the events that describe the change (the next gapless
//! sequence numbers, the current attempt), the messages the session's transcript gains,
//! the changes to the run's tool calls and the wake keys of what changed. The store loads
//! the run (and the session's transcript length when the transcript may change), applies
//! the command and persists these effects in the same transaction.

use super::{
    Approval, EventBody, Lease, MessageBody, MessageRole, Run, RunError, RunEvent, RunStatus,
    Session, StopReason, ToolCall,
};
use crate::{
    Error, Result,
    time::{DurationMicros, UnixMicros},
    wake::WakeKey,
};

/// How the run's current attempt ends.
#[derive(Debug, Clone, PartialEq)]
pub enum Ending {
    /// Into a terminal status.
    Finish {
        to: RunStatus,
        reason: StopReason,
        message: String,
    },
    /// Back to the queue for another attempt, not before `delay`.
    Requeue {
        reason: StopReason,
        message: String,
        delay: DurationMicros,
    },
}

impl Ending {
    pub fn finish(to: RunStatus, reason: StopReason, message: impl Into<String>) -> Self {
        Self::Finish {
            to,
            reason,
            message: message.into(),
        }
    }

    /// The `status` of the synthetic result of each tool call the attempt left open.
    pub fn synthetic_status(&self) -> &'static str {
        match self {
            Self::Finish {
                to: RunStatus::Cancelled | RunStatus::TimedOut,
                ..
            } => "cancelled",
            _ => "failed",
        }
    }

    /// Whether the run leaves the session (which then goes to its next queued run).
    pub fn is_finish(&self) -> bool {
        matches!(self, Self::Finish { .. })
    }
}

/// The changes to the run's tool-call records.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CallChanges {
    /// New calls: (id, tool, still open).
    pub inserted: Vec<(String, String, bool)>,
    /// Stored open calls that completed.
    pub closed: Vec<String>,
    /// Every call of the run is closed (the attempt ended).
    pub close_all: bool,
}

impl CallChanges {
    pub fn is_empty(&self) -> bool {
        self.inserted.is_empty() && self.closed.is_empty() && !self.close_all
    }
}

/// A tool call the run left open, as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct OpenCall {
    pub id: String,
    pub tool: String,
}

/// One run changing: the run as it becomes, and the effects for the store to persist.
#[derive(Debug, Clone)]
pub struct RunChange {
    pub run: Run,
    /// New events, in order.
    pub events: Vec<RunEvent>,
    /// Messages the session's transcript gains, numbered from `transcript_base + 1`.
    pub transcript: Vec<MessageBody>,
    /// The transcript's length before `transcript`; `None`: the session is not loaded,
    /// and the change may not touch the transcript.
    pub transcript_base: Option<i64>,
    pub calls: CallChanges,
    /// What the change wakes, once committed.
    pub wakes: Vec<WakeKey>,
    pub now: UnixMicros,
}

/// The error of a worker call whose lease no longer holds.
pub fn stale(message: impl Into<String>) -> Error {
    Error::precondition("STALE_TASK", message)
}

/// A run error with the defaults of a lost worker.
pub fn worker_lost() -> RunError {
    RunError {
        error_type: "WorkerLost".into(),
        message: "the worker's lease lapsed without a heartbeat".into(),
        details: None,
    }
}

impl Lease {
    /// Whether this lease still holds `run` at `now`: same session, same attempt and
    /// epoch, still leased and not expired. A worker call is fenced by it.
    pub fn check(&self, run: &Run, now: UnixMicros) -> Result<()> {
        if run.project != self.project || run.session != self.session {
            return Err(stale("the run no longer exists"));
        }
        if run.status.is_terminal() {
            return Err(stale(format!(
                "the run already finished ({})",
                run.status.as_str()
            )));
        }
        if run.attempt != self.attempt || run.lease_epoch != self.epoch {
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
        Ok(())
    }
}

impl RunChange {
    /// `session`: the run's session, when loaded (locked) with the run.
    pub fn new(run: Run, session: Option<&Session>, now: UnixMicros) -> Self {
        Self {
            run,
            events: Vec::new(),
            transcript: Vec::new(),
            transcript_base: session.map(|s| s.message_count),
            calls: CallChanges::default(),
            wakes: Vec::new(),
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

    fn wake(&mut self, key: WakeKey) {
        if !self.wakes.contains(&key) {
            self.wakes.push(key);
        }
    }

    /// Waiters on the run: its events, status or cancel flag changed.
    pub fn wake_run(&mut self) {
        let run = &self.run;
        self.wake(WakeKey::run(&run.workspace, &run.project, &run.id));
    }

    /// Pollers of the run's agent: it became claimable.
    pub fn wake_queue(&mut self) {
        self.wake(WakeKey::queue(&self.run.workspace, &self.run.agent));
    }

    /// Pollers of any agent: a concurrent-run slot of the workspace was freed.
    pub fn wake_slot(&mut self) {
        self.wake(WakeKey::any_queue(&self.run.workspace));
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

    /// The sequence the next transcript message gets.
    pub fn next_message(&self) -> i64 {
        self.transcript_base.unwrap_or(0) + self.transcript.len() as i64 + 1
    }

    /// Appends a message to the session's transcript; returns its sequence number.
    pub fn append(&mut self, body: MessageBody) -> Result<i64> {
        if self.transcript_base.is_none() {
            return Err(Error::internal("a transcript change without its session"));
        }
        let sequence = self.next_message();
        self.transcript.push(body);
        Ok(sequence)
    }

    /// Takes the transcript appends (for the store to write) and the sequence of the
    /// first; later appends number on after them.
    pub fn take_transcript(&mut self) -> (i64, Vec<MessageBody>) {
        let first = self.transcript_base.unwrap_or(0) + 1;
        let bodies = std::mem::take(&mut self.transcript);
        if let Some(base) = &mut self.transcript_base {
            *base += bodies.len() as i64;
        }
        (first, bodies)
    }

    /// Closes the tool calls the attempt left open with a synthetic result, so the
    /// transcript stays valid for the next run of the session.
    pub fn close_calls(&mut self, open: Vec<OpenCall>, status: &str) -> Result<()> {
        if open.is_empty() {
            return Ok(());
        }
        for call in open {
            let call = ToolCall {
                id: call.id,
                tool: call.tool,
                arguments: None,
                result: Some(serde_json::json!({ "status": status })),
                is_error: true,
            };
            self.event(EventBody::ToolCallCompleted {
                call: call.clone(),
                synthetic: true,
            });
            self.append(MessageBody {
                role: MessageRole::Tool,
                content: String::new(),
                tool_call: Some(call),
            })?;
        }
        self.calls.close_all = true;
        Ok(())
    }

    /// Ends the attempt (its open calls already closed with [`Self::close_calls`]): the
    /// terminal status event comes last, or the run goes back to the queue.
    pub fn end(&mut self, ending: &Ending) -> Result<()> {
        match ending {
            Ending::Finish {
                to,
                reason,
                message,
            } => {
                let was_leased = self.run.status.is_leased();
                self.status(*to, *reason, message)?;
                if was_leased {
                    self.wake_slot();
                }
            }
            Ending::Requeue {
                reason,
                message,
                delay,
            } => {
                self.status(RunStatus::Queued, *reason, message)?;
                self.run.attempt += 1;
                self.run.next_attempt_time = self.now.saturating_add(*delay);
                self.wake_queue();
            }
        }
        self.wake_run();
        Ok(())
    }

    /// Whether, after `ending`, `session` goes to its next queued run.
    pub fn hands_off(&self, ending: &Ending, session: &Session) -> bool {
        ending.is_finish() && session.active_run.as_ref() == Some(&self.run.id)
    }
}

impl Session {
    /// Gives the session to `next`, its oldest waiting run (whose input the store then
    /// appends to the transcript), or to nobody. Returns the wake of `next`'s queue.
    pub fn hand_to(&mut self, next: Option<&mut Run>, now: UnixMicros) -> Option<WakeKey> {
        match next {
            Some(next) => {
                next.ready = true;
                next.update_time = now;
                self.active_run = Some(next.id.clone());
                Some(WakeKey::queue(&next.workspace, &next.agent))
            }
            None => {
                self.active_run = None;
                None
            }
        }
    }
}
