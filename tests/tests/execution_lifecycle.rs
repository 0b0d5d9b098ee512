//! The life of a run: a session, a run whose input joins the transcript, a worker that
//! leases it, heartbeats, streams deltas, calls a tool, reports usage and custom events
//! and completes; the exact event log a live watcher and a later replay see, and the
//! transcript it leaves. Also: resuming an event stream from any sequence, idempotent
//! CreateRun, sessions (ids, listing, a terminated instance) and DeleteSession.

mod execution_support;

use std::time::{Duration, Instant};

use agentry_e2e::*;
use execution_support::*;
use pb::{MessageRole, RunStatus, StopReason, run_event::Kind};
use tonic::Code;

backend_tests!(
    a_run_goes_from_queued_to_succeeded_with_the_exact_log_and_transcript,
    |app| async move {
        let w = World::setup(&app).await;
        let session = w.session("chat").await;
        assert_eq!(session.instance, w.instance);
        assert_eq!(session.active_run, "");
        assert_eq!(session.message_count, 0);

        let run = w.run(&session.name, "What is Rust?").await;
        assert!(
            run.name.starts_with(&format!("{}/runs/", session.name)),
            "run name {}",
            run.name
        );
        let run_id = run.name.rsplit('/').next().unwrap();
        let uuid = uuid::Uuid::parse_str(run_id).expect("a run id is a UUID");
        assert_eq!(uuid.get_version_num(), 7, "a UUIDv7 run id");
        assert_eq!(run_id, uuid.hyphenated().to_string());
        assert_eq!(run.status, RunStatus::Queued as i32);
        assert_eq!(run.attempt, 0, "no attempt before the first claim");
        assert_eq!(run.instance, w.instance);
        assert_eq!(run.agent, w.agent);
        assert_eq!(run.agent_revision, 1);
        assert_eq!(run.last_sequence, 1, "CreateRun writes the QUEUED event");
        assert!(run.create_time.is_some() && run.start_time.is_none() && run.end_time.is_none());
        assert_eq!(transcript(&run.input), [line("USER", "What is Rust?", "")]);
        let s = w.get_session(&session.name).await;
        assert_eq!(s.active_run, run.name);
        assert_eq!(s.message_count, 1, "the input joins the transcript at once");

        // A watcher from the very start sees every event live.
        let mut live = w.stream(&run.name, 0).await;
        let first = next_event(&mut live, SOON).await;
        assert_eq!(describe(&first), "status none->QUEUED");
        assert_eq!(first.attempt, 0);

        let task = w.worker.claim().await;
        assert_eq!(task.attempt, 1);
        let leased = task.run.clone().expect("the task carries the run");
        assert_eq!(leased.name, run.name);
        assert_eq!(leased.status, RunStatus::Running as i32);
        assert_eq!(leased.attempt, 1);
        assert_eq!(
            task.instance.as_ref().map(|i| i.name.as_str()),
            Some(w.instance.as_str())
        );
        let agent = task.agent.clone().expect("the task carries the agent");
        assert_eq!((agent.name.as_str(), agent.revision), (w.agent.as_str(), 1));
        assert_eq!(agent.tools.len(), 3, "the pinned revision's tools");
        assert!(
            nanos(&task.lease_expire_time) > now_nanos(),
            "the lease runs ahead"
        );
        assert_eq!(task.deadline, None, "no timeout, no deadline");
        assert_eq!(task.resume, None);
        let running = w.get_run(&run.name).await;
        assert_eq!(running.status, RunStatus::Running as i32);
        assert!(running.start_time.is_some());

        let beat = w
            .worker
            .heartbeat(&task.task_token, Duration::ZERO)
            .await
            .expect("HeartbeatTask");
        assert!(!beat.cancel_requested);
        assert!(nanos(&beat.lease_expire_time) >= nanos(&task.lease_expire_time) - 1_000_000_000);

        let batch = vec![
            delta("m1", "Let me "),
            delta("m1", "look."),
            said(assistant("Let me look.")),
            tool_started("c1", READ_TOOL, json!({"q": "rust"})),
            tool_completed("c1", READ_TOOL, json!({"hits": 3})),
            usage_event(10, 5, 0.01),
            custom("thought", json!({"confidence": 0.5})),
        ];
        let appended = w
            .worker
            .try_append(&task.task_token, batch)
            .await
            .expect("AppendRunEvents");
        assert_eq!(appended.last_sequence, 9);
        assert!(!appended.cancel_requested);
        assert_eq!(
            w.worker
                .append(&task.task_token, vec![delta("m2", "Rust is")])
                .await,
            10
        );

        let done = w
            .worker
            .try_complete(
                &task.task_token,
                vec![assistant("Rust is a language.")],
                Some(usage(20, 7, 0.02)),
            )
            .await
            .expect("CompleteTask");
        assert_eq!(done.status, RunStatus::Succeeded as i32);
        assert_eq!(done.stop_reason, StopReason::EndTurn as i32, "the default");
        assert_eq!(done.attempt, 1);
        assert_eq!(
            done.last_sequence, 13,
            "the output, its usage, the terminal status"
        );
        assert!(done.end_time.is_some());
        assert_eq!(
            transcript(&done.output),
            [line("ASSISTANT", "Rust is a language.", "")]
        );
        let total = done.usage.expect("usage totals");
        assert_eq!((total.input_tokens, total.output_tokens), (30, 12));
        assert!(
            (total.cost_usd - 0.03).abs() < 1e-9,
            "cost {}",
            total.cost_usd
        );

        let expected = [
            "status none->QUEUED",
            "status QUEUED->RUNNING",
            "delta m1 \"Let me \"",
            "delta m1 \"look.\"",
            "message ASSISTANT \"Let me look.\"",
            "tool_started c1 search",
            "tool_completed c1 search",
            "usage 10/5",
            "custom thought",
            "delta m2 \"Rust is\"",
            "message ASSISTANT \"Rust is a language.\"",
            "usage 20/7",
            "status RUNNING->SUCCEEDED END_TURN",
        ];
        let mut seen = vec![first];
        seen.extend(read_to_end(&mut live, SOON).await);
        assert_gapless(&run.name, &seen);
        assert_eq!(describe_all(&seen), expected, "the live watcher");
        // A replay after the end is the same log, event for event.
        assert_eq!(w.finished_log(&run.name).await, seen);
        for e in &seen[1..] {
            assert_eq!(e.attempt, 1, "written by attempt 1: {e:?}");
        }
        match seen[5].kind.as_ref().unwrap() {
            Kind::ToolCallStarted(t) => {
                let call = t.tool_call.as_ref().unwrap();
                assert_eq!(
                    from_value(call.arguments.as_ref().unwrap()),
                    json!({"q": "rust"})
                );
            }
            other => panic!("{other:?}"),
        }
        match seen[6].kind.as_ref().unwrap() {
            Kind::ToolCallCompleted(t) => {
                assert!(!t.synthetic);
                let call = t.tool_call.as_ref().unwrap();
                assert_eq!(
                    from_value(call.result.as_ref().unwrap()),
                    json!({"hits": 3.0})
                );
            }
            other => panic!("{other:?}"),
        }
        match seen[8].kind.as_ref().unwrap() {
            Kind::Custom(c) => {
                assert_eq!(
                    from_struct(c.data.as_ref().unwrap()),
                    json!({"confidence": 0.5})
                )
            }
            other => panic!("{other:?}"),
        }

        let messages = w.messages(&session.name, false).await;
        assert_eq!(
            transcript(&messages),
            [
                line("USER", "What is Rust?", ""),
                line("ASSISTANT", "Let me look.", ""),
                line("ASSISTANT", "", "c1"),
                line("TOOL", "", "c1"),
                line("ASSISTANT", "Rust is a language.", ""),
            ]
        );
        for (i, m) in messages.iter().enumerate() {
            assert_eq!(m.sequence, i as i64 + 1);
            assert_eq!(m.name, format!("{}/messages/{}", session.name, m.sequence));
            assert_eq!(m.run, run.name, "every message names the run that added it");
            assert!(!m.superseded && m.create_time.is_some());
        }
        let tool_call = messages[2].tool_call.as_ref().unwrap();
        assert_eq!(tool_call.tool, READ_TOOL);
        assert_eq!(
            from_value(tool_call.arguments.as_ref().unwrap()),
            json!({"q": "rust"})
        );
        let tool_result = messages[3].tool_call.as_ref().unwrap();
        assert_eq!(messages[3].role, MessageRole::Tool as i32);
        assert_eq!(
            (tool_result.tool.as_str(), tool_result.is_error),
            (READ_TOOL, false)
        );
        assert_eq!(
            from_value(tool_result.result.as_ref().unwrap()),
            json!({"hits": 3.0})
        );

        let s = w.get_session(&session.name).await;
        assert_eq!((s.active_run.as_str(), s.message_count), ("", 5));
        // The lease is over: the token is stale.
        let late = w.worker.heartbeat(&task.task_token, Duration::ZERO).await;
        assert_status(late, Code::FailedPrecondition, "STALE_TASK");
        assert_eq!(
            w.story(&run.name).await,
            expected,
            "a stale call writes nothing, and the terminal event stays the last"
        );
    }
);

/// Appends `count` deltas `d1` … in batches of 3, pausing a little between batches,
/// then completes the run.
fn write_in_background(w: &World, token: String, count: usize) -> tokio::task::JoinHandle<()> {
    let worker = w.worker.clone();
    tokio::spawn(async move {
        let mut i = 0;
        while i < count {
            let batch: Vec<_> = (i..(i + 3).min(count))
                .map(|n| delta("m", &format!("d{}", n + 1)))
                .collect();
            i += batch.len();
            worker.append(&token, batch).await;
            tokio::time::sleep(Duration::from_millis(15)).await;
        }
        worker.complete(&token, "done").await;
    })
}

backend_tests!(
    an_event_stream_resumes_from_any_sequence_without_loss_or_repeats,
    |app| async move {
        let w = World::setup(&app).await;
        let session = w.session("s").await;
        let run = w.run(&session.name, "go").await;
        let task = w.worker.claim().await;
        let writer = write_in_background(&w, task.task_token.clone(), 90);

        // Each round opens a new connection, reads a few events and drops the connection,
        // then resumes after the last sequence it saw.
        let mut seen: Vec<pb::RunEvent> = Vec::new();
        let mut round = 0;
        loop {
            round += 1;
            let last = seen.last().map_or(0, |e| e.sequence);
            let client = execution_on(app.addr, &w.acme.admin_key).await;
            let mut stream = client
                .clone()
                .stream_run_events(stream_events(&run.name, last))
                .await
                .expect("StreamRunEvents")
                .into_inner();
            let mut ended = false;
            for _ in 0..(round % 5 + 2) {
                match tokio::time::timeout(SOON, stream.message()).await {
                    Ok(Ok(Some(m))) => {
                        let e = m.event.unwrap();
                        assert_eq!(e.sequence, seen.len() as i64 + 1, "resumed after {last}");
                        seen.push(e);
                    }
                    Ok(Ok(None)) => {
                        ended = true;
                        break;
                    }
                    other => panic!("stream failed after {last}: {other:?}"),
                }
            }
            drop(stream);
            drop(client);
            if ended {
                break;
            }
            assert!(round < 500, "the stream never ended");
        }
        writer.await.expect("writer");
        let full = w.finished_log(&run.name).await;
        assert_eq!(
            full.len(),
            94,
            "QUEUED, RUNNING, 90 deltas, the answer, SUCCEEDED"
        );
        assert_eq!(seen, full, "the rounds concatenated are the full log");

        // From a middle sequence of a finished run: exactly the rest, then the end.
        for after in [1, 47, 93] {
            let mut stream = w.stream(&run.name, after).await;
            let rest = read_to_end(&mut stream, SOON).await;
            assert_eq!(rest, full[after as usize..], "after {after}");
        }
        // After the terminal event there is nothing more: the stream just ends.
        let mut stream = w.stream(&run.name, 94).await;
        assert_eq!(read_to_end(&mut stream, SOON).await, vec![]);
        // Beyond the log, or negative: canonical errors.
        let beyond = w
            .client
            .clone()
            .stream_run_events(stream_events(&run.name, 95))
            .await;
        assert_eq!(beyond.map(|_| ()).unwrap_err().code(), Code::OutOfRange);
        let negative = w
            .client
            .clone()
            .stream_run_events(stream_events(&run.name, -1))
            .await;
        assert_eq!(
            negative.map(|_| ()).unwrap_err().code(),
            Code::InvalidArgument
        );
    }
);

backend_tests!(
    a_live_stream_resumed_mid_run_sees_each_later_event_once,
    |app| async move {
        let w = World::setup(&app).await;
        let session = w.session("s").await;
        let run = w.run(&session.name, "go").await;
        let task = w.worker.claim().await;
        w.worker
            .append(&task.task_token, vec![delta("m", "a"), delta("m", "b")])
            .await;
        // Resume from the middle of what is stored while the run is still going.
        let mut stream = w.stream(&run.name, 2).await;
        assert_eq!(
            describe(&next_event(&mut stream, SOON).await),
            "delta m \"a\""
        );
        assert_eq!(
            describe(&next_event(&mut stream, SOON).await),
            "delta m \"b\""
        );
        assert_quiet(&mut stream, Duration::from_millis(1500)).await;
        w.worker
            .append(&task.task_token, vec![delta("m", "c")])
            .await;
        let c = next_event(&mut stream, SOON).await;
        assert_eq!((c.sequence, describe(&c)), (5, "delta m \"c\"".into()));
        w.worker.complete(&task.task_token, "fin").await;
        let rest = read_to_end(&mut stream, SOON).await;
        assert_eq!(
            describe_all(&rest),
            [
                "message ASSISTANT \"fin\"",
                "status RUNNING->SUCCEEDED END_TURN"
            ]
        );
    }
);

backend_tests!(
    create_run_with_the_same_request_id_returns_the_same_run,
    |app| async move {
        let w = World::setup(&app).await;
        let session = w.session("s").await;
        let request = || pb::CreateRunRequest {
            request_id: "req-1".into(),
            ..create_run(&session.name, spec("once"))
        };
        let first = w.try_run(request()).await.expect("first CreateRun");
        let again = w.try_run(request()).await.expect("a replayed CreateRun");
        assert_eq!(again.name, first.name, "the replay answers the same run");
        // Even after the run moved on (the session is busy now, which would refuse a
        // new run), the retry replays.
        let task = w.worker.claim().await;
        let replay = w.try_run(request()).await.expect("replayed while running");
        assert_eq!(replay.name, first.name);

        // The same id with another request is refused and writes nothing.
        let other = pb::CreateRunRequest {
            request_id: "req-1".into(),
            ..create_run(&session.name, spec("twice"))
        };
        assert_status(
            w.try_run(other).await,
            Code::InvalidArgument,
            "REQUEST_ID_REUSED",
        );
        let runs = w.runs(&session.name, "").await;
        assert_eq!(runs.len(), 1, "one run for one request id");
        assert_eq!(
            transcript(&w.messages(&session.name, false).await),
            [line("USER", "once", "")],
            "the input joined the transcript once"
        );
        assert_eq!(w.get_run(&first.name).await.last_sequence, 2);
        w.worker.complete(&task.task_token, "ok").await;
        let after = w.try_run(request()).await.expect("replayed after the end");
        assert_eq!(after.name, first.name);
        assert_eq!(w.runs(&session.name, "").await.len(), 1);
    }
);

backend_tests!(sessions_get_ids_and_list_by_instance, |app| async move {
    let w = World::setup(&app).await;
    w.acme
        .instance(
            "web",
            "other",
            pb::Instance {
                agent: w.agent.clone(),
                ..Default::default()
            },
        )
        .await;
    let named = w.session("named").await;
    let assigned = w
        .client
        .clone()
        .create_session(create_session(&w.project, "", &w.instance))
        .await
        .must();
    let id = assigned
        .name
        .strip_prefix(&format!("{}/sessions/", w.project))
        .expect("under the project");
    let uuid = uuid::Uuid::parse_str(id).expect("a UUID id");
    assert_eq!(uuid.get_version_num(), 7, "a UUIDv7");
    assert_eq!(id, uuid.hyphenated().to_string(), "lowercase, hyphenated");
    let on_other = w
        .session_with("elsewhere", &w.acme.instance_name("web", "other"))
        .await;

    let again = w
        .client
        .clone()
        .create_session(create_session(&w.project, "named", &w.instance))
        .await;
    assert_status(again, Code::AlreadyExists, "RESOURCE_ALREADY_EXISTS");

    let list = |filter: String| {
        let client = w.client.clone();
        let project = w.project.clone();
        async move {
            let request = pb::ListSessionsRequest {
                parent: project,
                page_size: 100,
                page_token: String::new(),
                filter,
            };
            let page = client.clone().list_sessions(request).await.must();
            page.sessions
                .into_iter()
                .map(|s| s.name)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        list(String::new()).await,
        [
            on_other.name.clone(),
            assigned.name.clone(),
            named.name.clone()
        ],
        "newest first"
    );
    assert_eq!(
        list(format!("instance = \"{}\"", w.instance)).await,
        [assigned.name.clone(), named.name.clone()]
    );

    // A session or run on a terminated instance is refused.
    w.acme
        .admin
        .clone()
        .delete_instance(req::delete_instance(&w.acme.instance_name("web", "other")))
        .await
        .must();
    let refused = w
        .client
        .clone()
        .create_session(create_session(
            &w.project,
            "late",
            &w.acme.instance_name("web", "other"),
        ))
        .await;
    assert_status(refused, Code::FailedPrecondition, "INSTANCE_TERMINATED");
    let refused = w.try_run(create_run(&on_other.name, spec("hi"))).await;
    assert_status(refused, Code::FailedPrecondition, "INSTANCE_TERMINATED");
    let missing = w
        .client
        .clone()
        .get_session(get_session(&w.session_name("nope")))
        .await;
    assert_status(missing, Code::NotFound, "RESOURCE_NOT_FOUND");
});

backend_tests!(
    delete_session_refuses_while_busy_and_removes_everything_when_idle,
    |app| async move {
        let w = World::setup(&app).await;
        let session = w.session("s").await;
        let run = w.run(&session.name, "hello").await;
        let delete = || {
            let client = w.client.clone();
            let name = session.name.clone();
            async move {
                client
                    .clone()
                    .delete_session(pb::DeleteSessionRequest {
                        name,
                        request_id: String::new(),
                    })
                    .await
                    .map(|r| r.into_inner())
            }
        };
        // QUEUED is busy.
        assert_status(delete().await, Code::FailedPrecondition, "SESSION_BUSY");
        // RUNNING is busy.
        let task = w.worker.claim().await;
        assert_status(delete().await, Code::FailedPrecondition, "SESSION_BUSY");
        assert_eq!(w.get_run(&run.name).await.status, RunStatus::Running as i32);
        w.worker.complete(&task.task_token, "bye").await;

        delete().await.expect("an idle session is deleted");
        let get = w
            .client
            .clone()
            .get_session(get_session(&session.name))
            .await;
        assert_status(get, Code::NotFound, "RESOURCE_NOT_FOUND");
        let get = w.client.clone().get_run(get_run(&run.name)).await;
        assert_status(get, Code::NotFound, "RESOURCE_NOT_FOUND");
        let messages = w
            .client
            .clone()
            .list_messages(list_messages(&session.name, true, 10, ""))
            .await;
        assert_status(messages, Code::NotFound, "RESOURCE_NOT_FOUND");
        let events = w
            .client
            .clone()
            .stream_run_events(stream_events(&run.name, 0))
            .await;
        assert_eq!(events.map(|_| ()).unwrap_err().code(), Code::NotFound);
        assert_status(delete().await, Code::NotFound, "RESOURCE_NOT_FOUND");
        // The id can be used again, from scratch.
        let again = w.session("s").await;
        assert_eq!(again.message_count, 0);
        assert!(w.runs(&again.name, "").await.is_empty());
        // So are REQUIRES_ACTION and CANCELLING, on another session.
        let other = w.session("other").await;
        let waiting = w.run(&other.name, "plan").await;
        let task = w.worker.claim().await;
        w.worker
            .propose(&task.task_token, vec![step(WRITE_TOOL, json!({}))])
            .await
            .unwrap();
        let delete_other = || {
            let client = w.client.clone();
            let name = other.name.clone();
            async move {
                client
                    .clone()
                    .delete_session(pb::DeleteSessionRequest {
                        name,
                        request_id: String::new(),
                    })
                    .await
            }
        };
        assert_status(
            delete_other().await,
            Code::FailedPrecondition,
            "SESSION_BUSY",
        );
        let decided = w.get_run(&waiting.name).await.approval.unwrap();
        w.client
            .clone()
            .decide_approval(decide(
                &waiting.name,
                &decided.approval_id,
                pb::ApprovalDecision::Approve,
                "",
            ))
            .await
            .must();
        let task = w.worker.claim().await;
        assert_eq!(task.run.as_ref().unwrap().name, waiting.name);
        w.cancel(&waiting.name, "").await.unwrap();
        assert_status(
            delete_other().await,
            Code::FailedPrecondition,
            "SESSION_BUSY",
        );
        w.worker
            .fail(&task.task_token, "Cancelled", false)
            .await
            .unwrap();
        delete_other()
            .await
            .expect("idle once the cancel is confirmed");
    }
);

backend_tests!(
    a_waiting_poll_returns_empty_after_its_wait_and_wakes_when_work_arrives,
    |app| async move {
        let w = World::setup(&app).await;
        let started = Instant::now();
        assert!(
            w.worker
                .poll(Duration::from_secs(1), Duration::from_secs(30))
                .await
                .is_none()
        );
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_millis(900) && waited < Duration::from_secs(5),
            "an empty poll waits about its wait: {waited:?}"
        );
        let started = Instant::now();
        assert!(
            w.worker
                .poll(Duration::ZERO, Duration::from_secs(30))
                .await
                .is_none()
        );
        assert!(
            started.elapsed() < Duration::from_millis(900),
            "zero: do not wait"
        );

        let session = w.session("s").await;
        let waiting = {
            let worker = w.worker.clone();
            tokio::spawn(async move {
                let task = worker.poll(SOON, Duration::from_secs(30)).await;
                (Instant::now(), task)
            })
        };
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(!waiting.is_finished());
        let created = Instant::now();
        let run = w.run(&session.name, "wake up").await;
        let (claimed, task) = waiting.await.unwrap();
        let latency = claimed.duration_since(created);
        println!("CreateRun → waiting PollTask returned: {latency:?}");
        assert_eq!(task.expect("the new run").run.unwrap().name, run.name);
        assert!(
            latency < Duration::from_millis(1500),
            "the poll woke after {latency:?}"
        );
    }
);

backend_tests!(
    worker_calls_retried_with_the_same_request_id_replay,
    |app| async move {
        let w = World::setup(&app).await;
        let session = w.session("s").await;
        let run = w.run(&session.name, "once").await;
        let task = w.worker.claim().await;
        let append = |request_id: &str, text: &str| pb::AppendRunEventsRequest {
            task_token: task.task_token.clone(),
            events: vec![delta("m", text), said(assistant(text))],
            request_id: request_id.into(),
        };
        let mut client = w.worker.client.clone();
        let first = client
            .append_run_events(append("a-1", "hello"))
            .await
            .must();
        let again = client
            .append_run_events(append("a-1", "hello"))
            .await
            .must();
        assert_eq!(
            again.last_sequence, first.last_sequence,
            "the retry appends nothing"
        );
        let reused = client.append_run_events(append("a-1", "other")).await;
        assert_status(reused, Code::InvalidArgument, "REQUEST_ID_REUSED");
        assert_eq!(w.get_run(&run.name).await.last_sequence, 4);
        assert_eq!(w.messages(&session.name, false).await.len(), 2);

        let complete = || pb::CompleteTaskRequest {
            task_token: task.task_token.clone(),
            output: vec![assistant("bye")],
            usage: Some(usage(1, 1, 0.0)),
            stop_reason: 0,
            request_id: "c-1".into(),
            events: vec![],
        };
        let done = client.complete_task(complete()).await.must();
        assert_eq!(done.status, RunStatus::Succeeded as i32);
        // The reply was lost and the worker retries: the first result, not STALE_TASK.
        let replay = client.complete_task(complete()).await.must();
        assert_eq!(
            (replay.name.as_str(), replay.status),
            (run.name.as_str(), done.status)
        );
        let log = w.finished_log(&run.name).await;
        assert_eq!(
            describe_all(&log),
            [
                "status none->QUEUED",
                "status QUEUED->RUNNING",
                "delta m \"hello\"",
                "message ASSISTANT \"hello\"",
                "message ASSISTANT \"bye\"",
                "usage 1/1",
                "status RUNNING->SUCCEEDED END_TURN",
            ]
        );
        assert_eq!(w.get_run(&run.name).await.usage.unwrap().input_tokens, 1);
        // A new request id on a finished run is stale.
        let fresh = pb::CompleteTaskRequest {
            request_id: "c-2".into(),
            ..complete()
        };
        assert_status(
            client.complete_task(fresh).await,
            Code::FailedPrecondition,
            "STALE_TASK",
        );
    }
);

backend_tests!(
    many_watchers_joining_at_different_points_each_see_the_whole_log_once,
    |app| async move {
        let w = World::setup(&app).await;
        let session = w.session("s").await;
        let run = w.run(&session.name, "go").await;
        let task = w.worker.claim().await;
        let mut watchers = Vec::new();
        let spawn_watcher = |after: i64| {
            let client = w.client.clone();
            let name = run.name.clone();
            tokio::spawn(async move {
                let mut stream = client
                    .clone()
                    .stream_run_events(stream_events(&name, after))
                    .await
                    .expect("StreamRunEvents")
                    .into_inner();
                (
                    after,
                    read_to_end(&mut stream, Duration::from_secs(30)).await,
                )
            })
        };
        watchers.push(spawn_watcher(0));
        for round in 0..10 {
            let batch = (0..10)
                .map(|i| delta("m", &format!("r{round}-{i}")))
                .collect();
            let last = w.worker.append(&task.task_token, batch).await;
            watchers.push(spawn_watcher(0));
            watchers.push(spawn_watcher(last));
            watchers.push(spawn_watcher(last / 2));
        }
        w.worker.complete(&task.task_token, "end").await;
        let full = w.finished_log(&run.name).await;
        assert_eq!(full.len(), 2 + 100 + 2);
        for watcher in watchers {
            let (after, seen) = watcher.await.expect("watcher");
            assert_eq!(seen, full[after as usize..], "the watcher from {after}");
        }
    }
);

backend_tests!(
    concurrent_appends_on_one_lease_stay_gapless_and_in_batch_order,
    |app| async move {
        let w = World::setup(&app).await;
        let session = w.session("s").await;
        let run = w.run(&session.name, "go").await;
        let task = w.worker.claim().await;
        let mut writers = Vec::new();
        for k in 0..4 {
            let worker = w.worker.clone();
            let token = task.task_token.clone();
            writers.push(tokio::spawn(async move {
                for i in 0..30 {
                    let batch = (0..3)
                        .map(|j| delta(&format!("t{k}"), &format!("{i}.{j}")))
                        .collect();
                    worker.append(&token, batch).await;
                }
            }));
        }
        for writer in writers {
            writer.await.expect("writer");
        }
        let log = w.log(&run.name).await;
        assert_eq!(log.len(), 2 + 4 * 30 * 3);
        for k in 0..4 {
            let id = format!("t{k}");
            let texts: Vec<String> = log
                .iter()
                .filter_map(|e| match e.kind.as_ref() {
                    Some(Kind::MessageDelta(d)) if d.message_id == id => Some(d.text.clone()),
                    _ => None,
                })
                .collect();
            let expected: Vec<String> = (0..30)
                .flat_map(|i| (0..3).map(move |j| format!("{i}.{j}")))
                .collect();
            assert_eq!(texts, expected, "writer {k}: each event once, in order");
        }
        // A batch is contiguous: all-or-none and in order.
        for window in log[2..].chunks(3) {
            let ids: Vec<_> = window
                .iter()
                .map(|e| match e.kind.as_ref() {
                    Some(Kind::MessageDelta(d)) => d.message_id.clone(),
                    other => panic!("{other:?}"),
                })
                .collect();
            assert!(
                ids.iter().all(|id| *id == ids[0]),
                "a batch was interleaved: {ids:?}"
            );
        }
        w.worker.complete(&task.task_token, "ok").await;
    }
);

backend_tests!(
    a_worker_gets_only_runs_of_its_agents_oldest_first,
    |app| async move {
        let w = World::setup(&app).await;
        let other = w.acme.agent("other", tool_agent()).await;
        let bot2 = w
            .acme
            .instance(
                "web",
                "bot2",
                pb::Instance {
                    agent: other.name.clone(),
                    ..Default::default()
                },
            )
            .await;
        let mut runs = Vec::new();
        for (i, instance) in [&w.instance, &bot2.name, &w.instance, &bot2.name]
            .into_iter()
            .enumerate()
        {
            let session = w.session_with(&format!("s{i}"), instance).await;
            runs.push(w.run(&session.name, "x").await.name);
        }
        // `helper` only: its two runs, oldest first, then nothing.
        let first = w.worker.claim().await;
        let second = w.worker.claim().await;
        assert_eq!(first.run.unwrap().name, runs[0]);
        assert_eq!(second.run.unwrap().name, runs[2]);
        assert_eq!(second.agent.unwrap().name, w.agent);
        w.worker.expect_nothing(Duration::from_millis(500)).await;
        // A worker of both agents gets the rest, oldest first.
        let both = Worker {
            agents: vec![w.agent.clone(), other.name.clone()],
            ..w.worker.clone()
        };
        let third = both.claim().await;
        assert_eq!(third.run.unwrap().name, runs[1]);
        assert_eq!(third.agent.unwrap().name, other.name);
        assert_eq!(third.instance.unwrap().name, bot2.name);
        assert_eq!(both.claim().await.run.unwrap().name, runs[3]);
        both.expect_nothing(Duration::ZERO).await;
    }
);

backend_tests!(
    runs_carry_their_context_bindings_and_labels,
    |app| async move {
        let w = World::setup(&app).await;
        w.acme.project("elsewhere").await;
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", app.addr))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut contexts = pb::context_service_client::ContextServiceClient::with_interceptor(
            channel,
            Bearer::new(&w.acme.admin_key),
        );
        for project in ["web", "elsewhere"] {
            contexts
                .create_context(pb::CreateContextRequest {
                    parent: w.acme.project_name(project),
                    context_id: "memory".into(),
                    context: Some(pb::Context::default()),
                    data: Some(to_value(json!({"facts": []}))),
                    request_id: String::new(),
                })
                .await
                .must();
        }
        let session = w.session("s").await;
        let memory = format!("{}/contexts/memory", w.project);
        let run = w
            .start(
                &session.name,
                pb::Run {
                    contexts: vec![pb::ContextBinding {
                        context: memory.clone(),
                        alias: String::new(),
                    }],
                    labels: [("team".to_string(), "search".to_string())].into(),
                    ..spec("remember")
                },
            )
            .await;
        assert_eq!(
            run.contexts,
            [pb::ContextBinding {
                context: memory.clone(),
                alias: "memory".into()
            }],
            "the alias defaults to the context id"
        );
        assert_eq!(run.labels.get("team").map(String::as_str), Some("search"));
        let task = w.worker.claim().await;
        assert_eq!(task.run.unwrap().contexts, run.contexts);

        let foreign = pb::ContextBinding {
            context: format!("{}/contexts/memory", w.acme.project_name("elsewhere")),
            alias: "theirs".into(),
        };
        let other_session = w.session("t").await;
        let result = w
            .try_run(create_run(
                &other_session.name,
                pb::Run {
                    contexts: vec![foreign],
                    ..spec("x")
                },
            ))
            .await;
        assert_eq!(
            result.unwrap_err().code(),
            Code::InvalidArgument,
            "a context of another project"
        );
        assert!(w.runs(&other_session.name, "").await.is_empty());
    }
);

backend_tests!(
    success_closes_the_tool_calls_left_open_as_failed,
    |app| async move {
        let w = World::setup(&app).await;
        let session = w.session("s").await;
        let run = w.run(&session.name, "go").await;
        let task = w.worker.claim().await;
        w.worker
            .append(
                &task.task_token,
                vec![
                    tool_started("c1", READ_TOOL, json!({})),
                    tool_started("c2", WRITE_TOOL, json!({})),
                    tool_completed("c2", WRITE_TOOL, json!({"ok": true})),
                ],
            )
            .await;
        let done = w.worker.complete(&task.task_token, "done anyway").await;
        assert_eq!(done.status, RunStatus::Succeeded as i32);
        let story = describe_all(&w.finished_log(&run.name).await);
        assert_eq!(
            story[5..],
            [
                "message ASSISTANT \"done anyway\"",
                "tool_completed c1 search synthetic",
                "status RUNNING->SUCCEEDED END_TURN",
            ]
            .map(String::from)[..],
            "{story:#?}"
        );
        let tool = w
            .messages(&session.name, false)
            .await
            .into_iter()
            .filter(|m| m.role == MessageRole::Tool as i32)
            .map(|m| m.tool_call.unwrap())
            .find(|c| c.id == "c1")
            .expect("a TOOL message closes c1");
        assert!(tool.is_error);
        assert_eq!(
            from_value(tool.result.as_ref().unwrap()),
            json!({"status": "failed"})
        );
    }
);

backend_tests!(a_lease_defaults_to_30_seconds, |app| async move {
    let w = World::setup(&app).await;
    let session = w.session("s").await;
    w.run(&session.name, "go").await;
    let request = pb::PollTaskRequest {
        lease_duration: None,
        ..w.worker.poll_request(SOON, Duration::from_secs(30))
    };
    let task = w
        .worker
        .client
        .clone()
        .poll_task(request)
        .await
        .must()
        .task
        .expect("a task");
    let lease = (nanos(&task.lease_expire_time) - now_nanos()) as f64 / 1e9;
    assert!((25.0..=31.0).contains(&lease), "lease of {lease} s");
});

backend_tests!(
    a_slow_reader_on_a_small_window_still_gets_every_event,
    |app| async move {
        // The reader takes nothing while 2000 events of 1 KiB go by, over a connection whose
        // flow-control window holds only a few of them: the server must hold back, not skip.
        let w = World::setup(&app).await;
        let session = w.session("s").await;
        let run = w.run(&session.name, "flood").await;
        let task = w.worker.claim().await;
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", app.addr))
            .unwrap()
            .initial_stream_window_size(65_535)
            .initial_connection_window_size(65_535)
            .connect()
            .await
            .unwrap();
        let mut slow = pb::execution_service_client::ExecutionServiceClient::with_interceptor(
            channel,
            Bearer::new(&w.acme.admin_key),
        );
        let mut stream = slow
            .stream_run_events(stream_events(&run.name, 0))
            .await
            .must();
        let pad = "x".repeat(1024);
        for i in 0..20 {
            let batch = (0..100)
                .map(|j| delta("m", &format!("{i}.{j} {pad}")))
                .collect();
            w.worker.append(&task.task_token, batch).await;
        }
        w.worker.complete(&task.task_token, "done").await;
        let mut last = 0;
        let mut count = 0;
        loop {
            match tokio::time::timeout(Duration::from_secs(30), stream.message()).await {
                Ok(Ok(Some(m))) => {
                    let e = m.event.unwrap();
                    assert_eq!(e.sequence, last + 1, "a slow reader skipped an event");
                    last = e.sequence;
                    count += 1;
                    if count % 500 == 0 {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
                Ok(Ok(None)) => break,
                other => panic!("the stream failed after {last}: {other:?}"),
            }
        }
        assert_eq!(last, 2 + 2000 + 2, "everything, up to the terminal event");
    }
);

backend_tests!(
    client_writes_retried_with_the_same_request_id_replay,
    |app| async move {
        let w = World::setup(&app).await;
        let mut c = w.client.clone();
        // CreateSession.
        let create = || pb::CreateSessionRequest {
            request_id: "sess-1".into(),
            ..create_session(&w.project, "s", &w.instance)
        };
        let first = c.create_session(create()).await.must();
        let again = c
            .create_session(create())
            .await
            .expect("a replayed CreateSession");
        assert_eq!(again.into_inner().name, first.name, "not ALREADY_EXISTS");
        let other = pb::CreateSessionRequest {
            request_id: "sess-1".into(),
            ..create_session(&w.project, "t", &w.instance)
        };
        assert_status(
            c.create_session(other).await,
            Code::InvalidArgument,
            "REQUEST_ID_REUSED",
        );

        // CancelRun: the retry answers like the first call and writes nothing more.
        let run = w.run(&first.name, "cancel me").await;
        let cancel_once = || pb::CancelRunRequest {
            request_id: "cancel-1".into(),
            ..cancel(&run.name, "once")
        };
        let cancelled = c.cancel_run(cancel_once()).await.must();
        let replayed = c.cancel_run(cancel_once()).await.must();
        assert_eq!(replayed.status, cancelled.status);
        assert_eq!(w.get_run(&run.name).await.last_sequence, 2);

        // DecideApproval: the retry is not APPROVAL_NOT_PENDING.
        let run = w.run(&first.name, "plan").await;
        let task = w.worker.claim().await;
        let reply = w
            .worker
            .propose(&task.task_token, vec![step(WRITE_TOOL, json!({}))])
            .await
            .unwrap();
        let id = reply.approval.unwrap().approval_id;
        let decide_once = || pb::DecideApprovalRequest {
            request_id: "decide-1".into(),
            ..decide(&run.name, &id, pb::ApprovalDecision::Approve, "ok")
        };
        let decided = c.decide_approval(decide_once()).await.must();
        let replayed = c
            .decide_approval(decide_once())
            .await
            .expect("a replayed DecideApproval");
        assert_eq!(replayed.into_inner().approval, decided.approval);
        assert_eq!(
            w.story(&run.name)
                .await
                .iter()
                .filter(|e| e.starts_with("decided "))
                .count(),
            1
        );
        let task = w.worker.claim().await;
        w.worker.complete(&task.task_token, "done").await;

        // DeleteSession: a retried delete is not NOT_FOUND.
        let delete = || pb::DeleteSessionRequest {
            name: first.name.clone(),
            request_id: "del-1".into(),
        };
        c.delete_session(delete()).await.must();
        c.delete_session(delete())
            .await
            .expect("a retried delete is not NOT_FOUND");
        let gone = c.get_session(get_session(&first.name)).await;
        assert_status(gone, Code::NotFound, "RESOURCE_NOT_FOUND");
    }
);

/// A session `s`, a run "go" in it, and its task, claimed.
async fn claimed(w: &World) -> (pb::Session, pb::Run, pb::Task) {
    let session = w.session("s").await;
    let run = w.run(&session.name, "go").await;
    (session, run, w.worker.claim().await)
}

backend_tests!(
    complete_task_appends_its_events_before_the_output_in_one_step,
    |app| async move {
        let w = World::setup(&app).await;
        let (session, run, task) = claimed(&w).await;
        w.worker
            .append(&task.task_token, vec![delta("m0", "first")])
            .await;
        let complete = |request_id: &str, last: &str| pb::CompleteTaskRequest {
            task_token: task.task_token.clone(),
            events: vec![
                delta("m1", "thinking"),
                said(assistant("thought")),
                tool_started("c1", READ_TOOL, json!({"q": "rust"})),
                tool_completed("c1", READ_TOOL, json!({"hits": 1})),
                tool_started("c2", READ_TOOL, json!({"q": last})),
            ],
            output: vec![assistant(last)],
            usage: Some(usage(2, 1, 0.0)),
            request_id: request_id.into(),
            ..Default::default()
        };
        let mut client = w.worker.client.clone();
        let done = client.complete_task(complete("c-1", "done")).await.must();
        assert_eq!(done.status, RunStatus::Succeeded as i32);
        let expected = [
            "status none->QUEUED",
            "status QUEUED->RUNNING",
            "delta m0 \"first\"",
            "delta m1 \"thinking\"",
            "message ASSISTANT \"thought\"",
            "tool_started c1 search",
            "tool_completed c1 search",
            "tool_started c2 search",
            "message ASSISTANT \"done\"",
            "usage 2/1",
            "tool_completed c2 search synthetic",
            "status RUNNING->SUCCEEDED END_TURN",
        ];
        let log = w.finished_log(&run.name).await;
        assert_gapless(&run.name, &log);
        assert_eq!(describe_all(&log), expected);
        assert_eq!(done.last_sequence, expected.len() as i64);
        assert_eq!(
            transcript(&w.messages(&session.name, false).await),
            [
                line("USER", "go", ""),
                line("ASSISTANT", "thought", ""),
                line("ASSISTANT", "", "c1"),
                line("TOOL", "", "c1"),
                line("ASSISTANT", "", "c2"),
                line("ASSISTANT", "done", ""),
                line("TOOL", "", "c2"),
            ],
            "the events' messages, the output, then the call the ending closed"
        );

        // A retry (the reply was lost) answers the first result and appends nothing.
        let replay = client.complete_task(complete("c-1", "done")).await.must();
        assert_eq!(
            (replay.last_sequence, replay.status),
            (done.last_sequence, done.status)
        );
        let reused = client.complete_task(complete("c-1", "other")).await;
        assert_status(reused, Code::InvalidArgument, "REQUEST_ID_REUSED");
        assert_eq!(w.story(&run.name).await, expected);
        assert_eq!(w.messages(&session.name, false).await.len(), 7);
    }
);

backend_tests!(
    a_refused_complete_task_with_events_leaves_nothing,
    |app| async move {
        let w = World::setup(&app).await;
        let (session, run, task) = claimed(&w).await;
        let complete = |events: Vec<pb::RunEventInput>| pb::CompleteTaskRequest {
            task_token: task.task_token.clone(),
            events,
            output: vec![assistant("done")],
            ..Default::default()
        };
        let mut client = w.worker.client.clone();
        // Refused by the state machine after earlier events of the batch were accepted.
        let unknown_call = vec![
            said(assistant("partial")),
            tool_completed("nope", READ_TOOL, json!({})),
        ];
        let refused = client.complete_task(complete(unknown_call)).await;
        assert_status(refused, Code::InvalidArgument, "INVALID_ARGUMENT");
        // Refused before the write: a tool the pinned revision does not have.
        let unknown_tool = vec![tool_started("c1", "no_such_tool", json!({}))];
        let refused = client.complete_task(complete(unknown_tool)).await;
        assert_status(refused, Code::InvalidArgument, "INVALID_ARGUMENT");
        let too_many = vec![delta("m", "x"); 1001];
        let refused = client.complete_task(complete(too_many)).await;
        assert_status(refused, Code::InvalidArgument, "INVALID_ARGUMENT");
        assert_eq!(
            w.story(&run.name).await,
            ["status none->QUEUED", "status QUEUED->RUNNING"]
        );
        let running = w.get_run(&run.name).await;
        assert_eq!(
            (running.status, running.last_sequence),
            (RunStatus::Running as i32, 2)
        );
        assert_eq!(w.messages(&session.name, false).await.len(), 1);

        // The lease still holds: the same completion without the bad event goes through.
        let done = client
            .complete_task(complete(vec![said(assistant("partial"))]))
            .await
            .must();
        assert_eq!(done.status, RunStatus::Succeeded as i32);
        assert_eq!(
            w.story(&run.name).await,
            [
                "status none->QUEUED",
                "status QUEUED->RUNNING",
                "message ASSISTANT \"partial\"",
                "message ASSISTANT \"done\"",
                "status RUNNING->SUCCEEDED END_TURN",
            ]
        );
    }
);
