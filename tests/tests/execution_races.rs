//! Races the server must settle with one winner: concurrent polls for one queue,
//! CreateRun from many clients on an idle session, the same request id sent in parallel,
//! cancel against complete, two humans deciding one plan, a complete at the very end of
//! a lease, and the concurrency quota under many eager workers. Whatever wins, the log
//! stays gapless with exactly one terminal event, last.

mod execution_support;

use std::time::Duration;

use agentry_e2e::*;
use execution_support::*;
use pb::RunStatus;
use tonic::Code;

fn is_terminal(status: i32) -> bool {
    [
        RunStatus::Succeeded,
        RunStatus::Failed,
        RunStatus::Cancelled,
        RunStatus::TimedOut,
    ]
    .iter()
    .any(|s| *s as i32 == status)
}

/// Exactly one terminal status event, and it is the last event.
async fn assert_one_terminal_event(w: &World, run: &str) -> pb::RunEvent {
    let log = w.finished_log(run).await;
    let terminal: Vec<_> = log
        .iter()
        .filter(|e| matches!(e.kind, Some(pb::run_event::Kind::StatusChanged(ref s)) if is_terminal(s.status)))
        .collect();
    assert_eq!(
        terminal.len(),
        1,
        "terminal events: {:#?}",
        describe_all(&log)
    );
    assert_eq!(
        terminal[0],
        log.last().unwrap(),
        "the terminal event is last"
    );
    log.last().unwrap().clone()
}

backend_tests!(concurrent_polls_never_lease_a_run_twice, |app| async move {
    let w = World::setup(&app).await;
    let mut created = Vec::new();
    for i in 0..10 {
        let session = w.session(&format!("s{i}")).await;
        created.push(w.run(&session.name, "work").await.name);
    }
    let mut workers = Vec::new();
    for n in 0..5 {
        let worker = w.worker.clone();
        workers.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            while let Some(task) = worker
                .poll(Duration::from_millis(1500), Duration::from_secs(30))
                .await
            {
                mine.push(task.run.unwrap().name);
                worker
                    .complete(&task.task_token, &format!("worker {n}"))
                    .await;
            }
            mine
        }));
    }
    let mut leased = Vec::new();
    for worker in workers {
        leased.extend(worker.await.unwrap());
    }
    leased.sort();
    created.sort();
    assert_eq!(leased, created, "each run leased exactly once");
    for name in &created {
        let run = w.get_run(name).await;
        assert_eq!((run.status, run.attempt), (RunStatus::Succeeded as i32, 1));
    }
});

backend_tests!(
    parallel_create_runs_on_an_idle_session_admit_exactly_one,
    |app| async move {
        let w = World::setup(&app).await;
        for round in 0..5 {
            let session = w.session(&format!("s{round}")).await;
            let mut calls = Vec::new();
            for i in 0..6 {
                let client = w.client.clone();
                let request = create_run(&session.name, spec(&format!("try {i}")));
                calls.push(tokio::spawn(async move {
                    client.clone().create_run(request).await.inner()
                }));
            }
            let mut winners = Vec::new();
            for call in calls {
                match call.await.unwrap() {
                    Ok(run) => winners.push(run.name),
                    Err(status) => {
                        assert_status(
                            Err::<(), _>(status),
                            Code::FailedPrecondition,
                            "SESSION_BUSY",
                        );
                    }
                }
            }
            assert_eq!(winners.len(), 1, "round {round}: one run owns the session");
            assert_eq!(w.runs(&session.name, "").await.len(), 1);
            assert_eq!(w.messages(&session.name, true).await.len(), 1);
            assert_eq!(w.get_session(&session.name).await.active_run, winners[0]);
        }
    }
);

backend_tests!(
    the_same_request_id_sent_in_parallel_creates_one_run,
    |app| async move {
        let w = World::setup(&app).await;
        let session = w.session("s").await;
        let mut calls = Vec::new();
        for _ in 0..6 {
            let client = w.client.clone();
            let request = pb::CreateRunRequest {
                request_id: "same".into(),
                ..create_run(
                    &session.name,
                    with_strategy("once", pb::MultitaskStrategy::Enqueue),
                )
            };
            calls.push(tokio::spawn(async move {
                client.clone().create_run(request).await.inner()
            }));
        }
        let mut names = Vec::new();
        for call in calls {
            let run = call.await.unwrap().expect("every copy succeeds");
            names.push(run.name);
        }
        names.dedup();
        assert_eq!(names.len(), 1, "all copies answer the same run");
        assert_eq!(w.runs(&session.name, "").await.len(), 1);
        assert_eq!(w.messages(&session.name, true).await.len(), 1);
    }
);

backend_tests!(cancel_racing_complete_ends_one_way_only, |app| async move {
    let w = World::setup(&app).await;
    let mut outcomes = Vec::new();
    for round in 0..10 {
        let session = w.session(&format!("s{round}")).await;
        let run = w.run(&session.name, "race").await;
        let task = w.worker.claim().await;
        w.worker
            .append(
                &task.task_token,
                vec![tool_started("c1", READ_TOOL, json!({}))],
            )
            .await;
        let cancel = {
            let client = w.client.clone();
            let name = run.name.clone();
            tokio::spawn(async move { client.clone().cancel_run(cancel(&name, "race")).await })
        };
        let complete = {
            let worker = w.worker.clone();
            let token = task.task_token.clone();
            tokio::spawn(async move {
                worker
                    .try_complete(&token, vec![assistant("done")], None)
                    .await
            })
        };
        let cancelled = cancel.await.unwrap();
        let completed = complete
            .await
            .unwrap()
            .expect("the worker's lease was valid");
        let last = assert_one_terminal_event(&w, &run.name).await;
        let status = status_of(&last).status;
        assert_eq!(
            completed.status, status,
            "CompleteTask answers the final status"
        );
        match cancelled {
            // Cancel first: CANCELLING, then the complete confirms the cancel.
            Ok(_) => assert_eq!(status, RunStatus::Cancelled as i32),
            // Complete first: the cancel finds a finished run.
            Err(s) => {
                assert_status(Err::<(), _>(s), Code::FailedPrecondition, "RUN_FINISHED");
                assert_eq!(status, RunStatus::Succeeded as i32);
            }
        }
        let final_run = w.get_run(&run.name).await;
        assert_eq!(final_run.status, status);
        assert_eq!(final_run.last_sequence, last.sequence);
        outcomes.push(RunStatus::try_from(status).unwrap());
    }
    println!("cancel vs complete: {outcomes:?}");
});

backend_tests!(two_deciders_one_plan_one_decision, |app| async move {
    let w = World::setup(&app).await;
    for round in 0..5 {
        let session = w.session(&format!("s{round}")).await;
        let run = w.run(&session.name, "plan").await;
        let task = w.worker.claim().await;
        let reply = w
            .worker
            .propose(&task.task_token, vec![step(WRITE_TOOL, json!({}))])
            .await
            .unwrap();
        let id = reply.approval.unwrap().approval_id;
        let mut calls = Vec::new();
        for (client, decision) in [
            (w.client.clone(), pb::ApprovalDecision::Approve),
            (w.dev.clone(), pb::ApprovalDecision::Reject),
            (w.client.clone(), pb::ApprovalDecision::Reject),
        ] {
            let request = decide(&run.name, &id, decision, "");
            calls.push(tokio::spawn(async move {
                client.clone().decide_approval(request).await.inner()
            }));
        }
        let mut wins = 0;
        for call in calls {
            match call.await.unwrap() {
                Ok(run) => {
                    wins += 1;
                    assert_eq!(run.status, RunStatus::Queued as i32);
                }
                Err(status) => {
                    assert_status(
                        Err::<(), _>(status),
                        Code::FailedPrecondition,
                        "APPROVAL_NOT_PENDING",
                    );
                }
            }
        }
        assert_eq!(wins, 1, "round {round}: one decision");
        let story = w.story(&run.name).await;
        assert_eq!(
            story.iter().filter(|e| e.starts_with("decided ")).count(),
            1,
            "{story:#?}"
        );
        let task = w.worker.claim().await;
        w.worker.complete(&task.task_token, "ok").await;
    }
});

backend_tests!(
    a_complete_at_the_end_of_the_lease_wins_or_loses_cleanly,
    |app| async move {
        let w = World::setup(&app).await;
        let mut outcomes = Vec::new();
        for (round, delay_ms) in [900u64, 950, 1000, 1050, 1100, 1150, 1300]
            .into_iter()
            .enumerate()
        {
            let session = w.session(&format!("s{round}")).await;
            let run = w
                .start(
                    &session.name,
                    pb::Run {
                        retry_policy: retry(100, 2),
                        ..spec("edge")
                    },
                )
                .await;
            let task = w.worker.claim_with_lease(Duration::from_secs(1)).await;
            tokio::time::sleep(Duration::from_millis(delay_ms)).await;
            let result = w
                .worker
                .try_complete(&task.task_token, vec![assistant("just in time")], None)
                .await;
            match result {
                Ok(done) => {
                    // Past the lease's end a call is stale, even before the reaper ran.
                    assert!(
                        delay_ms < 1100,
                        "a CompleteTask {delay_ms} ms into a 1 s lease was accepted"
                    );
                    assert_eq!(done.status, RunStatus::Succeeded as i32);
                    assert_eq!(done.attempt, 1);
                    outcomes.push(format!("{delay_ms} ms: completed"));
                }
                Err(status) => {
                    assert_status(Err::<(), _>(status), Code::FailedPrecondition, "STALE_TASK");
                    // The lease was lost: attempt 2 gets the run and finishes it.
                    let second = w.worker.claim().await;
                    assert_eq!(second.run.as_ref().unwrap().name, run.name);
                    assert_eq!(second.attempt, 2);
                    w.worker.complete(&second.task_token, "second try").await;
                    outcomes.push(format!("{delay_ms} ms: stale"));
                }
            }
            let last = assert_one_terminal_event(&w, &run.name).await;
            assert_eq!(status_of(&last).status, RunStatus::Succeeded as i32);
            let messages = w.messages(&session.name, false).await;
            assert_eq!(messages.len(), 2, "one answer joined the transcript");
        }
        println!("{outcomes:?}");
    }
);

/// Six runs and five eager workers on a workspace with `max_concurrent_runs` 2. Each
/// worker counts the runs it holds (from the moment PollTask hands one over until just
/// before it calls CompleteTask, so the count never exceeds what the server holds).
/// Returns (peak held at once, the runs).
async fn eager_workers(
    w: &World,
    runs: usize,
    workers: usize,
    hold: Duration,
) -> (i32, Vec<String>) {
    let mut created = Vec::new();
    for i in 0..runs {
        let session = w.session(&format!("s{i}")).await;
        created.push(w.run(&session.name, "work").await.name);
    }
    let held = std::sync::Arc::new(std::sync::atomic::AtomicI32::new(0));
    let peak = std::sync::Arc::new(std::sync::atomic::AtomicI32::new(0));
    let mut handles = Vec::new();
    for _ in 0..workers {
        let worker = w.worker.clone();
        let (held, peak) = (held.clone(), peak.clone());
        handles.push(tokio::spawn(async move {
            use std::sync::atomic::Ordering::SeqCst;
            let mut done = 0;
            while let Some(task) = worker
                .poll(Duration::from_millis(2500), Duration::from_secs(30))
                .await
            {
                let now = held.fetch_add(1, SeqCst) + 1;
                peak.fetch_max(now, SeqCst);
                tokio::time::sleep(hold).await;
                held.fetch_sub(1, SeqCst);
                worker.complete(&task.task_token, "ok").await;
                done += 1;
            }
            done
        }));
    }
    let mut total = 0;
    for handle in handles {
        total += handle.await.unwrap();
    }
    assert_eq!(total, runs, "every run was served");
    (peak.load(std::sync::atomic::Ordering::SeqCst), created)
}

fn two_slots() -> pb::Quotas {
    pb::Quotas {
        max_concurrent_runs: 2,
        ..Default::default()
    }
}

backend_tests!(
    the_concurrency_quota_holds_under_eager_workers,
    |app| async move {
        let w = World::setup_with_quotas(&app, two_slots()).await;
        let (peak, created) = eager_workers(&w, 6, 5, Duration::from_millis(300)).await;
        assert!(peak <= 2, "{peak} runs were leased at once");
        assert_eq!(peak, 2, "both slots were used");
        for name in &created {
            assert_eq!(w.get_run(name).await.status, RunStatus::Succeeded as i32);
        }
    }
);

backend_tests!(
    run_start_and_end_times_agree_with_the_quota,
    |app| async move {
        // start_time is when the run got its slot, end_time when it gave it back, so
        // with 2 slots no instant lies inside 3 [start, end) intervals.
        let w = World::setup_with_quotas(&app, two_slots()).await;
        let (_, created) = eager_workers(&w, 10, 6, Duration::from_millis(100)).await;
        let mut edges = Vec::new();
        let mut intervals = Vec::new();
        for name in &created {
            let run = w.get_run(name).await;
            edges.push((nanos(&run.start_time), 1));
            edges.push((nanos(&run.end_time), -1));
            intervals.push((nanos(&run.start_time), nanos(&run.end_time)));
        }
        edges.sort();
        let mut running = 0;
        let mut peak = 0;
        for (_, delta) in edges {
            running += delta;
            peak = peak.max(running);
        }
        intervals.sort();
        let first = intervals[0].0;
        let shown: Vec<_> = intervals
            .iter()
            .map(|(s, e)| ((s - first) / 1_000_000, (e - first) / 1_000_000))
            .collect();
        assert!(
            peak <= 2,
            "{peak} runs overlap in their start/end times (ms): {shown:?}"
        );
    }
);
