//! Sessions, runs and run events: the domain of the ExecutionService. Core decides, the
//! store persists: every rule a run, its session, its tool calls and its approvals obey
//! lives here as a pure function of the loaded state, the command and the clock (the run
//! state machine of design §4 (docs/design.md), retry backoff, the autonomy matrix, the
//! multitask strategies, the tool-call machine, the reaper's timers). The store locks,
//! loads, lets a [`RunChange`] decide, persists its effects and commits.

mod approval;
mod change;
mod command;
mod lifecycle;
mod session;
mod timers;
mod toolcalls;
mod types;

use serde::{Deserialize, Serialize};

use crate::{model::ToolRisk, time::DurationMicros};

pub use change::*;
pub use command::*;
pub use lifecycle::*;
pub use session::*;
pub use timers::*;
pub use toolcalls::*;
pub use types::*;

/// `string_enum!(Name { Variant => "TEXT", … })`: an enum whose variants stand for
/// the given texts, with `ALL`, `as_str` and `parse`.
macro_rules! string_enum {
    ($(#[$meta:meta])* $name:ident { $($variant:ident => $text:literal),* $(,)? }) => {
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
        Queued => "QUEUED",
        Running => "RUNNING",
        RequiresAction => "REQUIRES_ACTION",
        Cancelling => "CANCELLING",
        Succeeded => "SUCCEEDED",
        Failed => "FAILED",
        Cancelled => "CANCELLED",
        TimedOut => "TIMED_OUT",
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
    Unspecified => "",
    EndTurn => "END_TURN",
    MaxSteps => "MAX_STEPS",
    MaxTokens => "MAX_TOKENS",
    Error => "ERROR",
    Cancelled => "CANCELLED",
    Timeout => "TIMEOUT",
    WorkerLost => "WORKER_LOST",
    Rejected => "REJECTED",
    Interrupted => "INTERRUPTED",
});

string_enum!(MultitaskStrategy {
    Reject => "REJECT",
    Enqueue => "ENQUEUE",
    Interrupt => "INTERRUPT",
    Rollback => "ROLLBACK",
});

string_enum!(MessageRole {
    User => "USER",
    Assistant => "ASSISTANT",
    System => "SYSTEM",
    Tool => "TOOL",
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
    pub initial_interval: DurationMicros,
    pub backoff_coefficient: f64,
    pub max_interval: DurationMicros,
    pub max_attempts: i32,
    pub non_retryable_error_types: Vec<String>,
}

impl RetryPolicy {
    pub const DEFAULT_INITIAL: DurationMicros = 1_000_000;
    pub const DEFAULT_COEFFICIENT: f64 = 2.0;
    pub const DEFAULT_MAX_ATTEMPTS: i32 = 3;

    /// The delay before attempt `failed + 1`, after attempt `failed` (1-based) failed.
    pub fn backoff(&self, failed: i32) -> DurationMicros {
        let exponent = (failed.max(1) - 1).min(1000);
        let delay = self.initial_interval as f64 * self.backoff_coefficient.powi(exponent);
        if !delay.is_finite() || delay >= self.max_interval as f64 {
            self.max_interval
        } else {
            delay as DurationMicros
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

#[cfg(test)]
mod tests;
