//! What CreateRun does on a busy session (REJECT, ENQUEUE, INTERRUPT, ROLLBACK with
//! superseded messages), and the workspace's max_concurrent_runs quota holding runs
//! QUEUED until a slot frees up.

mod execution_support;

use std::time::Duration;

use agentry_e2e::*;
use execution_support::*;
use pb::{MultitaskStrategy as M, RunStatus, StopReason};
use tonic::Code;

const NOT_YET: Duration = Duration::from_millis(1000);

backend_tests!(
    reject_refuses_a_second_run_while_the_session_is_busy,
    |app| async move {
        let w = World::setup(&app).await;
        let session = w.session("s").await;
        let first = w.run(&session.name, "first").await;
        for strategy in [M::Reject, M::Unspecified] {
            let result = w
                .try_run(create_run(&session.name, with_strategy("second", strategy)))
                .await;
            assert_status(result, Code::FailedPrecondition, "SESSION_BUSY");
        }
        let task = w.worker.claim().await;
        let result = w
            .try_run(create_run(
                &session.name,
                with_strategy("second", M::Reject),
            ))
            .await;
        assert_status(result, Code::FailedPrecondition, "SESSION_BUSY");
        // Nothing was written by the refusals.
        assert_eq!(w.runs(&session.name, "").await.len(), 1);
        assert_eq!(
            transcript(&w.messages(&session.name, true).await),
            [line("USER", "first", "")]
        );
        assert_eq!(w.get_session(&session.name).await.active_run, first.name);

        w.worker.complete(&task.task_token, "one").await;
        let second = w
            .try_run(create_run(
                &session.name,
                with_strategy("second", M::Reject),
            ))
            .await
            .expect("an idle session takes a new run");
        assert_eq!(w.get_session(&session.name).await.active_run, second.name);
    }
);

backend_tests!(
    enqueued_runs_start_one_after_another_in_order,
    |app| async move {
        let w = World::setup(&app).await;
        let session = w.session("s").await;
        let r1 = w.run(&session.name, "u1").await;
        let t1 = w.worker.claim().await;
        let r2 = w
            .start(&session.name, with_strategy("u2", M::Enqueue))
            .await;
        let r3 = w
            .start(&session.name, with_strategy("u3", M::Enqueue))
            .await;
        assert_eq!(r2.status, RunStatus::Queued as i32);
        assert_eq!(r3.status, RunStatus::Queued as i32);
        assert_eq!(w.get_session(&session.name).await.active_run, r1.name);
        // Their input joins the transcript only when each becomes the session's active
        // run, so a waiting run never splits a tool call from its result.
        assert_eq!(
            transcript(&w.messages(&session.name, false).await),
            [line("USER", "u1", "")]
        );
        // Nothing is runnable while r1 runs.
        w.worker.expect_nothing(NOT_YET).await;

        w.worker.complete(&t1.task_token, "a1").await;
        let t2 = w.worker.claim().await;
        assert_eq!(t2.run.as_ref().unwrap().name, r2.name, "r2 before r3");
        assert_eq!(w.get_session(&session.name).await.active_run, r2.name);
        w.worker.expect_nothing(NOT_YET).await;
        assert_eq!(w.get_run(&r3.name).await.status, RunStatus::Queued as i32);
        w.worker.complete(&t2.task_token, "a2").await;
        let t3 = w.worker.claim().await;
        assert_eq!(t3.run.as_ref().unwrap().name, r3.name);
        w.worker.complete(&t3.task_token, "a3").await;
        assert_eq!(w.get_session(&session.name).await.active_run, "");
        let messages = w.messages(&session.name, false).await;
        assert_eq!(
            transcript(&messages),
            [
                line("USER", "u1", ""),
                line("ASSISTANT", "a1", ""),
                line("USER", "u2", ""),
                line("ASSISTANT", "a2", ""),
                line("USER", "u3", ""),
                line("ASSISTANT", "a3", ""),
            ]
        );
        let runs: Vec<_> = messages.iter().map(|m| m.run.clone()).collect();
        assert_eq!(
            runs,
            [&r1.name, &r1.name, &r2.name, &r2.name, &r3.name, &r3.name].map(|s| s.clone())
        );
        for r in [&r1, &r2, &r3] {
            assert_eq!(w.get_run(&r.name).await.status, RunStatus::Succeeded as i32);
        }
    }
);

backend_tests!(
    interrupt_cancels_the_active_and_queued_runs_then_starts,
    |app| async move {
        let w = World::setup(&app).await;
        let session = w.session("s").await;
        let r1 = w.run(&session.name, "u1").await;
        let t1 = w.worker.claim().await;
        let r2 = w
            .start(&session.name, with_strategy("u2", M::Enqueue))
            .await;
        // The worker of r1 waits in a held heartbeat; the interrupt must wake it.
        let held = {
            let worker = w.worker.clone();
            let token = t1.task_token.clone();
            tokio::spawn(async move { worker.heartbeat(&token, Duration::from_secs(10)).await })
        };
        tokio::time::sleep(Duration::from_millis(300)).await;
        let interrupted = std::time::Instant::now();
        let r3 = w
            .start(&session.name, with_strategy("u3", M::Interrupt))
            .await;
        let reply = tokio::time::timeout(SOON, held).await.unwrap().unwrap();
        assert!(reply.expect("HeartbeatTask").cancel_requested);
        assert!(
            interrupted.elapsed() < Duration::from_secs(1),
            "the interrupt reached the worker after {:?}",
            interrupted.elapsed()
        );
        assert_eq!(r3.status, RunStatus::Queued as i32);

        let r1_now = w.get_run(&r1.name).await;
        assert_eq!(
            r1_now.status,
            RunStatus::Cancelling as i32,
            "the active run is asked to stop"
        );
        assert!(r1_now.cancel_requested);
        let r2_now = w.get_run(&r2.name).await;
        assert_eq!(
            r2_now.status,
            RunStatus::Cancelled as i32,
            "the queued one is cancelled"
        );
        assert!(
            [StopReason::Cancelled as i32, StopReason::Interrupted as i32]
                .contains(&r2_now.stop_reason),
            "stop reason {:?}",
            StopReason::try_from(r2_now.stop_reason)
        );
        let beat = w
            .worker
            .heartbeat(&t1.task_token, Duration::ZERO)
            .await
            .unwrap();
        assert!(beat.cancel_requested);
        // r3 waits until r1 has really ended.
        w.worker.expect_nothing(NOT_YET).await;
        assert_eq!(w.get_session(&session.name).await.active_run, r1.name);

        let done = w
            .worker
            .fail(&t1.task_token, "Interrupted", false)
            .await
            .unwrap();
        assert_eq!(done.status, RunStatus::Cancelled as i32);
        let t3 = w.worker.claim().await;
        assert_eq!(t3.run.as_ref().unwrap().name, r3.name);
        assert_eq!(w.get_session(&session.name).await.active_run, r3.name);
        w.worker.complete(&t3.task_token, "a3").await;
        // INTERRUPT keeps the old messages visible; u2 never ran, so it never joined.
        assert_eq!(
            transcript(&w.messages(&session.name, false).await),
            [
                line("USER", "u1", ""),
                line("USER", "u3", ""),
                line("ASSISTANT", "a3", ""),
            ]
        );
        assert!(
            w.messages(&session.name, true)
                .await
                .iter()
                .all(|m| !m.superseded)
        );
    }
);

backend_tests!(
    rollback_supersedes_the_messages_of_the_runs_it_discards,
    |app| async move {
        let w = World::setup(&app).await;
        let session = w.session("s").await;
        let r0 = w.run(&session.name, "hi").await;
        serve_one(&w, "hello").await;

        let r1 = w.run(&session.name, "q1").await;
        let t1 = w.worker.claim().await;
        w.worker
            .append(
                &t1.task_token,
                vec![
                    said(assistant("thinking")),
                    tool_started("c1", READ_TOOL, json!({"q": 1})),
                ],
            )
            .await;
        let r2 = w
            .start(&session.name, with_strategy("q1b", M::Enqueue))
            .await;
        let r3 = w
            .start(&session.name, with_strategy("q2", M::Rollback))
            .await;
        assert_eq!(
            w.get_run(&r1.name).await.status,
            RunStatus::Cancelling as i32
        );
        assert_eq!(
            w.get_run(&r2.name).await.status,
            RunStatus::Cancelled as i32
        );
        // The discarded run still writes a little before it stops; that is superseded too.
        w.worker
            .append(&t1.task_token, vec![said(assistant("late words"))])
            .await;
        let done = w
            .worker
            .fail(&t1.task_token, "Interrupted", false)
            .await
            .unwrap();
        assert_eq!(done.status, RunStatus::Cancelled as i32);
        let t3 = w.worker.claim().await;
        assert_eq!(t3.run.as_ref().unwrap().name, r3.name);
        w.worker.complete(&t3.task_token, "answer to q2").await;

        let visible = w.messages(&session.name, false).await;
        assert_eq!(
            transcript(&visible),
            [
                line("USER", "hi", ""),
                line("ASSISTANT", "hello", ""),
                line("USER", "q2", ""),
                line("ASSISTANT", "answer to q2", ""),
            ]
        );
        assert!(visible.iter().all(|m| !m.superseded));
        let all = w.messages(&session.name, true).await;
        let seqs: Vec<i64> = all.iter().map(|m| m.sequence).collect();
        assert_eq!(
            seqs,
            (1..=all.len() as i64).collect::<Vec<_>>(),
            "oldest first, all of them"
        );
        let flagged: Vec<_> = all
            .iter()
            .map(|m| {
                let owner = if m.run == r0.name {
                    "r0"
                } else if m.run == r1.name {
                    "r1"
                } else if m.run == r2.name {
                    "r2"
                } else if m.run == r3.name {
                    "r3"
                } else {
                    panic!("a message of an unknown run: {m:?}")
                };
                (owner, m.superseded)
            })
            .collect();
        for (owner, superseded) in &flagged {
            assert_eq!(
                *superseded,
                matches!(*owner, "r1" | "r2"),
                "superseded iff written by a discarded run: {flagged:?}\n{:#?}",
                transcript(&all)
            );
        }
        let discarded: Vec<_> = all.iter().filter(|m| m.superseded).collect();
        assert_eq!(
            transcript(&discarded.into_iter().cloned().collect::<Vec<_>>()),
            [
                line("USER", "q1", ""),
                line("ASSISTANT", "thinking", ""),
                line("ASSISTANT", "", "c1"),
                line("ASSISTANT", "late words", ""),
                line("TOOL", "", "c1"),
            ],
            "every message of r1 (r2 never ran), including the late ones and the synthetic result"
        );
    }
);

backend_tests!(
    max_concurrent_runs_holds_runs_queued_until_a_slot_frees,
    |app| async move {
        let quotas = pb::Quotas {
            max_concurrent_runs: 1,
            ..Default::default()
        };
        let w = World::setup_with_quotas(&app, quotas).await;
        let a = w.session("a").await;
        let b = w.session("b").await;
        let run_a = w.run(&a.name, "a").await;
        let run_b = w.run(&b.name, "b").await;
        let task_a = w.worker.claim().await;
        assert_eq!(
            task_a.run.as_ref().unwrap().name,
            run_a.name,
            "the oldest run first"
        );
        // One slot, taken: b stays QUEUED.
        w.worker.expect_nothing(NOT_YET).await;
        assert_eq!(
            w.get_run(&run_b.name).await.status,
            RunStatus::Queued as i32
        );
        w.worker.complete(&task_a.task_token, "done a").await;
        let task_b = w.worker.claim().await;
        assert_eq!(task_b.run.as_ref().unwrap().name, run_b.name);

        // A CANCELLING run still holds its slot until the worker confirms.
        let run_c = w.run(&a.name, "c").await;
        w.cancel(&run_b.name, "").await.unwrap();
        w.worker.expect_nothing(NOT_YET).await;
        assert_eq!(
            w.get_run(&run_c.name).await.status,
            RunStatus::Queued as i32
        );
        w.worker
            .fail(&task_b.task_token, "Cancelled", false)
            .await
            .unwrap();
        let task_c = w.worker.claim().await;
        assert_eq!(task_c.run.as_ref().unwrap().name, run_c.name);
        // A waiting poll is woken when the slot frees.
        let run_d = w.run(&b.name, "d").await;
        let waiter = {
            let worker = w.worker.clone();
            tokio::spawn(async move { worker.poll(SOON, Duration::from_secs(30)).await })
        };
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(!waiter.is_finished(), "no slot yet");
        w.worker.complete(&task_c.task_token, "done c").await;
        let task_d = waiter.await.unwrap().expect("the freed slot goes to d");
        assert_eq!(task_d.run.as_ref().unwrap().name, run_d.name);
    }
);
