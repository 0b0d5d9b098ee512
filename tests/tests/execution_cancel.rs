//! CancelRun: a queued (or waiting-for-approval) run is cancelled at once; a running run
//! goes CANCELLING, a worker blocked in HeartbeatTask hears about it within a second, and
//! the worker's FailTask or CompleteTask (or its lapsed lease) confirms it as CANCELLED,
//! closing the tool calls it left open. Cancelling twice is a no-op; cancelling a
//! finished run is RUN_FINISHED.

mod execution_support;

use std::time::{Duration, Instant};

use agentry_e2e::*;
use execution_support::*;
use pb::{RunStatus, StopReason};
use tonic::Code;

backend_tests!(cancelling_a_queued_run_is_immediate, |app| async move {
    let w = World::setup(&app).await;
    let session = w.session("s").await;
    let run = w.run(&session.name, "never mind").await;
    let mut stream = w.stream(&run.name, 0).await;

    let cancelled = w
        .cancel(&run.name, "changed my mind")
        .await
        .expect("CancelRun");
    assert_eq!(cancelled.status, RunStatus::Cancelled as i32);
    assert_eq!(cancelled.stop_reason, StopReason::Cancelled as i32);
    assert!(cancelled.cancel_requested);
    assert!(cancelled.end_time.is_some());
    assert_eq!(cancelled.attempt, 0);
    let events = read_to_end(&mut stream, SOON).await;
    assert_eq!(
        describe_all(&events),
        ["status none->QUEUED", "status QUEUED->CANCELLED CANCELLED"]
    );
    assert_eq!(
        status_of(&events[1]).message,
        "changed my mind",
        "the reason is recorded"
    );
    assert_eq!(w.get_session(&session.name).await.active_run, "");
    w.worker.expect_nothing(Duration::ZERO).await;

    // Again: the run comes back unchanged and nothing is written.
    let again = w
        .cancel(&run.name, "really")
        .await
        .expect("a second CancelRun");
    assert_eq!(again.status, RunStatus::Cancelled as i32);
    assert_eq!(again.last_sequence, 2);
    assert_eq!(w.get_run(&run.name).await.last_sequence, 2);

    let missing = w
        .cancel(
            &format!("{}/runs/0190c5a4-6e3e-7b7a-9c1e-2f4d5e6a7b8c", session.name),
            "",
        )
        .await;
    assert_status(missing, Code::NotFound, "RESOURCE_NOT_FOUND");
});

backend_tests!(
    cancelling_a_running_run_wakes_a_waiting_heartbeat_and_the_worker_confirms,
    |app| async move {
        let w = World::setup(&app).await;
        let session = w.session("s").await;
        let run = w.run(&session.name, "long task").await;
        let task = w.worker.claim().await;
        let token = task.task_token.clone();
        w.worker
            .append(
                &token,
                vec![
                    tool_started("c1", READ_TOOL, json!({"q": "slow"})),
                    tool_started("c2", WRITE_TOOL, json!({"f": "x"})),
                    tool_completed("c2", WRITE_TOOL, json!({"ok": true})),
                ],
            )
            .await;

        // The worker waits for news in a long-held heartbeat.
        let waiting = {
            let worker = w.worker.clone();
            let token = token.clone();
            tokio::spawn(async move {
                let reply = worker.heartbeat(&token, Duration::from_secs(10)).await;
                (Instant::now(), reply)
            })
        };
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(
            !waiting.is_finished(),
            "a heartbeat with wait holds its reply"
        );

        let asked = Instant::now();
        let cancelling = w.cancel(&run.name, "stop it").await.expect("CancelRun");
        assert_eq!(cancelling.status, RunStatus::Cancelling as i32);
        assert!(cancelling.cancel_requested);
        let (heard, reply) = tokio::time::timeout(SOON, waiting)
            .await
            .expect("the held heartbeat returns")
            .unwrap();
        let reply = reply.expect("HeartbeatTask");
        assert!(
            reply.cancel_requested,
            "the held heartbeat reports the cancel"
        );
        let latency = heard.duration_since(asked);
        println!("CancelRun → worker saw cancel_requested: {latency:?}");
        assert!(
            latency < Duration::from_secs(1),
            "cancel took {latency:?} to reach the worker"
        );

        // Every later worker call says so too, and the lease still works until it confirms.
        let beat = w.worker.heartbeat(&token, Duration::ZERO).await.unwrap();
        assert!(beat.cancel_requested);
        let appended = w
            .worker
            .try_append(&token, vec![delta("m", "stopping")])
            .await
            .expect("appending while cancelling");
        assert!(appended.cancel_requested);
        let again = w.cancel(&run.name, "again").await.expect("cancel twice");
        assert_eq!(again.status, RunStatus::Cancelling as i32);
        assert_eq!(again.last_sequence, appended.last_sequence, "a no-op");

        // The worker confirms by failing (even as retryable): CANCELLED, no retry.
        let done = w
            .worker
            .fail(&token, "Cancelled", true)
            .await
            .expect("FailTask");
        assert_eq!(done.status, RunStatus::Cancelled as i32);
        assert_eq!(done.stop_reason, StopReason::Cancelled as i32);
        assert!(done.end_time.is_some());
        w.worker.expect_nothing(Duration::from_millis(300)).await;

        let log = w.finished_log(&run.name).await;
        let story = describe_all(&log);
        assert_eq!(
            story[..7],
            [
                "status none->QUEUED",
                "status QUEUED->RUNNING",
                "tool_started c1 search",
                "tool_started c2 write_file",
                "tool_completed c2 write_file",
                "status RUNNING->CANCELLING",
                "delta m \"stopping\"",
            ]
        );
        assert_eq!(status_of(&log[5]).message, "stop it");
        let tail: Vec<_> = story[7..]
            .iter()
            .filter(|e| !e.starts_with("error "))
            .collect();
        assert_eq!(
            tail,
            [
                "tool_completed c1 search synthetic",
                "status CANCELLING->CANCELLED CANCELLED"
            ],
            "only the open call is closed, then the terminal event: {story:#?}"
        );
        let messages = w.messages(&session.name, false).await;
        let closing = messages.last().unwrap();
        assert_eq!(closing.role, pb::MessageRole::Tool as i32);
        let call = closing.tool_call.as_ref().unwrap();
        assert_eq!(
            (call.id.as_str(), call.tool.as_str(), call.is_error),
            ("c1", READ_TOOL, true)
        );
        assert_eq!(
            from_value(call.result.as_ref().unwrap()),
            json!({"status": "cancelled"})
        );
        assert_eq!(
            messages
                .iter()
                .filter(|m| m.role == pb::MessageRole::Tool as i32)
                .count(),
            2,
            "c2's real result and c1's synthetic one"
        );

        let stale = w.worker.heartbeat(&token, Duration::ZERO).await;
        assert_status(stale, Code::FailedPrecondition, "STALE_TASK");
        let finished = w
            .cancel(&run.name, "")
            .await
            .expect("cancelling a cancelled run");
        assert_eq!(finished.status, RunStatus::Cancelled as i32);
    }
);

backend_tests!(
    a_cancelling_run_ends_cancelled_on_complete_or_a_lapsed_lease,
    |app| async move {
        let w = World::setup(&app).await;
        // The worker finishes its step anyway and completes: still CANCELLED.
        let session = w.session("a").await;
        let run = w.run(&session.name, "a").await;
        let task = w.worker.claim().await;
        w.cancel(&run.name, "").await.unwrap();
        let done = w
            .worker
            .try_complete(&task.task_token, vec![assistant("partial")], None)
            .await
            .expect("CompleteTask on a cancelling run");
        assert_eq!(done.status, RunStatus::Cancelled as i32);
        assert_eq!(done.stop_reason, StopReason::Cancelled as i32);
        assert_eq!(
            w.finished_log(&run.name)
                .await
                .last()
                .map(describe)
                .unwrap(),
            "status CANCELLING->CANCELLED CANCELLED"
        );

        // The worker vanishes: when its lease lapses the run is CANCELLED, not retried.
        let session = w.session("b").await;
        let run = w.run(&session.name, "b").await;
        let task = w.worker.claim_with_lease(Duration::from_secs(1)).await;
        w.cancel(&run.name, "").await.unwrap();
        let done = w.wait_for(&run.name, RunStatus::Cancelled, SOON).await;
        assert_eq!(done.stop_reason, StopReason::Cancelled as i32);
        assert_eq!(done.attempt, 1);
        assert_eq!(
            w.story(&run.name).await,
            [
                "status none->QUEUED",
                "status QUEUED->RUNNING",
                "status RUNNING->CANCELLING",
                "status CANCELLING->CANCELLED CANCELLED",
            ]
        );
        let stale = w.worker.heartbeat(&task.task_token, Duration::ZERO).await;
        assert_status(stale, Code::FailedPrecondition, "STALE_TASK");
        w.worker.expect_nothing(Duration::from_millis(300)).await;
    }
);

backend_tests!(
    cancelling_a_finished_run_is_run_finished,
    |app| async move {
        let w = World::setup(&app).await;
        let session = w.session("s").await;
        let ok = w.run(&session.name, "one").await;
        serve_one(&w, "done").await;
        let result = w.cancel(&ok.name, "too late").await;
        assert_status(result, Code::FailedPrecondition, "RUN_FINISHED");

        let failed = w
            .start(
                &session.name,
                pb::Run {
                    retry_policy: retry(100, 1),
                    ..spec("two")
                },
            )
            .await;
        let task = w.worker.claim().await;
        w.worker
            .fail(&task.task_token, "Boom", false)
            .await
            .unwrap();
        let result = w.cancel(&failed.name, "too late").await;
        assert_status(result, Code::FailedPrecondition, "RUN_FINISHED");

        let timed = w
            .start(
                &session.name,
                pb::Run {
                    timeout: ms(200),
                    ..spec("three")
                },
            )
            .await;
        w.wait_for(&timed.name, RunStatus::TimedOut, SOON).await;
        let result = w.cancel(&timed.name, "too late").await;
        assert_status(result, Code::FailedPrecondition, "RUN_FINISHED");
        for run in [&ok, &failed, &timed] {
            let now = w.get_run(&run.name).await;
            assert!(!now.cancel_requested, "a refused cancel records nothing");
        }
    }
);

backend_tests!(
    cancelling_a_run_waiting_for_approval_is_immediate,
    |app| async move {
        let w = World::setup(&app).await;
        let session = w.session("s").await;
        let run = w.run(&session.name, "plan first").await;
        let task = w.worker.claim().await;
        let plan = w
            .worker
            .propose(&task.task_token, vec![step(READ_TOOL, json!({}))])
            .await
            .expect("ProposePlan");
        assert!(!plan.approved, "L0 approves nothing");
        w.wait_for(&run.name, RunStatus::RequiresAction, SOON).await;
        let cancelled = w.cancel(&run.name, "no").await.unwrap();
        assert_eq!(cancelled.status, RunStatus::Cancelled as i32);
        assert_eq!(cancelled.stop_reason, StopReason::Cancelled as i32);
        assert_eq!(
            w.finished_log(&run.name)
                .await
                .last()
                .map(describe)
                .unwrap(),
            "status REQUIRES_ACTION->CANCELLED CANCELLED"
        );
        let approval_id = plan.approval.unwrap().approval_id;
        let decide_late = w
            .dev
            .clone()
            .decide_approval(decide(
                &run.name,
                &approval_id,
                pb::ApprovalDecision::Approve,
                "",
            ))
            .await;
        assert_status(
            decide_late,
            Code::FailedPrecondition,
            "APPROVAL_NOT_PENDING",
        );
        w.worker.expect_nothing(Duration::ZERO).await;
    }
);
