//! The commands of the ExecutionService as the domain takes them: the server builds them
//! from requests, [`super::RunChange`] and the session rules decide on them, the store
//! persists what they decide.

use super::{
    AutonomyLevel, ContextBinding, MessageBody, MultitaskStrategy, RetryPolicy, RunError,
    RunStatus, ToolCall, Usage,
};
use crate::{model::Labels, names::SessionName, time::Micros};

/// CreateSession.
#[derive(Debug, Clone)]
pub struct NewSession {
    pub name: SessionName,
    /// Instance id in the session's project.
    pub instance: String,
    pub description: String,
    pub labels: Labels,
}

/// CreateRun.
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
