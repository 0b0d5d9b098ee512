//! Claims that never reach their worker, and the reaper under bad rows, bounds and
//! competing transactions: an undelivered claim goes back to the queue on the same
//! attempt; a run the reaper cannot handle is skipped without stopping another
//! workspace's timers; a pass takes due runs oldest first, stops at its bounds, and on
//! Postgres passes over a run another transaction holds instead of waiting for it.

use std::time::{Duration, Instant};

use agentry_core::port::{
    ClaimAttempt, ClaimRequest, ClaimStore, InstanceStore, ProjectStore, RunStore, SessionStore,
    WorkerStore,
};
use agentry_core::{
    model::Quotas,
    names::{RunName, SessionName},
    run::{Lease, RetryPolicy, Run, RunStatus, StopReason},
};
use agentry_store::{Claim, NewSession, ReapLimits, ReapReport, RunReaper, Store};
use sqlx::{Connection, Executor};

use super::*;

const SECOND: i64 = 1_000_000;

/// Workspace `ws` with project `web`, agent `echo` and instance `echo-1`.
pub(super) async fn tenant(store: &Store, ws: &str) {
    workspace(store, ws, Quotas::default()).await;
    store
        .create_project(
            &mutation(ws, "CreateProject", "web", "", b""),
            new_project(ws, "web"),
        )
        .await
        .expect("project");
    agent(store, ws, "echo").await;
    store
        .create_instance(
            &mutation(ws, "CreateInstance", "echo-1", "", b""),
            new_instance(ws, "web", "echo-1", "echo"),
        )
        .await
        .expect("instance");
}

/// A new session of `ws` with one run (`timeout` micros, 0: none).
pub(super) async fn run_in(store: &Store, ws: &str, session: &str, timeout: i64) -> Run {
    let name = SessionName {
        workspace: ws.into(),
        project: "web".into(),
        session: session.into(),
    };
    store
        .create_session(
            &mutation(ws, "CreateSession", session, "", b""),
            NewSession {
                name: name.clone(),
                instance: "echo-1".into(),
                description: String::new(),
                labels: Default::default(),
            },
        )
        .await
        .expect("session");
    let retry = RetryPolicy {
        initial_interval: SECOND / 10,
        ..RetryPolicy::default()
    };
    let mut new = super::execution::new_run(&name, retry);
    new.spec.timeout = timeout;
    store
        .create_run(&mutation(ws, "CreateRun", "r", "", b""), new)
        .await
        .expect("run")
}

/// Claims a run of `ws`, trying for up to 5 s: a transaction that just failed (a stale
/// worker call) may hold the run's row until the driver has sent its rollback, and a
/// claim skips locked rows.
async fn claim_in(store: &Store, ws: &str, lease_micros: i64) -> Claim {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let claimed = store
            .claim_run(ClaimRequest {
                workspace: ws,
                agents: &["echo".to_owned()],
                worker: Some("w"),
                lease_duration: lease_micros,
                attempt: ClaimAttempt::TimedOut,
            })
            .await
            .expect("claim");
        match claimed {
            Some(claim) => return claim,
            None if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            None => panic!("no run to claim in {ws}"),
        }
    }
}

fn name_of(run: &Run) -> RunName {
    RunName {
        workspace: run.workspace.clone(),
        project: run.project.clone(),
        session: run.session.clone(),
        run: run.id.clone(),
    }
}

fn lease_of(run: &Run) -> Lease {
    run.lease()
}

/// The run once `done` holds of it, within 10 s.
async fn eventually(store: &Store, run: &Run, done: impl Fn(&Run) -> bool) -> Run {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now = store.get_run(&name_of(run)).await.expect("get run");
        if done(&now) {
            return now;
        }
        assert!(
            Instant::now() < deadline,
            "the run never got there: {:?} attempt {}",
            now.status,
            now.attempt
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Each event of the run as `STATUS` or its kind, in order.
async fn story(store: &Store, run: &Run) -> Vec<String> {
    store
        .run_events_after(&name_of(run), 0, 1000)
        .await
        .expect("events")
        .into_iter()
        .map(|e| match e.body {
            agentry_core::run::EventBody::StatusChanged { status, .. } => {
                status.as_str().to_owned()
            }
            other => other.kind().to_owned(),
        })
        .collect()
}

fn reaper(limits: ReapLimits) -> RunReaper {
    RunReaper::new(limits).since(0)
}

async fn pass(store: &Store, reaper: &mut RunReaper) -> ReapReport {
    store.reap_runs(reaper).await.expect("a reaper pass")
}

conformance!(
    an_undelivered_claim_goes_back_to_the_queue_on_the_same_attempt,
    |store, _db| {
        tenant(&store, "acme").await;
        let created = run_in(&store, "acme", "s", 0).await;
        let claim = claim_in(&store, "acme", 30 * SECOND).await;
        let leased = claim.run.clone();
        assert_eq!((leased.status, leased.attempt), (RunStatus::Running, 1));
        drop(claim); // the answer never reached a worker
        let back = eventually(&store, &created, |r| r.status == RunStatus::Queued).await;
        assert_eq!(back.attempt, 1, "no attempt is charged");
        assert_eq!(back.start_time, None, "it never started");
        assert_eq!(back.next_attempt_time, created.next_attempt_time);
        assert_eq!(back.lease_expire_time, None);
        assert_eq!(back.stop_reason, StopReason::Unspecified);
        assert_eq!(story(&store, &back).await, ["QUEUED", "RUNNING", "QUEUED"]);
        // The token the dropped claim would have carried is dead.
        let refused = store.heartbeat_task(&lease_of(&leased), 0).await;
        assert_eq!(refused.unwrap_err().reason(), "STALE_TASK");
        // The next poller gets it at once, still on attempt 1, and keeps it.
        let (again, instance) = claim_in(&store, "acme", 30 * SECOND).await.delivered();
        assert_eq!((again.id.as_str(), again.attempt), (created.id.as_str(), 1));
        assert_eq!(instance.id, "echo-1");
        tokio::time::sleep(Duration::from_millis(300)).await;
        let kept = store.get_run(&name_of(&again)).await.expect("get run");
        assert_eq!(
            (kept.status, kept.lease_epoch),
            (RunStatus::Running, again.lease_epoch)
        );
        store
            .heartbeat_task(&lease_of(&again), 0)
            .await
            .expect("a delivered claim keeps its lease");
    }
);

conformance!(
    a_run_cancelled_before_its_claim_was_delivered_ends_cancelled,
    |store, _db| {
        tenant(&store, "acme").await;
        let created = run_in(&store, "acme", "s", 0).await;
        let claim = claim_in(&store, "acme", 30 * SECOND).await;
        let cancelling = store
            .cancel_run(
                &mutation("acme", "CancelRun", "r", "", b""),
                &name_of(&created),
                "changed my mind",
            )
            .await
            .expect("cancel");
        assert_eq!(cancelling.status, RunStatus::Cancelling);
        drop(claim);
        let done = eventually(&store, &created, |r| r.status.is_terminal()).await;
        assert_eq!((done.status, done.attempt), (RunStatus::Cancelled, 1));
        let session = store
            .get_session(&name_of(&created).session())
            .await
            .expect("session");
        assert_eq!(session.active_run, None, "the session is free again");
    }
);

conformance!(
    a_run_the_reaper_cannot_handle_does_not_stop_another_workspaces_timers,
    |store, db| {
        tenant(&store, "bad").await;
        tenant(&store, "good").await;
        // The bad run is due first on both timers it has: a lapsed lease and a timeout.
        let bad = run_in(&store, "bad", "s", 400_000).await;
        claim_in(&store, "bad", 100_000).await.delivered();
        let lost = run_in(&store, "good", "lost", 0).await;
        claim_in(&store, "good", 200_000).await.delivered();
        let slow = run_in(&store, "good", "slow", 500_000).await;
        let corrupt = format!(
            "UPDATE runs SET spec = 'not json' WHERE workspace_id = 'bad' AND run_id = '{}'",
            bad.id
        );
        assert_eq!(db.execute(&corrupt).await.expect("corrupt the row"), 1);
        tokio::time::sleep(Duration::from_millis(700)).await;

        let mut reaper = reaper(ReapLimits::default());
        let report = pass(&store, &mut reaper).await;
        // Tried once: after its lease failed, its timeout waits with it.
        assert_eq!(report.failed, 1, "the bad run: {report:?}");
        assert_eq!(report.leases_requeued, 1, "{report:?}");
        assert_eq!(report.timed_out, 1, "{report:?}");
        assert!(!report.truncated);
        let requeued = store.get_run(&name_of(&lost)).await.expect("lost run");
        assert_eq!((requeued.status, requeued.attempt), (RunStatus::Queued, 2));
        let timed_out = store.get_run(&name_of(&slow)).await.expect("slow run");
        assert_eq!(
            (timed_out.status, timed_out.stop_reason),
            (RunStatus::TimedOut, StopReason::Timeout)
        );
        // The bad run waits before it is tried again; nothing else is due.
        let next = pass(&store, &mut reaper).await;
        assert_eq!(next.failed, 0, "{next:?}");
        assert_eq!(next.changed(), 0, "{next:?}");
        // The requeued run's backoff ends: its workspace's pollers are woken, once.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let woken = pass(&store, &mut reaper).await;
        assert_eq!(next.backoffs_woken + woken.backoffs_woken, 1, "{woken:?}");
    }
);

conformance!(
    a_pass_takes_due_runs_oldest_first_and_stops_at_its_bounds,
    |store, _db| {
        tenant(&store, "acme").await;
        let mut runs = Vec::new();
        for i in 0..5 {
            let run = run_in(&store, "acme", &format!("s{i}"), 0).await;
            // Leases lapse in creation order.
            claim_in(&store, "acme", 100_000 + i * 20_000)
                .await
                .delivered();
            runs.push(run);
        }
        tokio::time::sleep(Duration::from_millis(400)).await;
        let mut reaper = reaper(ReapLimits {
            max_runs: 2,
            page: 1,
            ..ReapLimits::default()
        });
        let mut handled = Vec::new();
        for expected in [2, 2, 1] {
            let report = pass(&store, &mut reaper).await;
            assert_eq!(report.leases_requeued, expected, "{report:?}");
            assert_eq!(report.truncated, expected == 2, "{report:?}");
            for run in &runs {
                let now = store.get_run(&name_of(run)).await.expect("get run");
                if now.status == RunStatus::Queued && !handled.contains(&run.id) {
                    handled.push(run.id.clone());
                }
            }
        }
        let created: Vec<String> = runs.iter().map(|r| r.id.clone()).collect();
        assert_eq!(handled, created, "oldest lapsed lease first");
    }
);

/// Postgres only: SQLite has one writer and no row locks to skip.
#[tokio::test]
async fn a_pass_leaves_a_run_another_transaction_holds_to_the_next_pass() {
    let (db, store) = open(Backend::Postgres).await;
    tenant(&store, "acme").await;
    let run = run_in(&store, "acme", "s", 0).await;
    claim_in(&store, "acme", 100_000).await.delivered();
    tokio::time::sleep(Duration::from_millis(200)).await;

    // Another replica's reaper (or a worker call) holds the session row.
    let mut other = sqlx::PgConnection::connect(&db.url).await.expect("connect");
    other.execute("BEGIN").await.expect("begin");
    other
        .execute(
            "SELECT 1 FROM sessions WHERE workspace_id = 'acme' AND session_id = 's' FOR UPDATE",
        )
        .await
        .expect("lock the session");
    let mut reaper = reaper(ReapLimits::default());
    let started = Instant::now();
    let report = pass(&store, &mut reaper).await;
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "the pass waited for the lock: {:?}",
        started.elapsed()
    );
    assert_eq!((report.busy, report.changed()), (1, 0), "{report:?}");
    let held = store.get_run(&name_of(&run)).await.expect("get run");
    assert_eq!(held.status, RunStatus::Running);

    other.execute("COMMIT").await.expect("commit");
    let report = pass(&store, &mut reaper).await;
    assert_eq!((report.busy, report.leases_requeued), (0, 1), "{report:?}");
    let _ = other.close().await;
    db.drop_database().await;
}
