//! Sessions, runs and run events: the domain of the ExecutionService, and the pure rules
//! the store applies (the run state machine of design §4 (docs/design.md), retry backoff, the autonomy
//! matrix). Event bodies are serde types: the store keeps them as JSON.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{
    model::{Labels, ToolRisk},
    time::Micros,
};

macro_rules! string_enum {
    ($(#[$meta:meta])* $name:ident { $($variant:ident = $text:literal),* $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        pub enum $name { $($variant),* }

        impl $name {
            pub const ALL: &'static [Self] = &[$(Self::$variant),*];

            pub fn as_str(self) -> &'static str {
                match self { $(Self::$variant => $text),* }
            }

            pub fn parse(text: &str) -> Option<Self> {
                match text { $($text => Some(Self::$variant),)* _ => None }
            }
        }
    };
}

string_enum!(
    /// QUEUED → RUNNING → SUCCEEDED | FAILED | CANCELLED | TIMED_OUT;
    /// RUNNING → REQUIRES_ACTION → QUEUED; RUNNING → CANCELLING → CANCELLED;
    /// RUNNING → QUEUED (retry).
    RunStatus {
        Queued = "QUEUED",
        Running = "RUNNING",
        RequiresAction = "REQUIRES_ACTION",
        Cancelling = "CANCELLING",
        Succeeded = "SUCCEEDED",
        Failed = "FAILED",
        Cancelled = "CANCELLED",
        TimedOut = "TIMED_OUT",
    }
);

impl RunStatus {
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            Self::Succeeded | Self::Failed | Self::Cancelled | Self::TimedOut
        )
    }

    /// Leased to a worker: holds one of the workspace's concurrent-run slots.
    pub fn is_leased(self) -> bool {
        matches!(self, Self::Running | Self::Cancelling)
    }

    /// The transitions of design §4 (docs/design.md). Every store update is guarded by this.
    pub fn can_become(self, to: Self) -> bool {
        use RunStatus::*;
        matches!(
            (self, to),
            (Queued, Running | Cancelled | TimedOut)
                | (
                    Running,
                    Succeeded
                        | Failed
                        | Cancelled
                        | TimedOut
                        | RequiresAction
                        | Cancelling
                        | Queued
                )
                | (RequiresAction, Queued | Cancelled | TimedOut)
                | (Cancelling, Cancelled | TimedOut)
        )
    }
}

string_enum!(StopReason {
    Unspecified = "",
    EndTurn = "END_TURN",
    MaxSteps = "MAX_STEPS",
    MaxTokens = "MAX_TOKENS",
    Error = "ERROR",
    Cancelled = "CANCELLED",
    Timeout = "TIMEOUT",
    WorkerLost = "WORKER_LOST",
    Rejected = "REJECTED",
    Interrupted = "INTERRUPTED",
});

string_enum!(MultitaskStrategy {
    Reject = "REJECT",
    Enqueue = "ENQUEUE",
    Interrupt = "INTERRUPT",
    Rollback = "ROLLBACK",
});

string_enum!(MessageRole {
    User = "USER",
    Assistant = "ASSISTANT",
    System = "SYSTEM",
    Tool = "TOOL",
});

/// L0 approves nothing by itself; L1 read-only tools; L2 read-only and write; L3 all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct AutonomyLevel(pub u8);

impl AutonomyLevel {
    /// Whether a step with this risk runs without a human.
    pub fn allows(self, risk: ToolRisk) -> bool {
        let needed = match risk {
            ToolRisk::ReadOnly => 1,
            ToolRisk::Write => 2,
            ToolRisk::Destructive => 3,
        };
        self.0 >= needed
    }
}

/// Retry policy with the defaults filled in; durations in microseconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RetryPolicy {
    pub initial_interval: Micros,
    pub backoff_coefficient: f64,
    pub max_interval: Micros,
    pub max_attempts: i32,
    pub non_retryable_error_types: Vec<String>,
}

impl RetryPolicy {
    pub const DEFAULT_INITIAL: Micros = 1_000_000;
    pub const DEFAULT_COEFFICIENT: f64 = 2.0;
    pub const DEFAULT_MAX_ATTEMPTS: i32 = 3;

    /// The delay before attempt `failed + 1`, after attempt `failed` (1-based) failed.
    pub fn backoff(&self, failed: i32) -> Micros {
        let exponent = (failed.max(1) - 1).min(1000);
        let delay = self.initial_interval as f64 * self.backoff_coefficient.powi(exponent);
        if !delay.is_finite() || delay >= self.max_interval as f64 {
            self.max_interval
        } else {
            delay as Micros
        }
    }

    /// Whether attempt `attempt` failing with `error_type` leaves room for another.
    pub fn retries(&self, attempt: i32, error_type: &str) -> bool {
        attempt < self.max_attempts
            && !self
                .non_retryable_error_types
                .iter()
                .any(|t| t == error_type)
    }
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            initial_interval: Self::DEFAULT_INITIAL,
            backoff_coefficient: Self::DEFAULT_COEFFICIENT,
            max_interval: 100 * Self::DEFAULT_INITIAL,
            max_attempts: Self::DEFAULT_MAX_ATTEMPTS,
            non_retryable_error_types: Vec::new(),
        }
    }
}

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
    pub create_time: Micros,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Session {
    pub workspace: String,
    pub project: String,
    pub id: String,
    pub instance: String,
    pub description: String,
    pub labels: Labels,
    /// Run id, or empty.
    pub active_run: String,
    pub message_count: i64,
    pub create_time: Micros,
    pub update_time: Micros,
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
    pub expire_time: Micros,
    #[serde(default)]
    pub decision: Option<Decision>,
    #[serde(default)]
    pub comment: String,
    /// API key name, `auto` or `expired`.
    #[serde(default)]
    pub decided_by: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContextBinding {
    /// Context id in the run's project.
    pub context: String,
    pub alias: String,
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
    pub autonomy: AutonomyLevel,
    /// 0: none.
    pub timeout: Micros,
    pub retry_policy: RetryPolicy,
    pub strategy: MultitaskStrategy,
    pub input: Vec<MessageBody>,
    pub output: Vec<MessageBody>,
    pub contexts: Vec<ContextBinding>,
    pub attempt: i32,
    pub error: Option<RunError>,
    pub usage: Usage,
    pub last_sequence: i64,
    pub cancel_requested: bool,
    pub approval: Option<Approval>,
    pub approval_timeout: Micros,
    pub next_attempt_time: Micros,
    pub labels: Labels,
    pub create_time: Micros,
    pub start_time: Option<Micros>,
    pub end_time: Option<Micros>,
    pub update_time: Micros,
    pub lease_epoch: i64,
    pub lease_expire_time: Option<Micros>,
    pub lease_duration: Micros,
    pub worker: String,
    /// The run owns its session: only such a run may be claimed.
    #[serde(default)]
    pub ready: bool,
    /// A ROLLBACK run discarded this one: its messages are superseded.
    #[serde(default)]
    pub supersede: bool,
}

impl Run {
    /// When the run times out, if it has a timeout.
    pub fn deadline(&self) -> Option<Micros> {
        (self.timeout > 0).then(|| self.create_time.saturating_add(self.timeout))
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
    pub create_time: Micros,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let p = RetryPolicy {
            initial_interval: 100,
            backoff_coefficient: 2.0,
            max_interval: 1000,
            max_attempts: 10,
            non_retryable_error_types: vec!["Fatal".into()],
        };
        assert_eq!(p.backoff(1), 100);
        assert_eq!(p.backoff(2), 200);
        assert_eq!(p.backoff(4), 800);
        assert_eq!(p.backoff(5), 1000);
        assert_eq!(p.backoff(i32::MAX), 1000);
        assert!(p.retries(9, "Transient"));
        assert!(!p.retries(10, "Transient"));
        assert!(!p.retries(1, "Fatal"));
    }

    #[test]
    fn autonomy_matrix() {
        use ToolRisk::*;
        let cases = [
            (0, [false, false, false]),
            (1, [true, false, false]),
            (2, [true, true, false]),
            (3, [true, true, true]),
        ];
        for (level, expected) in cases {
            let got = [ReadOnly, Write, Destructive].map(|r| AutonomyLevel(level).allows(r));
            assert_eq!(got, expected, "L{level}");
        }
    }

    #[test]
    fn state_machine() {
        use RunStatus::*;
        assert!(Queued.can_become(Running));
        assert!(Running.can_become(RequiresAction));
        assert!(RequiresAction.can_become(Queued));
        assert!(Cancelling.can_become(Cancelled));
        assert!(!Cancelling.can_become(Succeeded));
        for terminal in [Succeeded, Failed, Cancelled, TimedOut] {
            for to in RunStatus::ALL {
                assert!(!terminal.can_become(*to), "{terminal:?} → {to:?}");
            }
        }
        assert!(!Queued.can_become(Succeeded));
    }
}
