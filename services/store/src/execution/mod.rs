//! Execution: sessions and their transcripts (`sessions`, `messages`), runs (`runs`),
//! the tool calls a run opened (`tool_calls`) and each run's append-only event log
//! (`run_events`).
//!
//! Every change to a run happens in one transaction that locks the session row (when the
//! transcript or the session's active run changes) and then the run row — always in that
//! order — applies the state machine of `agentry_core::run` in memory, appends the
//! events that describe it with the next gapless sequence numbers and writes the run
//! back; once it has committed, the wake keys of what it changed go to this replica's
//! waiters and, batched, to the other replicas (see `crate::feed`). A worker call is
//! fenced by the lease it names: the run must still be leased, to the same attempt and
//! lease epoch, with the lease not expired.
//!
//! A claim takes one of the workspace's concurrent-run slots (`run_slots`, one row per
//! slot) together with the run, both with SKIP LOCKED on Postgres, which keeps
//! `max_concurrent_runs` exact without serializing the claims of a workspace; a run
//! gives its slot back, by trigger, when it leaves RUNNING or CANCELLING (see `slots`).
//! On SQLite the single writer serializes claims.

mod change;
mod claim;
pub(crate) use claim::Backlogs;
mod reaper;
mod rollup;
mod rows;
mod runs;
mod sessions;
pub(crate) mod slots;
mod stats;
mod worker;

// The commands are core's; re-exported for the store's callers.
pub(crate) use agentry_core::run::RunSpec;
pub use agentry_core::run::{EventInput, NewRun, NewSession, RunFilter};

pub(crate) use crate::feed::Wakes;
