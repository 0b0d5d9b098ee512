//! Prometheus metrics and the HTTP probes, on `--metrics-listen`.
//!
//! Code records metrics through the `metrics` facade: one line where something happens,
//! and nothing at all (a no-op recorder) when no metrics address is configured. This
//! module installs the Prometheus recorder and serves, over plain HTTP/1.1:
//! - `/metrics`: the Prometheus text format;
//! - `/healthz`: liveness, 200 while the process serves HTTP;
//! - `/readyz`: readiness, 200 when the database answers and every migration is
//!   applied and the server is not shutting down, else 503 with the reason.
//!
//! Two gauges are read at scrape time rather than kept up to date: the database pool's
//! connections (free to read) and `agentry_runs{status}`, one `GROUP BY` over the runs
//! table, reused for [`RUNS_MAX_AGE`] so that frequent scrapes cost the database at most
//! one count per that period. The database is given [`PROBE_DB_WAIT`] to answer: during
//! an outage a scrape renders the last counts and `/readyz` says not ready, both at once,
//! rather than waiting out the pool's acquire timeout (longer than a scraper's or a
//! probe's own).

use std::{
    net::SocketAddr,
    sync::{Arc, OnceLock},
    time::{Duration, Instant},
};

use agentry_core::port::Storage;
use agentry_core::run::RunStatus;
use axum::{Router, extract::State, http::StatusCode, routing::get};
use metrics::Unit;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::{net::TcpListener, sync::watch, task::JoinHandle};

use crate::{
    config::ListenAddr,
    startup::{Context as _, StartError},
};

/// How long a count of runs by status is reused by scrapes.
pub const RUNS_MAX_AGE: Duration = Duration::from_secs(2);

/// How long a scrape or a readiness probe waits for the database.
pub const PROBE_DB_WAIT: Duration = Duration::from_secs(1);

/// Histogram buckets for the `_seconds` metrics: 0.5 ms to 60 s.
const SECONDS_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0,
];

/// Actions of the reaper, the values of `agentry_reaper_actions_total{action}` (see
/// `ReaperActions::counts`).
pub const REAPER_ACTIONS: &[&str] = &[
    "lease_requeued",
    "lease_failed",
    "lease_cancelled",
    "timed_out",
    "approval_expired",
    "backoff_woken",
    "instance_offline",
    "run_failed",
    "run_busy",
];

/// Values of `agentry_context_writes_total{op}`.
pub const CONTEXT_WRITE_OPS: &[&str] = &[
    "create",
    "replace",
    "merge_patch",
    "json_patch",
    "rollback",
    "noop",
];

/// Buckets of `agentry_context_write_batch_writes` (a batch carries at most 64).
const BATCH_WRITES_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0];

static RECORDER: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process's Prometheus recorder (once; later servers in the same process
/// share it) and registers every metric, so that all of them are listed from the first
/// scrape on.
pub fn install() -> Result<PrometheusHandle, StartError> {
    if let Some(handle) = RECORDER.get() {
        return Ok(handle.clone());
    }
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS_BUCKETS)
        .during(StartError::Metrics)?
        .set_buckets_for_metric(
            Matcher::Full("agentry_context_write_batch_writes".into()),
            BATCH_WRITES_BUCKETS,
        )
        .during(StartError::Metrics)?
        .install_recorder()
        .context(StartError::Metrics, || {
            "cannot install the metrics recorder".into()
        })?;
    describe();
    Ok(RECORDER.get_or_init(|| handle).clone())
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        "agentry_rpc_requests_total",
        "RPCs finished, by service, method and status code"
    );
    describe_histogram!(
        "agentry_rpc_duration_seconds",
        Unit::Seconds,
        "RPC duration (a stream: until it ended), by service and method"
    );
    describe_gauge!("agentry_runs", "runs by status, in every workspace");
    describe_histogram!(
        "agentry_run_pickup_seconds",
        Unit::Seconds,
        "time from a run becoming claimable to a worker leasing it"
    );
    describe_counter!(
        "agentry_leases_expired_total",
        "run leases that lapsed without a heartbeat"
    );
    describe_counter!(
        "agentry_reaper_actions_total",
        "what the reaper did, by action"
    );
    describe_gauge!("agentry_streams_open", "server streams open, by kind");
    describe_counter!(
        "agentry_context_writes_total",
        "context writes, by operation (noop: nothing changed)"
    );
    describe_histogram!(
        "agentry_context_write_batch_writes",
        "context writes per group-commit transaction (Postgres)"
    );
    describe_histogram!(
        "agentry_context_write_batch_seconds",
        Unit::Seconds,
        "a group commit's phases (Postgres): lock (through the locking read and every \
         write decided), store (the storing statement), commit (waiting for COMMIT)"
    );
    describe_gauge!(
        "agentry_db_pool_connections",
        "database pool connections, by state (active, idle, max)"
    );
    // Registered now, so that every series is listed before anything happens.
    let _ = metrics::histogram!("agentry_run_pickup_seconds");
    metrics::counter!("agentry_leases_expired_total").increment(0);
    for action in REAPER_ACTIONS {
        metrics::counter!("agentry_reaper_actions_total", "action" => *action).increment(0);
    }
    for op in CONTEXT_WRITE_OPS {
        metrics::counter!("agentry_context_writes_total", "op" => *op).increment(0);
    }
    let _ = metrics::histogram!("agentry_context_write_batch_writes");
    for phase in agentry_store::CONTEXT_BATCH_PHASES {
        let _ = metrics::histogram!("agentry_context_write_batch_seconds", "phase" => phase);
    }
}

/// A context write of `op` (one of [`CONTEXT_WRITE_OPS`]).
pub fn context_written(op: &'static str) {
    metrics::counter!("agentry_context_writes_total", "op" => op).increment(1);
}

/// Leases the reaper found lapsed.
pub fn leases_expired(count: u64) {
    if count > 0 {
        metrics::counter!("agentry_leases_expired_total").increment(count);
    }
}

/// The reaper did `action` to `count` items.
pub fn reaper_acted(action: &'static str, count: u64) {
    if count > 0 {
        metrics::counter!("agentry_reaper_actions_total", "action" => action).increment(count);
    }
}

#[derive(Clone)]
struct Probe {
    handle: PrometheusHandle,
    store: Arc<dyn Storage>,
    stopping: watch::Receiver<bool>,
    runs_counted: Arc<tokio::sync::Mutex<Option<Instant>>>,
}

impl Probe {
    async fn refresh_gauges(&self) {
        let pool = self.store.pool_connections();
        for (state, value) in [
            ("active", pool.active),
            ("idle", pool.idle),
            ("max", pool.max),
        ] {
            metrics::gauge!("agentry_db_pool_connections", "state" => state).set(value as f64);
        }
        let mut counted = self.runs_counted.lock().await;
        if counted.is_some_and(|at| at.elapsed() < RUNS_MAX_AGE) {
            return;
        }
        let counting = tokio::time::timeout(PROBE_DB_WAIT, self.store.count_runs_by_status());
        match counting.await {
            Ok(Ok(counts)) => {
                for status in RunStatus::ALL {
                    let count = counts
                        .iter()
                        .find(|(s, _)| s == status.as_str())
                        .map_or(0, |(_, n)| *n);
                    metrics::gauge!("agentry_runs", "status" => status.as_str()).set(count as f64);
                }
                *counted = Some(Instant::now());
            }
            Ok(Err(error)) => tracing::warn!(%error, "cannot count runs for the metrics"),
            Err(_) => tracing::warn!(
                wait = ?PROBE_DB_WAIT,
                "cannot count runs for the metrics: the database did not answer"
            ),
        }
    }
}

async fn scrape(State(probe): State<Probe>) -> String {
    probe.refresh_gauges().await;
    probe.handle.render()
}

async fn ready(State(probe): State<Probe>) -> (StatusCode, String) {
    if *probe.stopping.borrow() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting down\n".to_owned(),
        );
    }
    match tokio::time::timeout(PROBE_DB_WAIT, probe.store.readiness()).await {
        Ok(Ok(())) => (StatusCode::OK, "ready\n".to_owned()),
        Ok(Err(reason)) => (StatusCode::SERVICE_UNAVAILABLE, format!("{reason}\n")),
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the database did not answer within {PROBE_DB_WAIT:?}\n"),
        ),
    }
}

/// Binds `addr` and serves the metrics and probes until `stop`.
pub async fn serve(
    addr: &ListenAddr,
    handle: PrometheusHandle,
    store: Arc<dyn Storage>,
    stop: watch::Receiver<bool>,
) -> Result<(SocketAddr, JoinHandle<()>), StartError> {
    let listener = TcpListener::bind(addr.as_str())
        .await
        .context(StartError::Metrics, || {
            format!("cannot listen for metrics on {addr}")
        })?;
    let local = listener.local_addr().during(StartError::Metrics)?;
    let probe = Probe {
        handle: handle.clone(),
        store,
        stopping: stop.clone(),
        runs_counted: Default::default(),
    };
    let app = Router::new()
        .route("/metrics", get(scrape))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .with_state(probe);
    let task = tokio::spawn(async move {
        let mut upkeep_stop = stop.clone();
        let upkeep = async move {
            // Folds recorded histogram samples into their buckets between scrapes.
            let mut ticker = tokio::time::interval(Duration::from_secs(5));
            loop {
                tokio::select! {
                    _ = ticker.tick() => handle.run_upkeep(),
                    _ = upkeep_stop.wait_for(|s| *s) => return,
                }
            }
        };
        let mut stop = stop;
        let server = axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = stop.wait_for(|s| *s).await;
            })
            .into_future();
        let (served, ()) = tokio::join!(server, upkeep);
        if let Err(error) = served {
            tracing::warn!(%error, "metrics endpoint failed");
        }
    });
    Ok((local, task))
}
