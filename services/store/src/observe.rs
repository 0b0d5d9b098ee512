//! What the server's metrics and readiness probe ask of the store, and the metric
//! lines store operations record (through the `metrics` facade, which does nothing
//! unless the server installed a recorder).

use std::time::Duration;

use agentry_core::{Result, port::PoolConnections, time::DurationMicros};
use sea_query::{Expr, Func, Query};

use crate::{Store, tables::Runs};

impl Store {
    /// Runs by status, over every workspace: one `GROUP BY` over the runs table.
    pub async fn count_runs_by_status(&self) -> Result<Vec<(String, i64)>> {
        let stmt = Query::select()
            .column(Runs::Status)
            .expr(Func::count(Expr::col(Runs::RunId)))
            .from(Runs::Table)
            .group_by_col(Runs::Status)
            .to_owned();
        self.db.fetch_all(&stmt).await
    }

    /// Ready to serve: the database answers and every migration this build knows is
    /// applied. The error says which is not the case.
    pub async fn readiness(&self) -> std::result::Result<(), String> {
        self.db.readiness().await
    }

    pub fn pool_connections(&self) -> PoolConnections {
        self.db.pool_connections()
    }
}

/// A run was leased `waited` micros after it became ready (`agentry_run_pickup_seconds`).
pub(crate) fn run_picked_up(waited: DurationMicros) {
    metrics::histogram!("agentry_run_pickup_seconds").record(waited.max(0) as f64 / 1e6);
}

/// The change feed's LISTEN connection was lost or went silent, and every waiter of the
/// replica was woken (`agentry_feed_reconnects_total`).
pub(crate) fn feed_reconnected() {
    metrics::counter!("agentry_feed_reconnects_total").increment(1);
}

/// Values of `agentry_context_write_batch_seconds{phase}`, in the order of the phases.
pub const CONTEXT_BATCH_PHASES: [&str; 3] = ["lock", "store", "commit"];

/// A group commit of context writes committed (Postgres): how many writes its
/// transaction carried (`agentry_context_write_batch_writes`) and how long each phase
/// took (`agentry_context_write_batch_seconds{phase}`): `lock` from BEGIN through the
/// locking read to every write decided, `store` the statement storing them (and
/// compaction, when due), `commit` waiting for the COMMIT's answer (the WAL flush).
pub(crate) fn context_batch_committed(
    writes: usize,
    lock: Duration,
    store: Duration,
    commit: Duration,
) {
    metrics::histogram!("agentry_context_write_batch_writes").record(writes as f64);
    for (&phase, took) in CONTEXT_BATCH_PHASES.iter().zip([lock, store, commit]) {
        metrics::histogram!("agentry_context_write_batch_seconds", "phase" => phase)
            .record(took.as_secs_f64());
    }
}
