//! Leases, retries and deadlines: a worker that dies mid-run loses its lease and a second
//! worker gets attempt 2, while the first one's late calls are STALE_TASK and change
//! nothing; heartbeats keep a short lease alive; FailTask retries with the policy's
//! backoff (or the worker's override) until attempts run out; non-retryable error types;
//! a run timeout ends the run TIMED_OUT whatever its status.

mod execution_support;

use std::time::{Duration, Instant};

use agentry_e2e::*;
use execution_support::*;
use pb::{RunStatus, StopReason};
use tonic::Code;

const SHORT_LEASE: Duration = Duration::from_secs(1);

/// Every late call the first worker might make with `token` is STALE_TASK.
async fn assert_all_stale(w: &World, token: &str) {
    let beat = w.worker.heartbeat(token, Duration::ZERO).await;
    assert_status(beat, Code::FailedPrecondition, "STALE_TASK");
    let append = w.worker.try_append(token, vec![delta("m", "late")]).await;
    assert_status(append, Code::FailedPrecondition, "STALE_TASK");
    let plan = w
        .worker
        .propose(token, vec![step(READ_TOOL, json!({}))])
        .await;
    assert_status(plan, Code::FailedPrecondition, "STALE_TASK");
    let complete = w
        .worker
        .try_complete(token, vec![assistant("late")], None)
        .await;
    assert_status(complete, Code::FailedPrecondition, "STALE_TASK");
    let fail = w.worker.fail(token, "Late", true).await;
    assert_status(fail, Code::FailedPrecondition, "STALE_TASK");
}

backend_tests!(
    a_worker_killed_mid_run_loses_the_lease_and_attempt_two_takes_over,
    |app| async move {
        let w = World::setup(&app).await;
        let session = w.session("s").await;
        let run = w
            .start(
                &session.name,
                pb::Run {
                    retry_policy: retry(100, 3),
                    ..spec("long job")
                },
            )
            .await;
        let first = w.worker.claim_with_lease(SHORT_LEASE).await;
        assert_eq!(first.attempt, 1);
        let lease = millis_between(
            &first.run.as_ref().unwrap().start_time,
            &first.lease_expire_time,
        );
        assert!(
            (500.0..=1500.0).contains(&lease),
            "a 1 s lease expires about 1 s after the start: {lease} ms"
        );
        w.worker
            .append(
                &first.task_token,
                vec![delta("m", "half"), said(assistant("half an answer"))],
            )
            .await;
        // The worker dies here: no more heartbeats. A second worker is waiting.
        let killed = Instant::now();
        let second = w.worker.claim_with_lease(Duration::from_secs(30)).await;
        println!(
            "attempt 2 leased {:.0} ms after the worker died",
            elapsed_ms(killed)
        );
        assert_eq!(second.attempt, 2);
        assert_eq!(second.run.as_ref().unwrap().name, run.name);
        assert_eq!(second.run.as_ref().unwrap().attempt, 2);
        assert_ne!(second.task_token, first.task_token);

        let story = w.story(&run.name).await;
        assert_eq!(
            story,
            [
                "status none->QUEUED",
                "status QUEUED->RUNNING",
                "delta m \"half\"",
                "message ASSISTANT \"half an answer\"",
                "status RUNNING->QUEUED WORKER_LOST",
                "status QUEUED->RUNNING",
            ]
        );
        let log = w.log(&run.name).await;
        assert_eq!(log[5].attempt, 2, "the claim of attempt 2");
        // Server clocks: the lease was declared lost only after it had lapsed, and
        // attempt 2 waited out the 100 ms backoff.
        let lost_after = millis_between(&first.lease_expire_time, &log[4].create_time);
        assert!(
            lost_after >= 0.0,
            "lost {lost_after} ms before the lease ended"
        );
        let backoff = millis_between(&log[4].create_time, &log[5].create_time);
        assert!(
            backoff >= 99.0,
            "attempt 2 began {backoff} ms after the loss"
        );
        assert_eq!(log[2].attempt, 1);

        // The dead worker wakes up: every call it makes is stale and writes nothing.
        let before = w.get_run(&run.name).await;
        assert_all_stale(&w, &first.task_token).await;
        let after = w.get_run(&run.name).await;
        assert_eq!(
            after.last_sequence, before.last_sequence,
            "nothing was appended"
        );
        assert_eq!(after.status, RunStatus::Running as i32);
        assert_eq!(after.attempt, 2);
        assert_eq!(
            w.messages(&session.name, false).await.len(),
            2,
            "the stale calls added no messages"
        );

        // Attempt 2 finishes the run.
        let done = w.worker.complete(&second.task_token, "whole answer").await;
        assert_eq!(done.status, RunStatus::Succeeded as i32);
        assert_eq!(done.attempt, 2);
        assert_all_stale(&w, &first.task_token).await;
        let tail = w.finished_log(&run.name).await;
        assert_eq!(
            describe_all(&tail[6..]),
            [
                "message ASSISTANT \"whole answer\"",
                "status RUNNING->SUCCEEDED END_TURN"
            ]
        );
        assert!(tail[6..].iter().all(|e| e.attempt == 2));
    }
);

backend_tests!(heartbeats_keep_a_short_lease_alive, |app| async move {
    let w = World::setup(&app).await;
    let session = w.session("s").await;
    let run = w.run(&session.name, "steady").await;
    let task = w.worker.claim_with_lease(SHORT_LEASE).await;
    let mut last_expiry = nanos(&task.lease_expire_time);
    // 3 s of work on a 1 s lease, heartbeating every 250 ms.
    for _ in 0..12 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let beat = w
            .worker
            .heartbeat(&task.task_token, Duration::ZERO)
            .await
            .expect("the lease is still ours");
        assert!(!beat.cancel_requested);
        let expiry = nanos(&beat.lease_expire_time);
        assert!(expiry >= last_expiry, "a heartbeat extends the lease");
        last_expiry = expiry;
    }
    let now = w.get_run(&run.name).await;
    assert_eq!(now.status, RunStatus::Running as i32);
    assert_eq!(now.attempt, 1, "never lost");
    // A heartbeat holding its reply (wait) also covers the wait: the lease ends at
    // least `wait` + lease after the call.
    let sent = now_nanos();
    let started = Instant::now();
    let held = w
        .worker
        .heartbeat(&task.task_token, Duration::from_millis(1500))
        .await
        .expect("a held heartbeat");
    assert!(!held.cancel_requested);
    assert!(
        started.elapsed() >= Duration::from_millis(1400),
        "with no cancel, the reply is held for the whole wait: {:?}",
        started.elapsed()
    );
    assert!(
        nanos(&held.lease_expire_time) >= sent + 2_000_000_000,
        "renewed to now + wait + lease"
    );
    let done = w.worker.complete(&task.task_token, "ok").await;
    assert_eq!(done.attempt, 1);
    assert!(
        !w.story(&run.name)
            .await
            .iter()
            .any(|e| e.contains("WORKER_LOST"))
    );
});

backend_tests!(
    retries_wait_out_the_backoff_and_number_their_attempts,
    |app| async move {
        let w = World::setup(&app).await;
        let session = w.session("s").await;
        let run = w
            .start(
                &session.name,
                pb::Run {
                    retry_policy: retry(200, 4),
                    ..spec("flaky")
                },
            )
            .await;
        let task = w.worker.claim().await;
        assert_eq!(task.attempt, 1);
        w.worker
            .append(
                &task.task_token,
                vec![error_event("Hiccup", "ignored, going on")],
            )
            .await;

        // Backoffs 200 ms, then 400 ms, then a worker override of 600 ms.
        let mut token = task.task_token.clone();
        for (attempt, min_ms, override_ms) in
            [(2, 200u64, None), (3, 400, None), (4, 600, Some(600))]
        {
            let failed_at = Instant::now();
            let request = pb::FailTaskRequest {
                next_retry_delay: override_ms.map(ms).unwrap_or_default(),
                ..fail_request(&token, "RateLimited", true)
            };
            let failed = w.worker.fail_with(request).await.expect("FailTask");
            assert_eq!(failed.status, RunStatus::Queued as i32, "retried");
            assert_eq!(
                failed.error.as_ref().map(|e| e.r#type.as_str()),
                Some("RateLimited")
            );
            let wait = millis_between(&failed.update_time, &failed.next_attempt_time);
            assert!(
                wait >= min_ms as f64 - 5.0 && wait <= min_ms as f64 + 100.0,
                "next_attempt_time is about {min_ms} ms out: {wait} ms"
            );
            // Not claimable at once.
            w.worker.expect_nothing(Duration::ZERO).await;
            let next = w.worker.claim().await;
            let waited = failed_at.elapsed();
            println!("attempt {attempt} leased after {waited:?} (backoff {min_ms} ms)");
            assert!(
                waited >= Duration::from_millis(min_ms - 10),
                "attempt {attempt} was handed out after {waited:?}, before the {min_ms} ms backoff"
            );
            assert!(
                waited < Duration::from_millis(min_ms + 3000),
                "a waiting PollTask wakes up when the backoff ends, not much later: {waited:?}"
            );
            assert_eq!(next.attempt, attempt);
            assert_eq!(next.run.as_ref().unwrap().attempt, attempt);
            token = next.task_token;
        }
        let done = w.worker.complete(&token, "finally").await;
        assert_eq!(
            (done.status, done.attempt),
            (RunStatus::Succeeded as i32, 4)
        );
        let story = w.finished_log(&run.name).await;
        assert_eq!(
            describe_all(&story),
            [
                "status none->QUEUED",
                "status QUEUED->RUNNING",
                "error Hiccup",
                "error RateLimited",
                "status RUNNING->QUEUED ERROR",
                "status QUEUED->RUNNING",
                "error RateLimited",
                "status RUNNING->QUEUED ERROR",
                "status QUEUED->RUNNING",
                "error RateLimited",
                "status RUNNING->QUEUED ERROR",
                "status QUEUED->RUNNING",
                "message ASSISTANT \"finally\"",
                "status RUNNING->SUCCEEDED END_TURN",
            ]
        );
        let claims: Vec<i32> = story
            .iter()
            .filter(|e| describe(e) == "status QUEUED->RUNNING")
            .map(|e| e.attempt)
            .collect();
        assert_eq!(claims, [1, 2, 3, 4]);
    }
);

backend_tests!(retries_stop_when_attempts_run_out, |app| async move {
    let w = World::setup(&app).await;
    let session = w.session("s").await;
    let run = w
        .start(
            &session.name,
            pb::Run {
                retry_policy: retry(100, 2),
                ..spec("doomed")
            },
        )
        .await;
    let first = w.worker.claim().await;
    w.worker
        .append(
            &first.task_token,
            vec![
                usage_event(3, 1, 0.25),
                tool_started("c1", READ_TOOL, json!({})),
            ],
        )
        .await;
    let retried = w
        .worker
        .fail(&first.task_token, "Boom", true)
        .await
        .unwrap();
    assert_eq!(retried.status, RunStatus::Queued as i32);
    let second = w.worker.claim().await;
    assert_eq!(second.attempt, 2);
    w.worker
        .append(
            &second.task_token,
            vec![
                usage_event(4, 2, 0.5),
                tool_started("c2", WRITE_TOOL, json!({})),
            ],
        )
        .await;
    let failed = w
        .worker
        .fail(&second.task_token, "Boom", true)
        .await
        .unwrap();
    assert_eq!(
        failed.status,
        RunStatus::Failed as i32,
        "2 of 2 attempts used"
    );
    assert_eq!(failed.stop_reason, StopReason::Error as i32);
    assert_eq!(failed.attempt, 2);
    assert_eq!(failed.error.as_ref().unwrap().r#type, "Boom");
    assert_eq!(failed.error.as_ref().unwrap().message, "Boom happened");
    let total = failed.usage.expect("usage totals");
    assert_eq!(
        (total.input_tokens, total.output_tokens, total.cost_usd),
        (7, 3, 0.75),
        "usage totals cover every attempt"
    );
    assert!(failed.end_time.is_some());
    w.worker.expect_nothing(Duration::from_millis(500)).await;

    // Open tool calls were closed as failed before the terminal event, which is last.
    let log = w.finished_log(&run.name).await;
    let story = describe_all(&log);
    assert_eq!(story.last().unwrap(), "status RUNNING->FAILED ERROR");
    let synthetic: Vec<_> = story.iter().filter(|e| e.ends_with("synthetic")).collect();
    assert!(
        synthetic.len() <= 2
            && synthetic
                .iter()
                .any(|e| e.as_str() == "tool_completed c2 write_file synthetic"),
        "the open call of the last attempt is closed: {story:#?}"
    );
    let tools: Vec<_> = w
        .messages(&session.name, false)
        .await
        .into_iter()
        .filter(|m| m.role == pb::MessageRole::Tool as i32)
        .collect();
    let c2 = tools
        .iter()
        .find(|m| m.tool_call.as_ref().unwrap().id == "c2")
        .expect("a TOOL message closes c2");
    let call = c2.tool_call.as_ref().unwrap();
    assert!(call.is_error);
    assert_eq!(
        from_value(call.result.as_ref().unwrap()),
        json!({"status": "failed"})
    );
    assert_all_stale(&w, &second.task_token).await;
});

backend_tests!(
    non_retryable_failures_end_the_run_at_once,
    |app| async move {
        let w = World::setup(&app).await;
        let policy = Some(pb::RetryPolicy {
            non_retryable_error_types: vec!["BadInput".into()],
            ..retry(100, 5).unwrap()
        });
        let session = w.session("a").await;
        let listed = w
            .start(
                &session.name,
                pb::Run {
                    retry_policy: policy.clone(),
                    ..spec("x")
                },
            )
            .await;
        assert_eq!(
            listed
                .retry_policy
                .as_ref()
                .unwrap()
                .non_retryable_error_types,
            ["BadInput"]
        );
        let task = w.worker.claim().await;
        let failed = w
            .worker
            .fail(&task.task_token, "BadInput", true)
            .await
            .unwrap();
        assert_eq!(
            failed.status,
            RunStatus::Failed as i32,
            "a listed type is never retried"
        );
        assert_eq!(failed.attempt, 1);

        // Another type under the same policy is retried…
        let session = w.session("b").await;
        let run = w
            .start(
                &session.name,
                pb::Run {
                    retry_policy: policy.clone(),
                    ..spec("y")
                },
            )
            .await;
        let task = w.worker.claim().await;
        let retried = w
            .worker
            .fail(&task.task_token, "Transient", true)
            .await
            .unwrap();
        assert_eq!(retried.status, RunStatus::Queued as i32);
        // …unless the worker says it is not retryable.
        let task = w.worker.claim().await;
        assert_eq!(task.attempt, 2);
        let failed = w
            .worker
            .fail(&task.task_token, "Transient", false)
            .await
            .unwrap();
        assert_eq!(failed.status, RunStatus::Failed as i32);
        assert_eq!(failed.attempt, 2);
        assert_eq!(
            w.story(&run.name).await.last().unwrap(),
            "status RUNNING->FAILED ERROR"
        );

        // max_attempts 1 disables retries.
        let session = w.session("c").await;
        w.start(
            &session.name,
            pb::Run {
                retry_policy: retry(100, 1),
                ..spec("z")
            },
        )
        .await;
        let task = w.worker.claim().await;
        let failed = w
            .worker
            .fail(&task.task_token, "Transient", true)
            .await
            .unwrap();
        assert_eq!(failed.status, RunStatus::Failed as i32);
    }
);

backend_tests!(
    a_lost_lease_with_no_attempts_left_fails_the_run,
    |app| async move {
        let w = World::setup(&app).await;
        let session = w.session("s").await;
        let run = w
            .start(
                &session.name,
                pb::Run {
                    retry_policy: retry(100, 1),
                    ..spec("once")
                },
            )
            .await;
        let task = w.worker.claim_with_lease(SHORT_LEASE).await;
        w.worker
            .append(
                &task.task_token,
                vec![tool_started("c1", DESTRUCTIVE_TOOL, json!({}))],
            )
            .await;
        let failed = w.wait_for(&run.name, RunStatus::Failed, SOON).await;
        assert_eq!(failed.stop_reason, StopReason::WorkerLost as i32);
        assert_eq!(
            w.finished_log(&run.name)
                .await
                .iter()
                .map(describe)
                .collect::<Vec<_>>()[3..],
            [
                "tool_completed c1 drop_table synthetic",
                "status RUNNING->FAILED WORKER_LOST"
            ]
        );
        assert_all_stale(&w, &task.task_token).await;
        w.worker.expect_nothing(Duration::from_millis(300)).await;
    }
);

backend_tests!(
    a_run_past_its_timeout_ends_timed_out_whatever_its_status,
    |app| async move {
        let w = World::setup(&app).await;
        // Running, with a worker that keeps heartbeating and an open tool call.
        let session = w.session("running").await;
        let run = w
            .start(
                &session.name,
                pb::Run {
                    timeout: ms(1500),
                    ..spec("slow")
                },
            )
            .await;
        assert_eq!(run.timeout, ms(1500));
        let task = w.worker.claim().await;
        let deadline = millis_between(&run.create_time, &task.deadline);
        assert!(
            (deadline - 1500.0).abs() < 1.0,
            "deadline = create + timeout: {deadline}"
        );
        w.worker
            .append(
                &task.task_token,
                vec![tool_started("c1", WRITE_TOOL, json!({"f": "a"}))],
            )
            .await;
        let beats = {
            let worker = w.worker.clone();
            let token = task.task_token.clone();
            tokio::spawn(async move {
                loop {
                    match worker.heartbeat(&token, Duration::ZERO).await {
                        Ok(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                        Err(status) => return status,
                    }
                }
            })
        };
        let timed_out = w.wait_for(&run.name, RunStatus::TimedOut, SOON).await;
        assert_eq!(timed_out.stop_reason, StopReason::Timeout as i32);
        let late = millis_between(&run.create_time, &timed_out.end_time);
        println!("timed out {late:.0} ms after creation (timeout 1500 ms)");
        assert!(late >= 1500.0, "ended before its timeout: {late} ms");
        assert!(late < 6000.0, "ended long after its timeout: {late} ms");
        let status = tokio::time::timeout(SOON, beats)
            .await
            .expect("heartbeats stop")
            .unwrap();
        assert_status(Err::<(), _>(status), Code::FailedPrecondition, "STALE_TASK");
        let log = w.finished_log(&run.name).await;
        assert_eq!(
            describe_all(&log)[3..],
            [
                "tool_completed c1 write_file synthetic",
                "status RUNNING->TIMED_OUT TIMEOUT"
            ]
        );
        let tool = w.messages(&session.name, false).await.pop().unwrap();
        let call = tool.tool_call.expect("the synthetic TOOL message");
        assert_eq!((call.id.as_str(), call.is_error), ("c1", true));
        assert_eq!(
            from_value(call.result.as_ref().unwrap()),
            json!({"status": "cancelled"})
        );
        assert_eq!(w.get_session(&session.name).await.active_run, "");

        // Queued and never claimed: the same end.
        let session = w.session("queued").await;
        let run = w
            .start(
                &session.name,
                pb::Run {
                    timeout: ms(500),
                    ..spec("nobody home")
                },
            )
            .await;
        let timed_out = w.wait_for(&run.name, RunStatus::TimedOut, SOON).await;
        assert_eq!(timed_out.stop_reason, StopReason::Timeout as i32);
        assert_eq!(timed_out.attempt, 0);
        assert_eq!(
            w.story(&run.name).await,
            ["status none->QUEUED", "status QUEUED->TIMED_OUT TIMEOUT"]
        );
        w.worker.expect_nothing(Duration::ZERO).await;
    }
);

backend_tests!(backoff_is_capped_at_max_interval, |app| async move {
    let w = World::setup(&app).await;
    let session = w.session("s").await;
    let policy = pb::RetryPolicy {
        initial_interval: ms(100),
        backoff_coefficient: 10.0,
        max_interval: ms(300),
        max_attempts: 4,
        non_retryable_error_types: vec![],
    };
    w.start(
        &session.name,
        pb::Run {
            retry_policy: Some(policy),
            ..spec("capped")
        },
    )
    .await;
    let mut token = w.worker.claim().await.task_token;
    // 100 ms, then 1000 ms capped to 300, then 10 000 capped to 300.
    for (attempt, expected) in [(2, 100.0), (3, 300.0), (4, 300.0)] {
        let failed = w.worker.fail(&token, "Again", true).await.unwrap();
        let wait = millis_between(&failed.update_time, &failed.next_attempt_time);
        assert!(
            (wait - expected).abs() <= 100.0,
            "backoff before attempt {attempt}: {wait} ms, expected {expected}"
        );
        let task = w.worker.claim().await;
        assert_eq!(task.attempt, attempt);
        token = task.task_token;
    }
    let failed = w.worker.fail(&token, "Again", true).await.unwrap();
    assert_eq!(
        failed.status,
        RunStatus::Failed as i32,
        "4 of 4 attempts used"
    );
});

backend_tests!(
    a_run_waiting_for_approval_also_times_out,
    |app| async move {
        let w = World::setup(&app).await;
        let session = w.session("s").await;
        let run = w
            .start(
                &session.name,
                pb::Run {
                    timeout: ms(1000),
                    ..spec("ask forever")
                },
            )
            .await;
        let task = w.worker.claim().await;
        let reply = w
            .worker
            .propose(&task.task_token, vec![step(DESTRUCTIVE_TOOL, json!({}))])
            .await
            .unwrap();
        assert!(!reply.approved);
        let done = w.wait_for(&run.name, RunStatus::TimedOut, SOON).await;
        assert_eq!(done.stop_reason, StopReason::Timeout as i32);
        assert_eq!(
            w.finished_log(&run.name)
                .await
                .last()
                .map(describe)
                .unwrap(),
            "status REQUIRES_ACTION->TIMED_OUT TIMEOUT"
        );
        let approval_id = reply.approval.unwrap().approval_id;
        let late = w
            .client
            .clone()
            .decide_approval(decide(
                &run.name,
                &approval_id,
                pb::ApprovalDecision::Approve,
                "",
            ))
            .await;
        assert_status(late, Code::FailedPrecondition, "APPROVAL_NOT_PENDING");
        assert_eq!(w.get_session(&session.name).await.active_run, "");
    }
);

backend_tests!(
    a_cancelling_run_past_its_timeout_is_timed_out,
    |app| async move {
        let w = World::setup(&app).await;
        let session = w.session("s").await;
        let run = w
            .start(
                &session.name,
                pb::Run {
                    timeout: ms(1000),
                    ..spec("stubborn")
                },
            )
            .await;
        let task = w.worker.claim().await;
        w.cancel(&run.name, "stop").await.unwrap();
        // The worker keeps its lease but never confirms.
        let beats = {
            let worker = w.worker.clone();
            let token = task.task_token.clone();
            tokio::spawn(async move {
                while worker.heartbeat(&token, Duration::ZERO).await.is_ok() {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            })
        };
        let done = w.wait_for(&run.name, RunStatus::TimedOut, SOON).await;
        assert_eq!(done.stop_reason, StopReason::Timeout as i32);
        assert_eq!(
            w.finished_log(&run.name)
                .await
                .last()
                .map(describe)
                .unwrap(),
            "status CANCELLING->TIMED_OUT TIMEOUT"
        );
        tokio::time::timeout(SOON, beats)
            .await
            .expect("the lease ended with the run")
            .unwrap();
    }
);
