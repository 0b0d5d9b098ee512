//! Execution: sessions and their transcripts (`sessions`, `messages`), runs (`runs`),
//! the tool calls a run opened (`tool_calls`) and each run's append-only event log
//! (`run_events`).
//!
//! Every change to a run happens in one transaction that locks the session row (when the
//! transcript or the session's active run changes) and then the run row — always in that
//! order — applies the state machine of `agentry_core::run` in memory, appends the
//! events that describe it with the next gapless sequence numbers, writes the run back
//! and NOTIFYs. A worker call is fenced by the lease it names: the run must still be
//! leased, to the same attempt and lease epoch, with the lease not expired.
//!
//! Claims serialize per workspace on the workspace row (FOR NO KEY UPDATE), which is
//! what keeps `max_concurrent_runs` exact, and pick the run with FOR UPDATE SKIP LOCKED;
//! on SQLite the single writer does both.

mod change;
mod claim;
mod reaper;
mod rows;
mod runs;
mod sessions;
mod stats;
mod worker;

use std::sync::Arc;

use agentry_core::{
    Error, Result,
    model::Labels,
    run::{
        AutonomyLevel, ContextBinding, MessageBody, MultitaskStrategy, RetryPolicy, Run, RunError,
        RunStatus,
    },
    time::Micros,
};
use sea_query::{Alias, Expr, Func, Query};
use serde::{Deserialize, Serialize};

pub use claim::Claim;
pub use reaper::{ReapLimits, ReapReport, RunReaper};
pub use runs::{NewRun, RunFilter};
pub use sessions::NewSession;
pub use stats::{Percentiles, RunStatsGroup};
pub use worker::EventInput;

use crate::{
    Store,
    db::{Backend, Tx},
    tables::Runs,
};

/// The Postgres NOTIFY channel of execution wake-ups: [`run_key`] and [`queue_key`].
pub const RUN_CHANNEL: &str = "agentry_run";

/// Wake-up key of one run (its events, its cancel flag).
pub fn run_key(workspace: &str, run: &str) -> String {
    format!("run:{workspace}:{run}")
}

/// Wake-up key of a workspace's queue (a run may have become claimable).
pub fn queue_key(workspace: &str) -> String {
    format!("queue:{workspace}")
}

/// Called with each wake-up key after the transaction that caused it committed.
pub type Waker = Arc<dyn Fn(&str) + Send + Sync>;

/// Wake-up keys collected by a transaction.
#[derive(Default)]
pub(crate) struct Wakes(Vec<String>);

impl Wakes {
    pub(crate) fn run(&mut self, run: &Run) {
        self.push(run_key(&run.workspace, &run.id));
    }

    pub(crate) fn queue(&mut self, workspace: &str) {
        self.push(queue_key(workspace));
    }

    fn push(&mut self, key: String) {
        if !self.0.contains(&key) {
            self.0.push(key);
        }
    }

    /// NOTIFYs other replicas inside the transaction (delivered only if it commits). The
    /// payload is `{replica} {key}`: a replica skips its own, which it already woke.
    pub(crate) async fn notify(&self, tx: &mut Tx, replica: &str) -> Result<()> {
        if tx.backend() != Backend::Postgres || self.0.is_empty() {
            return Ok(());
        }
        let mut select = Query::select();
        for key in &self.0 {
            select.expr(
                Func::cust(Alias::new("pg_notify"))
                    .arg(RUN_CHANNEL)
                    .arg(format!("{replica} {key}")),
            );
        }
        tx.execute(&select).await?;
        Ok(())
    }
}

/// For a delete of a workspace or a project: NOTIFYs the watchers of every context and
/// unfinished run it takes with it (see [`notify_runs_under`] and
/// `contexts::notify_contexts_under`); returns the keys to wake in this process.
pub(crate) async fn notify_deleted_under(
    tx: &mut Tx,
    replica: &str,
    workspace: &str,
    project: Option<&str>,
) -> Result<Vec<String>> {
    let mut keys = crate::contexts::notify_contexts_under(tx, workspace, project).await?;
    keys.extend(notify_runs_under(tx, replica, workspace, project).await?);
    Ok(keys)
}

/// For a delete that takes every run of `workspace` (or of one project in it) with it:
/// NOTIFYs the watchers of the unfinished ones inside the deleting transaction (Postgres;
/// finished runs' streams have ended already) and returns their keys, for the caller to
/// wake this process's watchers once it commits. Their streams then end NOT_FOUND.
async fn notify_runs_under(
    tx: &mut Tx,
    replica: &str,
    workspace: &str,
    project: Option<&str>,
) -> Result<Vec<String>> {
    let mut select = Query::select()
        .columns([Runs::WorkspaceId, Runs::RunId])
        .from(Runs::Table)
        .and_where(Expr::col(Runs::WorkspaceId).eq(workspace))
        .and_where(
            Expr::col(Runs::Status).is_not_in(
                RunStatus::ALL
                    .iter()
                    .filter(|s| s.is_terminal())
                    .map(|s| s.as_str()),
            ),
        )
        .to_owned();
    if let Some(project) = project {
        select.and_where(Expr::col(Runs::ProjectId).eq(project));
    }
    let found: Vec<(String, String)> = tx.fetch_all(&select).await?;
    if found.is_empty() {
        return Ok(Vec::new());
    }
    if tx.backend() == Backend::Postgres {
        use sea_query::extension::postgres::PgExpr;
        // One statement, however many runs there are; the payload as `Wakes` sends it.
        let payload = Expr::val(format!("{replica} run:"))
            .concat(Expr::col(Runs::WorkspaceId))
            .concat(Expr::val(":"))
            .concat(Expr::col(Runs::RunId));
        let notify = select
            .clear_selects()
            .expr(
                Func::cust(Alias::new("pg_notify"))
                    .arg(RUN_CHANNEL)
                    .arg(payload),
            )
            .to_owned();
        tx.execute(&notify).await?;
    }
    Ok(found.iter().map(|(w, r)| run_key(w, r)).collect())
}

impl Store {
    /// Installs the in-process wake-up callback.
    pub fn with_waker(mut self, waker: Waker) -> Self {
        self.waker = Some(waker);
        self
    }

    /// The in-process turnstile of `workspace`'s claims.
    pub(crate) fn claim_gate(&self, workspace: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut gates = self.claim_gates.lock().expect("claim gates lock");
        gates.entry(workspace.to_owned()).or_default().clone()
    }

    pub(crate) fn wake(&self, wakes: &Wakes) {
        self.wake_keys(&wakes.0);
    }

    /// Wakes this process's waiters on `keys` (run, queue or context keys).
    pub(crate) fn wake_keys(&self, keys: &[String]) {
        if let Some(waker) = &self.waker {
            for key in keys {
                waker(key);
            }
        }
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

pub(crate) fn stale(message: impl Into<String>) -> Error {
    Error::precondition("STALE_TASK", message)
}

/// A run error with the defaults of a lost worker.
pub(crate) fn worker_lost() -> RunError {
    RunError {
        error_type: "WorkerLost".into(),
        message: "the worker's lease lapsed without a heartbeat".into(),
        details: None,
    }
}
