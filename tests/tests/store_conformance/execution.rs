//! Execution on the storage layer: the run log's trigger, claims under concurrency and
//! the workspace's concurrent-run quota, fencing against stale leases, the reaper's
//! guards, and gapless sequences under concurrent writers.

use std::{collections::BTreeSet, sync::Arc, time::Duration};

use agentry_core::port::{
    ClaimAttempt, ClaimRequest, ClaimStore, InstanceStore, ProjectStore, RunStore, SessionStore,
    WorkerStore,
};
use agentry_core::{
    Error,
    model::{Instance, Quotas},
    names::{InstanceName, ProjectName, RunName, SessionName},
    run::{
        AutonomyLevel, EventBody, Lease, MessageBody, MessageRole, MultitaskStrategy, RetryPolicy,
        Run, RunSpec, RunStatus, StopReason, TaskCompletion, TaskFailure, ToolCall, Usage,
    },
};
use agentry_store::{
    EventInput, NewRun, NewSession, PageRequest, ReapLimits, ReapReport, RunReaper, Store,
};
use tokio::sync::Barrier;

use super::*;

const SECOND: i64 = 1_000_000;

/// A workspace `acme` with project `web`, agent `echo` and instance `echo-1`.
async fn setup(store: &Store, quotas: Quotas) {
    workspace(store, "acme", quotas).await;
    store
        .create_project(
            &mutation("acme", "CreateProject", "web", "", b""),
            new_project("acme", "web"),
        )
        .await
        .expect("project");
    agent(store, "acme", "echo").await;
    store
        .create_instance(
            &mutation("acme", "CreateInstance", "echo-1", "", b""),
            new_instance("acme", "web", "echo-1", "echo"),
        )
        .await
        .expect("instance");
}

fn session_name(id: &str) -> SessionName {
    SessionName {
        workspace: "acme".into(),
        project: "web".into(),
        session: id.into(),
    }
}

async fn session(store: &Store, id: &str) -> SessionName {
    let name = session_name(id);
    store
        .create_session(
            &mutation("acme", "CreateSession", id, "", b""),
            NewSession {
                name: name.clone(),
                instance: "echo-1".into(),
                description: String::new(),
                labels: Default::default(),
            },
        )
        .await
        .expect("session");
    name
}

pub(super) fn new_run(session: &SessionName, retry: RetryPolicy) -> NewRun {
    let spec = RunSpec {
        autonomy: AutonomyLevel(0),
        timeout: 0,
        retry_policy: retry,
        strategy: MultitaskStrategy::Enqueue,
        input: vec![MessageBody {
            role: MessageRole::User,
            content: "hi".into(),
            tool_call: None,
        }],
        contexts: vec![],
        labels: Default::default(),
        approval_timeout: 3600 * SECOND,
    };
    NewRun {
        session: session.clone(),
        spec,
    }
}

async fn run(store: &Store, session: &SessionName) -> Run {
    store
        .create_run(
            &mutation("acme", "CreateRun", "r", "", b""),
            new_run(session, RetryPolicy::default()),
        )
        .await
        .expect("run")
}

fn lease(run: &Run) -> Lease {
    run.lease()
}

fn name(run: &Run) -> RunName {
    RunName {
        workspace: run.workspace.clone(),
        project: run.project.clone(),
        session: run.session.clone(),
        run: run.id.clone(),
    }
}

fn quiet(method: &'static str) -> Mutation {
    let mut m = mutation("acme", method, "r", "", b"");
    m.audit = false;
    m
}

/// One reaper pass with a fresh reaper.
pub(super) async fn reap(store: &Store) -> ReapReport {
    let mut reaper = RunReaper::new(ReapLimits::default()).since(0);
    store.reap_runs(&mut reaper).await.expect("reap")
}

/// A completion with no output, ending the turn.
fn ended() -> TaskCompletion {
    TaskCompletion {
        events: vec![],
        output: vec![],
        usage: Usage::default(),
        stop_reason: StopReason::EndTurn,
    }
}

/// Completes the leased run, ending the turn; the run as completed.
async fn complete(store: &Store, leased: &Run) -> Run {
    store
        .complete_task(&quiet("CompleteTask"), &lease(leased), ended())
        .await
        .expect("complete")
}

/// A tool call `id` of `tool`, without arguments or result.
fn call(id: &str, tool: &str) -> ToolCall {
    ToolCall {
        id: id.into(),
        tool: tool.into(),
        ..ToolCall::default()
    }
}

/// A failure with the default error, retryable or not, with the policy's backoff.
fn failure(retryable: bool) -> TaskFailure {
    TaskFailure {
        error: Default::default(),
        retryable,
        next_retry_delay: None,
    }
}

async fn claim(store: &Store, lease_micros: i64) -> Option<Run> {
    claim_with_instance(store, lease_micros)
        .await
        .map(|(run, _)| run)
}

/// A claim of an `echo` run, delivered: the run and the instance the task carries.
async fn claim_with_instance(store: &Store, lease_micros: i64) -> Option<(Run, Instance)> {
    store
        .claim_run(ClaimRequest {
            workspace: "acme",
            agents: &["echo".to_owned()],
            worker: Some("w"),
            lease_duration: lease_micros,
            attempt: ClaimAttempt::First,
        })
        .await
        .expect("claim")
        .map(|claim| claim.delivered())
}

fn delta(text: &str) -> EventInput {
    EventInput::Delta {
        message_id: "m".into(),
        text: text.into(),
    }
}

fn assert_stale(result: Result<impl std::fmt::Debug, Error>) {
    match result {
        Err(e) => assert_eq!(e.reason(), "STALE_TASK", "{e:?}"),
        Ok(v) => panic!("a stale lease was accepted: {v:?}"),
    }
}

async fn sequences(store: &Store, run: &Run) -> Vec<i64> {
    store
        .run_events_after(&name(run), 0, 10_000)
        .await
        .expect("events")
        .iter()
        .map(|e| e.sequence)
        .collect()
}

conformance!(
    claims_and_new_runs_read_the_instance_as_stored,
    |store, db| {
        // On Postgres the session's lock and the claim's TAKE read the instance in the
        // same statement, as JSON: every column must decode as a read by name does.
        setup(&store, Quotas::default()).await;
        db.execute(
            "UPDATE instances SET display_name = 'Echo', labels = '{\"team\":\"a b\"}', \
             config = '{\"t\":0.5,\"n\":[1,null]}', status_message = 'ok \"quoted\"', \
             last_heartbeat_time = 1700000000000001, status_before_offline = 'IDLE'",
        )
        .await
        .expect("give the instance values in every column");
        let instance_name = InstanceName {
            workspace: "acme".into(),
            project: "web".into(),
            instance: "echo-1".into(),
        };
        let stored = store.get_instance(&instance_name).await.expect("instance");
        let s = session(&store, "s").await;
        let created = run(&store, &s).await;
        assert_eq!(created.agent_revision, stored.agent_revision);
        let (claimed, instance) = claim_with_instance(&store, 30 * SECOND)
            .await
            .expect("a run to claim");
        assert_eq!(claimed.id, created.id);
        assert_eq!(instance, stored, "the task's instance");
        // A terminated instance takes no new runs, whichever way it was read.
        db.execute("UPDATE instances SET status = 'TERMINATED'")
            .await
            .expect("terminate");
        let refused = store
            .create_run(
                &mutation("acme", "CreateRun", "r2", "", b""),
                new_run(&s, RetryPolicy::default()),
            )
            .await
            .expect_err("a run on a terminated instance");
        assert_eq!(refused.reason(), "INSTANCE_TERMINATED", "{refused:?}");
    }
);

conformance!(
    an_ending_closes_the_open_calls_in_order_and_hands_the_session_on,
    |store, _db| {
        // On Postgres an ending reads the open tool calls and whether a run waits in the
        // session in one statement; the hand-off look runs only when one does.
        setup(&store, Quotas::default()).await;
        let s = session(&store, "s").await;
        let first = run(&store, &s).await;
        let second = run(&store, &s).await;
        assert!(
            first.ready && !second.ready,
            "the second run waits behind the first"
        );
        let leased = claim(&store, 30 * SECOND).await.expect("the first run");
        assert_eq!(leased.id, first.id);
        store
            .append_run_events(
                &quiet("AppendRunEvents"),
                &lease(&leased),
                vec![
                    EventInput::ToolStarted(call("c2", "write")),
                    EventInput::ToolStarted(call("c1", "search")),
                    EventInput::ToolStarted(call("c3", "read")),
                    EventInput::ToolCompleted(call("c3", "read")),
                ],
            )
            .await
            .expect("three calls started, one completed");
        complete(&store, &leased).await;
        let closed: Vec<String> = store
            .run_events_after(&name(&first), 0, 100)
            .await
            .expect("events")
            .into_iter()
            .filter_map(|e| match e.body {
                EventBody::ToolCallCompleted { call, synthetic } => {
                    Some(format!("{} {} {synthetic}", call.id, call.tool))
                }
                _ => None,
            })
            .collect();
        assert_eq!(
            closed,
            ["c3 read false", "c1 search true", "c2 write true"],
            "the open calls close in call id order"
        );
        let session_name = session_name("s");
        let handed = store.get_session(&session_name).await.expect("session");
        assert_eq!(handed.active_run.as_deref(), Some(second.id.as_str()));
        let next = claim(&store, 30 * SECOND)
            .await
            .expect("the second run, handed on");
        assert_eq!(next.id, second.id);
        complete(&store, &next).await;
        let idle = store.get_session(&session_name).await.expect("session");
        assert_eq!(idle.active_run, None, "nothing waits: the session is free");
        let third = run(&store, &s).await;
        assert!(third.ready, "a run in a free session is ready at once");
    }
);

/// The runs and transcript messages of session `s`.
async fn session_rows(db: &agentry_e2e::FreshDatabase, s: &SessionName) -> (i64, i64) {
    let of = |table: &str| format!("{table} WHERE session_id = '{}'", s.session);
    (db.count(&of("runs")).await, db.count(&of("messages")).await)
}

conformance!(
    a_deleted_session_takes_its_runs_transcript_and_calls_and_nothing_else,
    |store, db| {
        // On Postgres runs and messages reach their session by a delete trigger, not a
        // foreign key (migration 0015); on SQLite by foreign key. Either way a deleted
        // session takes all of its rows and none of another session's.
        setup(&store, Quotas::default()).await;
        let (gone, kept) = (session(&store, "gone").await, session(&store, "kept").await);
        for s in [&gone, &kept] {
            run(&store, s).await;
            let leased = claim(&store, 30 * SECOND).await.expect("a run to claim");
            let call = call("c1", "search");
            store
                .append_run_events(
                    &quiet("AppendRunEvents"),
                    &lease(&leased),
                    vec![EventInput::ToolStarted(call)],
                )
                .await
                .expect("a call started");
            complete(&store, &leased).await;
        }
        let (kept_runs, kept_messages) = session_rows(&db, &kept).await;
        assert_eq!(session_rows(&db, &gone).await, (kept_runs, kept_messages));
        assert!(
            kept_runs == 1 && kept_messages >= 2,
            "a run with its transcript"
        );
        let calls = db.count("tool_calls").await;
        let events = db.count("run_events").await;
        store
            .delete_session(&mutation("acme", "DeleteSession", "gone", "", b""), &gone)
            .await
            .expect("an idle session is deleted");
        assert_eq!(
            session_rows(&db, &gone).await,
            (0, 0),
            "the session's runs and transcript"
        );
        assert_eq!(
            session_rows(&db, &kept).await,
            (kept_runs, kept_messages),
            "the other session's"
        );
        assert_eq!(
            db.count("tool_calls").await,
            calls / 2,
            "the deleted run's calls"
        );
        assert_eq!(
            db.count("run_events").await,
            events / 2,
            "the deleted run's events"
        );
        // A second run in the kept session is still created, claimed and finished.
        run(&store, &kept).await;
        let leased = claim(&store, 30 * SECOND).await.expect("a run to claim");
        complete(&store, &leased).await;
    }
);

conformance!(
    run_events_are_append_only_and_go_with_their_session,
    |store, db| {
        setup(&store, Quotas::default()).await;
        let s = session(&store, "s").await;
        let r = run(&store, &s).await;
        let leased = claim(&store, 30 * SECOND).await.expect("a run to claim");
        store
            .append_run_events(&quiet("AppendRunEvents"), &lease(&leased), vec![delta("x")])
            .await
            .expect("append");
        for sql in [
            "UPDATE run_events SET body = '{}'",
            "DELETE FROM run_events",
        ] {
            assert!(db.execute(sql).await.is_err(), "{sql} was allowed");
        }
        assert_eq!(db.count("run_events").await, 3);
        complete(&store, &leased).await;
        store
            .delete_session(&mutation("acme", "DeleteSession", "s", "", b""), &s)
            .await
            .expect("an idle session is deleted with its runs and their logs");
        assert_eq!(db.count("run_events").await, 0);
        assert_eq!(db.count("runs").await, 0);
        assert!(matches!(
            store.get_run(&name(&r)).await,
            Err(Error::NotFound { .. })
        ));
    }
);

conformance!(
    concurrent_claims_lease_each_run_once_within_the_quota,
    |store, _db| {
        let quotas = Quotas {
            max_concurrent_runs: 5,
            ..Quotas::default()
        };
        setup(&store, quotas).await;
        for i in 0..12 {
            let s = session(&store, &format!("s{i}")).await;
            run(&store, &s).await;
        }
        let store = Arc::new(store);
        let barrier = Arc::new(Barrier::new(8));
        let mut tasks = Vec::new();
        for t in 0..8 {
            let (store, barrier) = (store.clone(), barrier.clone());
            tasks.push(tokio::spawn(async move {
                barrier.wait().await;
                let mut got = Vec::new();
                for _ in 0..3 {
                    loop {
                        match store
                            .claim_run(ClaimRequest {
                                workspace: "acme",
                                agents: &["echo".to_owned()],
                                worker: Some("w"),
                                lease_duration: 30 * SECOND,
                                // Claims of every kind, side by side.
                                attempt: [
                                    ClaimAttempt::First,
                                    ClaimAttempt::Woken,
                                    ClaimAttempt::TimedOut,
                                ][t % 3],
                            })
                            .await
                        {
                            Ok(Some(claim)) => {
                                got.push(claim.delivered().0.id);
                                break;
                            }
                            Ok(None) => break,
                            // SQLite's single writer may be busy; try again.
                            Err(Error::Unavailable { .. }) => continue,
                            Err(e) => panic!("claim: {e:?}"),
                        }
                    }
                }
                got
            }));
        }
        let mut claimed = Vec::new();
        for task in tasks {
            claimed.extend(task.await.expect("claimer"));
        }
        let distinct: BTreeSet<_> = claimed.iter().collect();
        assert_eq!(
            distinct.len(),
            claimed.len(),
            "a run was leased twice: {claimed:?}"
        );
        assert_eq!(claimed.len(), 5, "exactly max_concurrent_runs are leased");
        let page = PageRequest {
            size: 100,
            after: None,
        };
        let project = ProjectName {
            workspace: "acme".into(),
            project: "web".into(),
        };
        let runs = store
            .list_runs(&project, &Default::default(), &page)
            .await
            .expect("list")
            .items;
        let running = runs
            .iter()
            .filter(|r| r.status == RunStatus::Running)
            .count();
        assert_eq!(running, 5);
        assert!(
            runs.iter()
                .all(|r| r.last_sequence == if r.status == RunStatus::Running { 2 } else { 1 })
        );
    }
);

conformance!(
    a_lapsed_lease_is_fenced_and_the_reaper_retries_it,
    |store, _db| {
        setup(&store, Quotas::default()).await;
        let s = session(&store, "s").await;
        let r = run(&store, &s).await;
        let first = claim(&store, 200_000).await.expect("claimed");
        assert_eq!(first.attempt, 1);
        tokio::time::sleep(Duration::from_millis(300)).await;
        // The lease lapsed: the worker is refused even before the reaper runs.
        assert_stale(store.heartbeat_task(&lease(&first), 0).await);
        assert_stale(
            store
                .append_run_events(
                    &quiet("AppendRunEvents"),
                    &lease(&first),
                    vec![delta("late")],
                )
                .await,
        );
        assert_eq!(reap(&store).await.changed(), 1);
        let requeued = store.get_run(&name(&r)).await.expect("run");
        assert_eq!(requeued.status, RunStatus::Queued);
        assert_eq!(requeued.attempt, 2);
        assert!(requeued.next_attempt_time > first.start_time.unwrap());
        // A second pass finds nothing to do: the guard re-checks under the lock.
        assert_eq!(reap(&store).await.changed(), 0);
        assert_eq!(sequences(&store, &r).await, [1, 2, 3]);
    }
);

conformance!(the_reaper_never_touches_a_finished_run, |store, _db| {
    setup(&store, Quotas::default()).await;
    let s = session(&store, "s").await;
    let r = run(&store, &s).await;
    let leased = claim(&store, 250_000).await.expect("claimed");
    let done = complete(&store, &leased).await;
    assert_eq!(done.status, RunStatus::Succeeded);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(reap(&store).await.changed(), 0);
    let after = store.get_run(&name(&r)).await.expect("run");
    assert_eq!(after.status, RunStatus::Succeeded);
    assert_eq!(after.last_sequence, done.last_sequence);
    assert_stale(
        store
            .fail_task(&quiet("FailTask"), &lease(&leased), failure(true))
            .await,
    );
});

conformance!(
    concurrent_appends_and_a_cancel_keep_the_log_gapless,
    |store, _db| {
        setup(&store, Quotas::default()).await;
        let s = session(&store, "s").await;
        let r = run(&store, &s).await;
        let leased = claim(&store, 30 * SECOND).await.expect("claimed");
        let store = Arc::new(store);
        let mut tasks = Vec::new();
        for writer in 0..4 {
            let (store, lease) = (store.clone(), lease(&leased));
            tasks.push(tokio::spawn(async move {
                for i in 0..10 {
                    let batch = vec![delta(&format!("{writer}.{i}")), delta("!")];
                    loop {
                        match store
                            .append_run_events(&quiet("AppendRunEvents"), &lease, batch.clone())
                            .await
                        {
                            Ok(_) => break,
                            Err(Error::Unavailable { .. }) => continue,
                            Err(e) => panic!("append: {e:?}"),
                        }
                    }
                }
            }));
        }
        let cancelled = store
            .cancel_run(
                &mutation("acme", "CancelRun", "r", "", b""),
                &name(&r),
                "stop",
            )
            .await
            .expect("cancel");
        assert!(cancelled.cancel_requested);
        for task in tasks {
            task.await.expect("writer");
        }
        let done = store
            .fail_task(&quiet("FailTask"), &lease(&leased), failure(false))
            .await
            .expect("the worker confirms");
        assert_eq!(done.status, RunStatus::Cancelled);
        let seqs = sequences(&store, &r).await;
        assert_eq!(seqs, (1..=done.last_sequence).collect::<Vec<_>>());
        // QUEUED, RUNNING, 80 deltas, CANCELLING, the error, CANCELLED.
        assert_eq!(done.last_sequence, 2 + 80 + 3);
    }
);
