//! Execution: sessions and their transcripts (`sessions`, `messages`), runs (`runs`),
//! the tool calls a run opened (`tool_calls`) and each run's append-only event log
//! (`run_events`).
//!
//! Every change to a run happens in one transaction that locks the session row (when the
//! transcript or the session's active run changes) and then the run row — always in that
//! order — applies the state machine of `agentry_core::run` in memory, appends the
//! events that describe it with the next gapless sequence numbers, writes the run back
//! and NOTIFYs the wake keys of what it changed (see `crate::feed`). A worker call is
//! fenced by the lease it names: the run must still be leased, to the same attempt and
//! lease epoch, with the lease not expired.
//!
//! Claims serialize per workspace on the workspace row (FOR NO KEY UPDATE), which is
//! what keeps `max_concurrent_runs` exact, and pick the run with FOR UPDATE SKIP LOCKED;
//! on SQLite the single writer does both.

mod change;
mod claim;
mod reaper;
mod record;
mod rows;
mod runs;
mod sessions;
mod stats;
mod worker;

use std::sync::Arc;

use agentry_core::{
    model::Labels,
    run::{AutonomyLevel, ContextBinding, MessageBody, MultitaskStrategy, RetryPolicy},
    time::Micros,
};
use serde::{Deserialize, Serialize};

// The commands are core's; re-exported for the store's callers.
pub use agentry_core::run::{EventInput, NewRun, NewSession, RunFilter};

use crate::Store;
pub(crate) use crate::feed::Wakes;

impl Store {
    /// The in-process turnstile of `workspace`'s claims.
    pub(crate) fn claim_gate(&self, workspace: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut gates = self.claim_gates.lock().expect("claim gates lock");
        gates.entry(workspace.to_owned()).or_default().clone()
    }
}

/// What CreateRun fixes for the life of a run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct RunSpec {
    pub autonomy: AutonomyLevel,
    pub timeout: Micros,
    pub retry_policy: RetryPolicy,
    pub strategy: MultitaskStrategy,
    pub input: Vec<MessageBody>,
    pub contexts: Vec<ContextBinding>,
    pub labels: Labels,
    pub approval_timeout: Micros,
}
