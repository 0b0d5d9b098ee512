//! The commands of the ExecutionService as the domain takes them: the server builds them
//! from requests, [`super::RunChange`] and the session rules decide on them, the store
//! persists what they decide.

use super::{Decision, MessageBody, RunError, RunSpec, RunStatus, StopReason, ToolCall, Usage};
use crate::{
    model::Labels,
    names::SessionName,
    time::{DurationMicros, TimeRange},
};

/// CreateSession.
#[derive(Debug, Clone)]
pub struct NewSession {
    pub name: SessionName,
    /// Instance id in the session's project.
    pub instance: String,
    pub description: String,
    pub labels: Labels,
}

/// CreateRun: a run of `session` as `spec` says.
#[derive(Debug, Clone)]
pub struct NewRun {
    pub session: SessionName,
    pub spec: RunSpec,
}

/// Filters of ListRuns.
#[derive(Debug, Clone, Default)]
pub struct RunFilter {
    /// One session's runs; `None`: the whole project's.
    pub session: Option<String>,
    pub status: Option<RunStatus>,
    pub agent: Option<String>,
    pub instance: Option<String>,
    /// Created within these bounds.
    pub created: TimeRange,
}

/// DecideApproval: the verdict on the run's pending approval `approval_id`.
#[derive(Debug, Clone)]
pub struct ApprovalDecision {
    pub approval_id: String,
    pub decision: Decision,
    pub comment: Option<String>,
}

/// CompleteTask: what the attempt produced.
#[derive(Debug, Clone)]
pub struct TaskCompletion {
    /// The attempt's last events, appended (as AppendRunEvents would) before it ends.
    pub events: Vec<EventInput>,
    pub output: Vec<MessageBody>,
    pub usage: Usage,
    pub stop_reason: StopReason,
}

/// FailTask: why the attempt failed and whether another may follow (after
/// `next_retry_delay`, or the retry policy's backoff).
#[derive(Debug, Clone)]
pub struct TaskFailure {
    pub error: RunError,
    pub retryable: bool,
    pub next_retry_delay: Option<DurationMicros>,
}

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
    /// Whether the event adds to the session's transcript (its session must be locked).
    pub fn touches_transcript(&self) -> bool {
        matches!(
            self,
            Self::Message(_) | Self::ToolStarted(_) | Self::ToolCompleted(_)
        )
    }

    /// The tool call id it starts or completes.
    pub fn call_id(&self) -> Option<&str> {
        match self {
            Self::ToolStarted(c) | Self::ToolCompleted(c) => Some(c.id.as_str()),
            _ => None,
        }
    }
}
