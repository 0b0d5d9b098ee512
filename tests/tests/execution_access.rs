//! Who may call what on ExecutionService: every role reads; ADMIN and DEVELOPER create,
//! cancel, decide and delete; only WORKER (and ROOT) keys lease and drive runs. Another
//! workspace's names and task tokens are PERMISSION_DENIED, and refused calls change
//! nothing.

mod execution_support;

use std::time::Duration;

use agentry_e2e::*;
use execution_support::*;
use pb::{ApprovalDecision as D, AutonomyLevel as L, RunStatus};
use tonic::{Code, Status};

/// A run of a new session `id` parked in REQUIRES_ACTION: (run name, approval id).
async fn parked(w: &World, id: &str) -> (String, String) {
    let session = w.session(id).await;
    let run = w.start(&session.name, with_autonomy("plan", L::L0)).await;
    let task = w.worker.claim().await;
    let reply = w
        .worker
        .propose(&task.task_token, vec![step(READ_TOOL, json!({}))])
        .await
        .expect("ProposePlan");
    assert!(!reply.approved);
    (run.name, reply.approval.unwrap().approval_id)
}

async fn delete_session(client: &Execution, name: &str) -> Result<(), Status> {
    client
        .clone()
        .delete_session(pb::DeleteSessionRequest {
            name: name.into(),
            request_id: String::new(),
        })
        .await
        .map(|_| ())
}

/// Every read, by `client`; returns the failures.
async fn reads(
    w: &World,
    client: &Execution,
    session: &str,
    run: &str,
) -> Vec<(&'static str, Status)> {
    let mut c = client.clone();
    let list = pb::ListSessionsRequest {
        parent: w.project.clone(),
        ..Default::default()
    };
    let stats = pb::GetRunStatsRequest {
        parent: w.project.clone(),
        ..Default::default()
    };
    let all_sessions = format!("{}/sessions/-", w.project);
    let mut outcomes: Vec<(&'static str, Result<(), Status>)> = vec![
        (
            "GetSession",
            c.get_session(get_session(session)).await.map(|_| ()),
        ),
        ("ListSessions", c.list_sessions(list).await.map(|_| ())),
        (
            "ListMessages",
            c.list_messages(list_messages(session, false, 10, ""))
                .await
                .map(|_| ()),
        ),
        ("GetRun", c.get_run(get_run(run)).await.map(|_| ())),
        (
            "ListRuns",
            c.list_runs(list_runs(session, "", 10, ""))
                .await
                .map(|_| ()),
        ),
        (
            "ListRuns(-)",
            c.list_runs(list_runs(&all_sessions, "", 10, ""))
                .await
                .map(|_| ()),
        ),
        ("GetRunStats", c.get_run_stats(stats).await.map(|_| ())),
    ];
    match c.stream_run_events(stream_events(run, 0)).await {
        Ok(stream) => {
            let mut stream = stream.into_inner();
            let first = next_event(&mut stream, SOON).await;
            assert_eq!(first.sequence, 1);
        }
        Err(status) => outcomes.push(("StreamRunEvents", Err(status))),
    }
    outcomes
        .into_iter()
        .filter_map(|(method, result)| result.err().map(|s| (method, s)))
        .collect()
}

backend_tests!(
    every_role_reads_sessions_runs_and_events,
    |app| async move {
        let w = World::setup(&app).await;
        let session = w.session("s").await;
        let run = w.run(&session.name, "hi").await;
        let worker = w.worker.client.clone();
        let root = app.execution(&app.root_key).await;
        for (role, client) in [
            ("ADMIN", &w.client),
            ("DEVELOPER", &w.dev),
            ("READER", &w.reader),
            ("WORKER", &worker),
            ("ROOT", &root),
        ] {
            let failures = reads(&w, client, &session.name, &run.name).await;
            assert!(failures.is_empty(), "{role} could not read: {failures:#?}");
        }
        let anonymous = app.execution("").await;
        let result = anonymous.clone().get_run(get_run(&run.name)).await;
        assert_eq!(result.unwrap_err().code(), Code::Unauthenticated);
        let bogus = app.execution("agk_not_a_real_key").await;
        let result = bogus.clone().get_session(get_session(&session.name)).await;
        assert_eq!(result.unwrap_err().code(), Code::Unauthenticated);
    }
);

backend_tests!(
    only_admin_and_developer_create_cancel_decide_and_delete,
    |app| async move {
        let w = World::setup(&app).await;
        let (parked_run, approval_id) = parked(&w, "parked").await;
        let target = w.session("target").await;
        let target_run = w.run(&target.name, "keep me").await;
        w.session("idle").await;

        let worker = w.worker.client.clone();
        for (role, client) in [("READER", &w.reader), ("WORKER", &worker)] {
            let mut c = client.clone();
            let denied = [
                (
                    "CreateSession",
                    c.create_session(create_session(&w.project, "denied", &w.instance))
                        .await
                        .map(|_| ()),
                ),
                (
                    "CreateRun",
                    c.create_run(create_run(&target.name, spec("sneak")))
                        .await
                        .map(|_| ()),
                ),
                (
                    "CreateRun(ENQUEUE)",
                    c.create_run(create_run(
                        &target.name,
                        with_strategy("sneak", pb::MultitaskStrategy::Enqueue),
                    ))
                    .await
                    .map(|_| ()),
                ),
                (
                    "CancelRun",
                    c.cancel_run(cancel(&target_run.name, "")).await.map(|_| ()),
                ),
                (
                    "DecideApproval",
                    c.decide_approval(decide(&parked_run, &approval_id, D::Approve, ""))
                        .await
                        .map(|_| ()),
                ),
                (
                    "DeleteSession",
                    delete_session(client, &w.session_name("idle")).await,
                ),
            ];
            for (method, result) in denied {
                let status = result.expect_err(&format!("{role} may not {method}"));
                assert_eq!(
                    status.code(),
                    Code::PermissionDenied,
                    "{role} {method}: {status:?}"
                );
                assert_status(
                    Err::<(), _>(status),
                    Code::PermissionDenied,
                    "ROLE_NOT_ALLOWED",
                );
            }
        }
        // Nothing changed.
        let missing = w
            .client
            .clone()
            .get_session(get_session(&w.session_name("denied")))
            .await;
        assert_status(missing, Code::NotFound, "RESOURCE_NOT_FOUND");
        w.get_session(&w.session_name("idle")).await;
        let still = w.get_run(&target_run.name).await;
        assert_eq!(
            (still.status, still.cancel_requested),
            (RunStatus::Queued as i32, false)
        );
        assert_eq!(w.runs(&target.name, "").await.len(), 1);
        assert_eq!(w.messages(&target.name, true).await.len(), 1);
        assert_eq!(
            w.get_run(&parked_run).await.status,
            RunStatus::RequiresAction as i32
        );

        // ADMIN and DEVELOPER may.
        w.cancel(&target_run.name, "").await.unwrap();
        for (role, client) in [("admin", &w.client), ("dev", &w.dev)] {
            let mut c = client.clone();
            let session = c
                .create_session(create_session(
                    &w.project,
                    &format!("by-{role}"),
                    &w.instance,
                ))
                .await
                .unwrap_or_else(|s| panic!("{role} CreateSession: {s:?}"))
                .into_inner();
            let run = c
                .create_run(create_run(&session.name, spec("mine")))
                .await
                .unwrap_or_else(|s| panic!("{role} CreateRun: {s:?}"))
                .into_inner();
            let cancelled = c
                .cancel_run(cancel(&run.name, ""))
                .await
                .unwrap()
                .into_inner();
            assert_eq!(cancelled.status, RunStatus::Cancelled as i32);
            delete_session(client, &session.name)
                .await
                .unwrap_or_else(|s| panic!("{role} DeleteSession: {s:?}"));
        }
        let decided = w
            .dev
            .clone()
            .decide_approval(decide(&parked_run, &approval_id, D::Approve, ""))
            .await
            .expect("a developer decides");
        assert_eq!(decided.into_inner().status, RunStatus::Queued as i32);
    }
);

backend_tests!(only_worker_keys_drive_runs, |app| async move {
    let w = World::setup(&app).await;
    let session = w.session("s").await;
    let run = w.run(&session.name, "work").await;
    let task = w.worker.claim().await;
    let token = task.task_token.clone();
    let before = w.get_run(&run.name).await;
    for (role, client) in [
        ("ADMIN", &w.client),
        ("DEVELOPER", &w.dev),
        ("READER", &w.reader),
    ] {
        let as_role = w.worker.with_client(client.clone());
        let outcomes = [
            (
                "PollTask",
                as_role
                    .try_poll(Duration::ZERO, Duration::from_secs(30))
                    .await
                    .map(|_| ()),
            ),
            (
                "HeartbeatTask",
                as_role.heartbeat(&token, Duration::ZERO).await.map(|_| ()),
            ),
            (
                "AppendRunEvents",
                as_role
                    .try_append(&token, vec![delta("m", "x")])
                    .await
                    .map(|_| ()),
            ),
            (
                "ProposePlan",
                as_role
                    .propose(&token, vec![step(READ_TOOL, json!({}))])
                    .await
                    .map(|_| ()),
            ),
            (
                "CompleteTask",
                as_role.try_complete(&token, vec![], None).await.map(|_| ()),
            ),
            (
                "FailTask",
                as_role.fail(&token, "X", false).await.map(|_| ()),
            ),
        ];
        for (method, result) in outcomes {
            let status = result.expect_err(&format!("{role} may not {method}"));
            assert_status(
                Err::<(), _>(status),
                Code::PermissionDenied,
                "ROLE_NOT_ALLOWED",
            );
        }
    }
    let after = w.get_run(&run.name).await;
    assert_eq!(
        after.last_sequence, before.last_sequence,
        "nothing was written"
    );
    assert_eq!(after.status, RunStatus::Running as i32);
    assert_eq!(after.attempt, 1);
    // ROOT may act as a worker.
    let root = w.worker.with_client(app.execution(&app.root_key).await);
    root.heartbeat(&token, Duration::ZERO)
        .await
        .expect("ROOT heartbeats");
    root.append(&token, vec![delta("m", "root")]).await;
    let done = w.worker.complete(&token, "done").await;
    assert_eq!(done.status, RunStatus::Succeeded as i32);
});

backend_tests!(
    another_workspaces_names_and_task_tokens_are_permission_denied,
    |app| async move {
        let acme = World::setup(&app).await;
        let globex = World::setup_tenant(&app, "globex", pb::Quotas::default()).await;
        let session = acme.session("s").await;
        let (parked_run, approval_id) = parked(&acme, "parked").await;
        let run = acme.run(&session.name, "secret").await;
        let task = acme.worker.claim().await;
        acme.worker
            .append(&task.task_token, vec![said(assistant("private"))])
            .await;
        let before = acme.get_run(&run.name).await;

        let mismatch = |what: &str, result: Result<(), Status>| {
            let status = result.expect_err(&format!("globex may not {what}"));
            assert_status(
                Err::<(), _>(status),
                Code::PermissionDenied,
                "WORKSPACE_MISMATCH",
            );
        };
        for client in [&globex.client, &globex.dev, &globex.reader] {
            let mut c = client.clone();
            mismatch(
                "GetSession",
                c.get_session(get_session(&session.name)).await.map(|_| ()),
            );
            let list = pb::ListSessionsRequest {
                parent: acme.project.clone(),
                ..Default::default()
            };
            mismatch("ListSessions", c.list_sessions(list).await.map(|_| ()));
            mismatch(
                "ListMessages",
                c.list_messages(list_messages(&session.name, true, 10, ""))
                    .await
                    .map(|_| ()),
            );
            mismatch("GetRun", c.get_run(get_run(&run.name)).await.map(|_| ()));
            mismatch(
                "ListRuns",
                c.list_runs(list_runs(&session.name, "", 10, ""))
                    .await
                    .map(|_| ()),
            );
            mismatch(
                "ListRuns(-)",
                c.list_runs(list_runs(
                    &format!("{}/sessions/-", acme.project),
                    "",
                    10,
                    "",
                ))
                .await
                .map(|_| ()),
            );
            mismatch(
                "StreamRunEvents",
                c.stream_run_events(stream_events(&run.name, 0))
                    .await
                    .map(|_| ()),
            );
            let stats = pb::GetRunStatsRequest {
                parent: acme.project.clone(),
                ..Default::default()
            };
            mismatch("GetRunStats", c.get_run_stats(stats).await.map(|_| ()));
        }
        for client in [&globex.client, &globex.dev] {
            let mut c = client.clone();
            mismatch(
                "CreateSession",
                c.create_session(create_session(&acme.project, "intruder", &acme.instance))
                    .await
                    .map(|_| ()),
            );
            mismatch(
                "CreateRun",
                c.create_run(create_run(
                    &session.name,
                    with_strategy("x", pb::MultitaskStrategy::Enqueue),
                ))
                .await
                .map(|_| ()),
            );
            mismatch(
                "CancelRun",
                c.cancel_run(cancel(&run.name, "")).await.map(|_| ()),
            );
            mismatch(
                "DecideApproval",
                c.decide_approval(decide(&parked_run, &approval_id, D::Approve, ""))
                    .await
                    .map(|_| ()),
            );
            mismatch("DeleteSession", delete_session(client, &session.name).await);
        }
        // Globex's worker with acme's names and acme's token.
        let thief = globex.worker.clone();
        let mut wrong_parent = thief.poll_request(Duration::ZERO, Duration::from_secs(30));
        wrong_parent.parent = acme.acme.name.clone();
        wrong_parent.agents = vec![acme.agent.clone()];
        mismatch(
            "PollTask(acme)",
            thief
                .client
                .clone()
                .poll_task(wrong_parent)
                .await
                .map(|_| ()),
        );
        let token = &task.task_token;
        mismatch(
            "HeartbeatTask",
            thief.heartbeat(token, Duration::ZERO).await.map(|_| ()),
        );
        mismatch(
            "AppendRunEvents",
            thief
                .try_append(token, vec![delta("m", "x")])
                .await
                .map(|_| ()),
        );
        mismatch(
            "ProposePlan",
            thief
                .propose(token, vec![step(READ_TOOL, json!({}))])
                .await
                .map(|_| ()),
        );
        mismatch(
            "CompleteTask",
            thief
                .try_complete(token, vec![assistant("x")], None)
                .await
                .map(|_| ()),
        );
        mismatch("FailTask", thief.fail(token, "X", false).await.map(|_| ()));

        // Acme is untouched.
        let after = acme.get_run(&run.name).await;
        assert_eq!(after.last_sequence, before.last_sequence);
        assert_eq!(
            (after.status, after.cancel_requested),
            (RunStatus::Running as i32, false)
        );
        assert_eq!(
            acme.get_run(&parked_run).await.status,
            RunStatus::RequiresAction as i32
        );
        assert_eq!(acme.runs(&session.name, "").await.len(), 1);
        assert_eq!(
            transcript(&acme.messages(&session.name, true).await),
            [line("USER", "secret", ""), line("ASSISTANT", "private", "")]
        );
        let missing = acme
            .client
            .clone()
            .get_session(get_session(&acme.session_name("intruder")))
            .await;
        assert_status(missing, Code::NotFound, "RESOURCE_NOT_FOUND");
        acme.worker
            .heartbeat(&task.task_token, Duration::ZERO)
            .await
            .expect("still acme's");

        // Each worker sees only its own workspace's runs.
        let g_session = globex.session("g").await;
        let g_run = globex.run(&g_session.name, "globex work").await;
        acme.worker.expect_nothing(Duration::from_millis(500)).await;
        let g_task = globex.worker.claim().await;
        assert_eq!(g_task.run.unwrap().name, g_run.name);
    }
);

backend_tests!(
    names_of_another_workspace_inside_requests_are_permission_denied,
    |app| async move {
        let acme = World::setup(&app).await;
        let globex = World::setup_tenant(&app, "globex", pb::Quotas::default()).await;
        let session = acme.session("s").await;
        let run = acme.run(&session.name, "mine").await;
        // Globex's worker, polling its own workspace for acme's agent.
        let mut foreign_agent = globex
            .worker
            .poll_request(Duration::ZERO, Duration::from_secs(30));
        foreign_agent.agents = vec![acme.agent.clone()];
        let result = globex.worker.client.clone().poll_task(foreign_agent).await;
        assert_status(result, Code::PermissionDenied, "WORKSPACE_MISMATCH");
        let still = acme.get_run(&run.name).await;
        assert_eq!((still.status, still.attempt), (RunStatus::Queued as i32, 0));
        // Globex's own project, acme's instance: a name of another workspace.
        let result = globex
            .client
            .clone()
            .create_session(create_session(&globex.project, "borrow", &acme.instance))
            .await;
        assert_status(result, Code::PermissionDenied, "WORKSPACE_MISMATCH");
        let missing = globex
            .client
            .clone()
            .get_session(get_session(&globex.session_name("borrow")))
            .await;
        assert_status(missing, Code::NotFound, "RESOURCE_NOT_FOUND");
        // Checked before any lookup: names of another workspace that do not exist (or of
        // a workspace that does not exist) are denied the same way, revealing nothing.
        for name in [
            "workspaces/acme/projects/web/sessions/nope".to_string(),
            "workspaces/acme/projects/ghost/sessions/nope".into(),
            "workspaces/nobody/projects/web/sessions/nope".into(),
        ] {
            let result = globex.client.clone().get_session(get_session(&name)).await;
            assert_status(result, Code::PermissionDenied, "WORKSPACE_MISMATCH");
            let run = format!("{name}/runs/0190c5a4-6e3e-7b7a-9c1e-2f4d5e6a7b8c");
            let result = globex.client.clone().get_run(get_run(&run)).await;
            assert_status(result, Code::PermissionDenied, "WORKSPACE_MISMATCH");
        }
        // Another project's instance of the same workspace is simply invalid.
        acme.acme.project("other").await;
        acme.acme
            .instance(
                "other",
                "elsewhere",
                pb::Instance {
                    agent: acme.agent.clone(),
                    ..Default::default()
                },
            )
            .await;
        let result = acme
            .client
            .clone()
            .create_session(create_session(
                &acme.project,
                "mixed",
                &acme.acme.instance_name("other", "elsewhere"),
            ))
            .await;
        assert_eq!(result.unwrap_err().code(), Code::InvalidArgument);
    }
);
