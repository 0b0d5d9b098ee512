//! Bad and hostile input to ExecutionService: event batches that are empty, too long,
//! too big, kindless or inconsistent; enum values outside the proto; malformed names;
//! tampered task tokens; out-of-range worker settings. Every case is a canonical error,
//! writes nothing (last_sequence, the log and the transcript stay as they were) and
//! leaves the lease and the server working.

mod execution_support;

use std::time::Duration;

use agentry_e2e::*;
use execution_support::*;
use pb::{MessageRole, RunStatus};
use tonic::Code;

/// A run leased by the worker with 4 events: QUEUED, RUNNING, tool call `c1` started,
/// and a delta. Returns (session name, run name, token).
async fn leased(w: &World) -> (String, String, String) {
    let session = w.session("s").await;
    let run = w.run(&session.name, "hi").await;
    let task = w.worker.claim().await;
    let last = w
        .worker
        .append(
            &task.task_token,
            vec![tool_started("c1", READ_TOOL, json!({})), delta("m", "a")],
        )
        .await;
    assert_eq!(last, 4);
    (session.name, run.name, task.task_token)
}

/// The run still has exactly the log `log`, its transcript `messages` and its lease.
async fn assert_unchanged(
    w: &World,
    session: &str,
    run: &str,
    token: &str,
    log: &[pb::RunEvent],
    messages: &[pb::Message],
) {
    let now = w.get_run(run).await;
    assert_eq!(now.last_sequence, log.len() as i64, "last_sequence moved");
    assert_eq!(now.status, RunStatus::Running as i32);
    assert_eq!(w.log(run).await, log);
    assert_eq!(w.messages(session, true).await, messages);
    w.worker
        .heartbeat(token, Duration::ZERO)
        .await
        .expect("the lease survives bad calls");
}

fn raw_message(role: i32, text: &str) -> pb::Message {
    pb::Message {
        role,
        content: text.into(),
        ..Default::default()
    }
}

backend_tests!(
    bad_event_batches_are_refused_whole_and_write_nothing,
    |app| async move {
        let w = World::setup(&app).await;
        let (session, run, token) = leased(&w).await;
        let log = w.log(&run).await;
        let messages = w.messages(&session, true).await;

        let too_many: Vec<_> = (0..1001).map(|i| delta("m", &i.to_string())).collect();
        let kindless = pb::RunEventInput { kind: None };
        let cases: Vec<(&str, Vec<pb::RunEventInput>)> = vec![
            ("no events", vec![]),
            ("1001 events", too_many),
            ("an event with no kind", vec![delta("m", "ok"), kindless]),
            (
                "an unknown role",
                vec![delta("m", "ok"), said(raw_message(99, "x"))],
            ),
            (
                "an unspecified role",
                vec![said(raw_message(MessageRole::Unspecified as i32, "x"))],
            ),
            (
                "a started id used before",
                vec![delta("m", "ok"), tool_started("c1", READ_TOOL, json!({}))],
            ),
            (
                "the same id twice in one batch",
                vec![
                    tool_started("c9", READ_TOOL, json!({})),
                    tool_started("c9", READ_TOOL, json!({})),
                ],
            ),
            (
                "a completion of a call never started",
                vec![
                    said(assistant("ok")),
                    tool_completed("nope", READ_TOOL, json!({})),
                ],
            ),
        ];
        for (what, events) in cases {
            let result = w.worker.try_append(&token, events).await;
            let status = result.expect_err(&format!("{what} is refused"));
            assert_eq!(status.code(), Code::InvalidArgument, "{what}: {status:?}");
            assert!(
                status.message().len() < 4096,
                "{what}: the error echoes its input"
            );
            assert_unchanged(&w, &session, &run, &token, &log, &messages).await;
        }

        // More than 4 MiB in one request.
        let huge = custom("blob", json!({"s": "x".repeat(5 << 20)}));
        let status = w
            .worker
            .try_append(&token, vec![huge])
            .await
            .expect_err("a 5 MiB batch is refused");
        assert_status(
            Err::<(), _>(status),
            Code::ResourceExhausted,
            "MESSAGE_TOO_LARGE",
        );
        assert_unchanged(&w, &session, &run, &token, &log, &messages).await;

        // Exactly 1000 is fine, and lands in order.
        let thousand: Vec<_> = (1..=1000).map(|i| delta("m", &i.to_string())).collect();
        assert_eq!(w.worker.append(&token, thousand).await, 1004);
        let all = w.log(&run).await;
        assert_eq!(describe(&all[4]), "delta m \"1\"");
        assert_eq!(describe(&all[1003]), "delta m \"1000\"");
    }
);

/// Variations of a valid token that must not be accepted as it.
fn tampered(token: &str) -> Vec<(String, String)> {
    let mid = token.len() / 2;
    let flip = |at: usize| {
        let mut bytes = token.as_bytes().to_vec();
        bytes[at] = if bytes[at] == b'A' { b'B' } else { b'A' };
        String::from_utf8(bytes).expect("ASCII token")
    };
    vec![
        ("empty".into(), String::new()),
        ("garbage".into(), "not-a-token".into()),
        ("a flipped middle character".into(), flip(mid)),
        ("a flipped last character".into(), flip(token.len() - 1)),
        ("a flipped first character".into(), flip(0)),
        ("truncated".into(), token[..mid].to_string()),
        ("extended".into(), format!("{token}AAAA")),
        ("huge".into(), "A".repeat(100_000)),
        ("non-ASCII".into(), format!("{}é", &token[..mid])),
    ]
}

backend_tests!(
    tampered_task_tokens_are_invalid_argument_and_change_nothing,
    |app| async move {
        let w = World::setup(&app).await;
        let (session, run, token) = leased(&w).await;
        let log = w.log(&run).await;
        let messages = w.messages(&session, true).await;
        for (what, bad) in tampered(&token) {
            assert_ne!(bad, token);
            let field = "task_token";
            let beat = w.worker.heartbeat(&bad, Duration::ZERO).await;
            assert_invalid(beat, "INVALID_ARGUMENT", field);
            let append = w.worker.try_append(&bad, vec![delta("m", "x")]).await;
            assert_invalid(append, "INVALID_ARGUMENT", field);
            let plan = w
                .worker
                .propose(&bad, vec![step(READ_TOOL, json!({}))])
                .await;
            assert_invalid(plan, "INVALID_ARGUMENT", field);
            let complete = w
                .worker
                .try_complete(&bad, vec![assistant("x")], None)
                .await;
            assert_invalid(complete, "INVALID_ARGUMENT", field);
            let fail = w.worker.fail(&bad, "X", false).await;
            let status = assert_invalid(fail, "INVALID_ARGUMENT", field);
            assert!(
                status.message().len() < 4096,
                "{what}: the error echoes the token"
            );
        }
        assert_unchanged(&w, &session, &run, &token, &log, &messages).await;
    }
);

backend_tests!(
    bad_run_specs_are_invalid_argument_and_create_nothing,
    |app| async move {
        let w = World::setup(&app).await;
        let session = w.session("s").await;
        let bad_policy = |policy: pb::RetryPolicy| pb::Run {
            retry_policy: Some(policy),
            ..spec("x")
        };
        let cases: Vec<(&str, pb::Run)> = vec![
            (
                "autonomy 99",
                pb::Run {
                    autonomy_level: 99,
                    ..spec("x")
                },
            ),
            (
                "multitask 99",
                pb::Run {
                    multitask_strategy: 99,
                    ..spec("x")
                },
            ),
            (
                "input role 99",
                pb::Run {
                    input: vec![raw_message(99, "x")],
                    ..spec("x")
                },
            ),
            (
                "input role TOOL",
                pb::Run {
                    input: vec![raw_message(MessageRole::Tool as i32, "x")],
                    ..spec("x")
                },
            ),
            (
                "input role UNSPECIFIED",
                pb::Run {
                    input: vec![user("ok"), raw_message(0, "x")],
                    ..spec("x")
                },
            ),
            (
                "negative timeout",
                pb::Run {
                    timeout: Some(prost_types::Duration {
                        seconds: -5,
                        nanos: 0,
                    }),
                    ..spec("x")
                },
            ),
            (
                "backoff coefficient below 1",
                bad_policy(pb::RetryPolicy {
                    backoff_coefficient: 0.5,
                    ..Default::default()
                }),
            ),
            (
                "negative max_attempts",
                bad_policy(pb::RetryPolicy {
                    max_attempts: -1,
                    ..Default::default()
                }),
            ),
            (
                "negative initial_interval",
                bad_policy(pb::RetryPolicy {
                    initial_interval: Some(prost_types::Duration {
                        seconds: -1,
                        nanos: 0,
                    }),
                    ..Default::default()
                }),
            ),
        ];
        for (what, run) in cases {
            let result = w.try_run(create_run(&session.name, run)).await;
            let status = result.expect_err(&format!("{what} is refused"));
            assert_eq!(status.code(), Code::InvalidArgument, "{what}: {status:?}");
        }
        let huge = w
            .try_run(create_run(&session.name, spec(&"x".repeat(5 << 20))))
            .await
            .expect_err("a 5 MiB input is refused");
        assert_status(
            Err::<(), _>(huge),
            Code::ResourceExhausted,
            "MESSAGE_TOO_LARGE",
        );
        assert!(
            w.runs(&session.name, "").await.is_empty(),
            "no run was created"
        );
        assert!(w.messages(&session.name, true).await.is_empty());
        let s = w.get_session(&session.name).await;
        assert_eq!((s.active_run.as_str(), s.message_count), ("", 0));
        // The session still works.
        w.run(&session.name, "fine").await;
    }
);

backend_tests!(
    out_of_range_enums_in_worker_and_decision_calls_are_refused,
    |app| async move {
        let w = World::setup(&app).await;
        let (session, run, token) = leased(&w).await;
        let log = w.log(&run).await;
        let messages = w.messages(&session, true).await;
        let complete = w
            .worker
            .client
            .clone()
            .complete_task(pb::CompleteTaskRequest {
                task_token: token.clone(),
                output: vec![assistant("x")],
                usage: None,
                stop_reason: 99,
                request_id: String::new(),
                events: vec![],
            })
            .await;
        assert_status(complete, Code::InvalidArgument, "INVALID_ARGUMENT");
        let complete = w
            .worker
            .try_complete(&token, vec![raw_message(42, "x")], None)
            .await;
        assert_eq!(complete.unwrap_err().code(), Code::InvalidArgument);
        assert_unchanged(&w, &session, &run, &token, &log, &messages).await;

        let other = w.session("other").await;
        let plan_run = w.run(&other.name, "plan").await;
        let task = loop {
            // The first run is leased already; this claims the second.
            let task = w.worker.claim().await;
            if task.run.as_ref().unwrap().name == plan_run.name {
                break task;
            }
        };
        let reply = w
            .worker
            .propose(&task.task_token, vec![step(WRITE_TOOL, json!({}))])
            .await
            .unwrap();
        let approval_id = reply.approval.unwrap().approval_id;
        let result = w
            .client
            .clone()
            .decide_approval(pb::DecideApprovalRequest {
                name: plan_run.name.clone(),
                approval_id,
                decision: 99,
                comment: String::new(),
                request_id: String::new(),
            })
            .await;
        assert_eq!(result.unwrap_err().code(), Code::InvalidArgument);
        assert_eq!(
            w.get_run(&plan_run.name).await.status,
            RunStatus::RequiresAction as i32
        );
    }
);

backend_tests!(malformed_names_are_invalid_argument, |app| async move {
    let w = World::setup(&app).await;
    let session = w.session("s").await;
    let run = w.run(&session.name, "x").await;
    let p = w.project.clone();
    let bad_sessions = vec![
        String::new(),
        format!("{p}/sessions/"),
        format!("{p}/sessions/UPPER"),
        format!("{p}/sessions/s/extra"),
        format!("{p}/sessions/a\u{0}b"),
        format!("{p}/instances/bot"),
        p.clone(),
        format!("{}/sessions/s", w.acme.name),
        format!("{p}/sessions/{}", "a".repeat(100_000)),
    ];
    let mut c = w.client.clone();
    for name in &bad_sessions {
        assert_invalid(
            c.get_session(get_session(name)).await,
            "INVALID_ARGUMENT",
            "name",
        );
        assert_invalid(
            c.create_run(create_run(name, spec("x"))).await,
            "INVALID_ARGUMENT",
            "parent",
        );
        assert_invalid(
            c.list_messages(list_messages(name, false, 10, "")).await,
            "INVALID_ARGUMENT",
            "parent",
        );
    }
    let bad_runs = vec![
        String::new(),
        session.name.clone(),
        format!("{}/runs/", session.name),
        format!("{}/runs/NOT UUID", session.name),
        format!("{}/events/1", run.name),
        format!("{p}/runs/{}", run.name.rsplit('/').next().unwrap()),
    ];
    for name in &bad_runs {
        assert_invalid(c.get_run(get_run(name)).await, "INVALID_ARGUMENT", "name");
        assert_invalid(
            c.cancel_run(cancel(name, "")).await,
            "INVALID_ARGUMENT",
            "name",
        );
        let stream = c
            .stream_run_events(stream_events(name, 0))
            .await
            .map(|_| ());
        assert_invalid(stream, "INVALID_ARGUMENT", "name");
    }
    for parent in [
        "",
        "workspaces/acme",
        "workspaces/acme/projects/web/sessions",
        "x",
    ] {
        assert_invalid(
            c.create_session(create_session(parent, "ok", &w.instance))
                .await,
            "INVALID_ARGUMENT",
            "parent",
        );
        assert_invalid(
            c.list_runs(list_runs(parent, "", 10, "")).await,
            "INVALID_ARGUMENT",
            "parent",
        );
        let sessions = pb::ListSessionsRequest {
            parent: parent.into(),
            ..Default::default()
        };
        assert_invalid(
            c.list_sessions(sessions).await,
            "INVALID_ARGUMENT",
            "parent",
        );
        let stats = pb::GetRunStatsRequest {
            parent: parent.into(),
            ..Default::default()
        };
        assert_invalid(c.get_run_stats(stats).await, "INVALID_ARGUMENT", "parent");
    }
    for filter in ["instance = bot", "status = RUNNING", "instance ="] {
        let sessions = pb::ListSessionsRequest {
            parent: p.clone(),
            filter: filter.into(),
            ..Default::default()
        };
        let result = c.list_sessions(sessions).await;
        assert_eq!(
            result.unwrap_err().code(),
            Code::InvalidArgument,
            "ListSessions filter {filter:?}"
        );
    }
    for id in ["UPPER", "9lives", "under_score", "a/b"] {
        assert_invalid(
            c.create_session(create_session(&p, id, &w.instance)).await,
            "INVALID_ARGUMENT",
            "session_id",
        );
    }
    let bad_instance = c
        .create_session(create_session(
            &p,
            "ok",
            "workspaces/acme/projects/web/bots/x",
        ))
        .await;
    assert_eq!(bad_instance.unwrap_err().code(), Code::InvalidArgument);
    let no_instance = c.create_session(create_session(&p, "ok", "")).await;
    assert_eq!(no_instance.unwrap_err().code(), Code::InvalidArgument);
    let listed = c
        .list_sessions(pb::ListSessionsRequest {
            parent: p.clone(),
            page_size: 100,
            ..Default::default()
        })
        .await
        .must();
    assert_eq!(listed.sessions.len(), 1, "nothing was created");
    assert_eq!(w.runs(&session.name, "").await.len(), 1);
});

backend_tests!(bad_poll_requests_are_invalid_argument, |app| async move {
    let w = World::setup(&app).await;
    let session = w.session("s").await;
    let run = w.run(&session.name, "x").await;
    let base = w
        .worker
        .poll_request(Duration::ZERO, Duration::from_secs(30));
    let many: Vec<String> = (0..101)
        .map(|i| w.acme.agent_name(&format!("a{i}")))
        .collect();
    let cases: Vec<(&str, pb::PollTaskRequest)> = vec![
        (
            "no agents",
            pb::PollTaskRequest {
                agents: vec![],
                ..base.clone()
            },
        ),
        (
            "101 agents",
            pb::PollTaskRequest {
                agents: many,
                ..base.clone()
            },
        ),
        (
            "a malformed agent",
            pb::PollTaskRequest {
                agents: vec!["workspaces/acme/agents/BAD".into()],
                ..base.clone()
            },
        ),
        (
            "a malformed parent",
            pb::PollTaskRequest {
                parent: "acme".into(),
                ..base.clone()
            },
        ),
        (
            "a lease under 1 s",
            pb::PollTaskRequest {
                lease_duration: ms(500),
                ..base.clone()
            },
        ),
        (
            "a lease over 10 min",
            pb::PollTaskRequest {
                lease_duration: Some(prost_types::Duration {
                    seconds: 601,
                    nanos: 0,
                }),
                ..base.clone()
            },
        ),
        (
            "a negative wait",
            pb::PollTaskRequest {
                wait: Some(prost_types::Duration {
                    seconds: -1,
                    nanos: 0,
                }),
                ..base.clone()
            },
        ),
    ];
    for (what, request) in cases {
        let result = w.worker.client.clone().poll_task(request).await;
        let status = result.expect_err(&format!("{what} is refused"));
        assert_eq!(status.code(), Code::InvalidArgument, "{what}: {status:?}");
    }
    let untouched = w.get_run(&run.name).await;
    assert_eq!(
        (untouched.status, untouched.attempt),
        (RunStatus::Queued as i32, 0)
    );
    assert_eq!(untouched.last_sequence, 1);
    // A valid poll still gets it.
    let task = w.worker.claim().await;
    assert_eq!(task.run.unwrap().name, run.name);
    let beat = w
        .worker
        .client
        .clone()
        .heartbeat_task(pb::HeartbeatTaskRequest {
            task_token: task.task_token.clone(),
            wait: Some(prost_types::Duration {
                seconds: -1,
                nanos: 0,
            }),
        })
        .await;
    assert_eq!(beat.unwrap_err().code(), Code::InvalidArgument);
});

backend_tests!(
    a_tool_call_of_a_tool_the_agent_lacks_is_refused,
    |app| async move {
        // ToolCall.tool is "one of the pinned agent revision's tools".
        let w = World::setup(&app).await;
        let (session, run, token) = leased(&w).await;
        let log = w.log(&run).await;
        let messages = w.messages(&session, true).await;
        let result = w
            .worker
            .try_append(
                &token,
                vec![delta("m", "ok"), tool_started("c2", "rm_rf", json!({}))],
            )
            .await;
        assert_eq!(result.unwrap_err().code(), Code::InvalidArgument);
        let result = w
            .worker
            .try_append(&token, vec![tool_completed("c1", "rm_rf", json!({}))])
            .await;
        assert_eq!(
            result.unwrap_err().code(),
            Code::InvalidArgument,
            "a completion naming another tool than its call"
        );
        assert_unchanged(&w, &session, &run, &token, &log, &messages).await;
    }
);
