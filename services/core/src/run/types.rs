//! The run's records: tool calls, messages, sessions, runs, their events and leases.
//! Event bodies are serde types: the store keeps them as JSON.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{AutonomyLevel, MessageRole, MultitaskStrategy, RetryPolicy, RunStatus, StopReason};
use crate::{
    model::{Labels, ToolRisk},
    time::{DurationMicros, UnixMicros},
};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ToolCall {
    pub id: String,
    pub tool: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arguments: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    #[serde(default)]
    pub is_error: bool,
}

/// What a message says, as clients and workers send it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MessageBody {
    pub role: MessageRole,
    pub content: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call: Option<ToolCall>,
}

/// A transcript entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    pub sequence: i64,
    pub body: MessageBody,
    /// The run id that added it.
    pub run: String,
    pub superseded: bool,
    pub create_time: UnixMicros,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Session {
    pub workspace: String,
    pub project: String,
    pub id: String,
    pub instance: String,
    pub description: String,
    pub labels: Labels,
    /// The run that owns the session (its id), if any.
    #[serde(default, with = "crate::absent::as_empty")]
    pub active_run: Option<String>,
    pub message_count: i64,
    pub create_time: UnixMicros,
    pub update_time: UnixMicros,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Usage {
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub cost_usd: f64,
}

impl Usage {
    pub fn add(&mut self, other: &Usage) {
        self.input_tokens = self.input_tokens.saturating_add(other.input_tokens);
        self.output_tokens = self.output_tokens.saturating_add(other.output_tokens);
        self.cost_usd += other.cost_usd;
    }

    pub fn is_zero(&self) -> bool {
        self.input_tokens == 0 && self.output_tokens == 0 && self.cost_usd == 0.0
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RunError {
    #[serde(rename = "type")]
    pub error_type: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanStep {
    pub tool: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arguments: Option<Value>,
    pub description: String,
    pub risk: ToolRisk,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Decision {
    Approve,
    Reject,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Approval {
    pub id: String,
    pub steps: Vec<PlanStep>,
    pub expire_time: UnixMicros,
    #[serde(default)]
    pub decision: Option<Decision>,
    /// The decider's comment, if any.
    #[serde(default, with = "crate::absent::as_empty")]
    pub comment: Option<String>,
    /// API key name, `auto` or `expired`; none while undecided.
    #[serde(default, with = "crate::absent::as_empty")]
    pub decided_by: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContextBinding {
    /// Context id in the run's project.
    pub context: String,
    pub alias: String,
}

/// What CreateRun fixes for the life of a run: how it runs, then what it works on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunSpec {
    pub autonomy: AutonomyLevel,
    /// 0: none.
    pub timeout: DurationMicros,
    pub retry_policy: RetryPolicy,
    pub strategy: MultitaskStrategy,
    pub approval_timeout: DurationMicros,
    pub labels: Labels,
    pub input: Vec<MessageBody>,
    pub contexts: Vec<ContextBinding>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Run {
    pub workspace: String,
    pub project: String,
    pub session: String,
    pub id: String,
    pub instance: String,
    pub agent: String,
    pub agent_revision: i64,
    pub status: RunStatus,
    pub stop_reason: StopReason,
    /// What CreateRun fixed (in the run's JSON, its fields stand beside the others).
    #[serde(flatten)]
    pub spec: RunSpec,
    pub output: Vec<MessageBody>,
    pub attempt: i32,
    pub error: Option<RunError>,
    pub usage: Usage,
    pub last_sequence: i64,
    pub cancel_requested: bool,
    pub approval: Option<Approval>,
    pub next_attempt_time: UnixMicros,
    pub create_time: UnixMicros,
    pub start_time: Option<UnixMicros>,
    pub end_time: Option<UnixMicros>,
    pub update_time: UnixMicros,
    pub lease_epoch: i64,
    pub lease_expire_time: Option<UnixMicros>,
    pub lease_duration: DurationMicros,
    /// The identity of the worker that leased the run last, if it sent one; none before
    /// the first lease.
    #[serde(default, with = "crate::absent::as_empty")]
    pub worker: Option<String>,
    /// The run owns its session: only such a run may be claimed.
    #[serde(default)]
    pub ready: bool,
    /// A ROLLBACK run discarded this one: its messages are superseded.
    #[serde(default)]
    pub supersede: bool,
}

impl Run {
    /// When the run times out, if it has a timeout.
    pub fn deadline(&self) -> Option<UnixMicros> {
        let timeout = self.spec.timeout;
        (timeout > 0).then(|| self.create_time.saturating_add(timeout))
    }

    /// The lease the run's current attempt holds (its fencing token).
    pub fn lease(&self) -> Lease {
        Lease {
            workspace: self.workspace.clone(),
            project: self.project.clone(),
            session: self.session.clone(),
            run: self.id.clone(),
            attempt: self.attempt,
            epoch: self.lease_epoch,
            agent: self.agent.clone(),
            agent_revision: self.agent_revision,
        }
    }
}

/// What happened, as stored in the run's log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum EventBody {
    StatusChanged {
        /// `None` for the first event.
        previous: Option<RunStatus>,
        status: RunStatus,
        stop_reason: StopReason,
        message: String,
    },
    MessageDelta {
        message_id: String,
        text: String,
    },
    MessageCompleted {
        message: MessageBody,
        /// The transcript sequence it got.
        sequence: i64,
    },
    ToolCallStarted {
        call: ToolCall,
    },
    ToolCallCompleted {
        call: ToolCall,
        synthetic: bool,
    },
    PlanProposed {
        approval: Approval,
        auto_approved: bool,
    },
    ApprovalDecided {
        approval: Approval,
    },
    Usage {
        usage: Usage,
    },
    Custom {
        name: String,
        data: Value,
    },
    Error {
        error: RunError,
    },
}

impl EventBody {
    pub fn kind(&self) -> &'static str {
        match self {
            Self::StatusChanged { .. } => "status_changed",
            Self::MessageDelta { .. } => "message_delta",
            Self::MessageCompleted { .. } => "message_completed",
            Self::ToolCallStarted { .. } => "tool_call_started",
            Self::ToolCallCompleted { .. } => "tool_call_completed",
            Self::PlanProposed { .. } => "plan_proposed",
            Self::ApprovalDecided { .. } => "approval_decided",
            Self::Usage { .. } => "usage",
            Self::Custom { .. } => "custom",
            Self::Error { .. } => "error",
        }
    }

    /// Whether this is a status event into a terminal status (the last event of a run).
    pub fn is_terminal(&self) -> bool {
        matches!(self, Self::StatusChanged { status, .. } if status.is_terminal())
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunEvent {
    pub sequence: i64,
    pub attempt: i32,
    pub body: EventBody,
    pub create_time: UnixMicros,
}

/// What a worker holds: the run as leased. Fenced by (run, attempt, epoch).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Lease {
    pub workspace: String,
    pub project: String,
    pub session: String,
    pub run: String,
    pub attempt: i32,
    pub epoch: i64,
    /// The agent revision the run pins (immutable): worker calls that check tool names
    /// need no read of the run for it.
    #[serde(default)]
    pub agent: String,
    #[serde(default)]
    pub agent_revision: i64,
}
