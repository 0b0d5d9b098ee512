//! Plans and approvals: which plans each autonomy level (L0–L3) runs without a human,
//! for READ_ONLY, WRITE and DESTRUCTIVE tools and mixed plans; a pending plan parks the
//! run in REQUIRES_ACTION and ends the lease; a human approves or rejects and the next
//! PollTask hands the decision to a worker; an undecided plan expires as rejected.

mod execution_support;

use std::time::Duration;

use agentry_e2e::*;
use execution_support::*;
use pb::{ApprovalDecision as D, AutonomyLevel as L, RunStatus, ToolRisk};
use tonic::Code;

fn level_rank(level: L) -> i32 {
    match level {
        L::Unspecified | L::L0 => 0,
        L::L1 => 1,
        L::L2 => 2,
        L::L3 => 3,
    }
}

fn tool_rank(tool: &str) -> (i32, ToolRisk) {
    match tool {
        READ_TOOL => (1, ToolRisk::ReadOnly),
        WRITE_TOOL => (2, ToolRisk::Write),
        DESTRUCTIVE_TOOL => (3, ToolRisk::Destructive),
        other => panic!("unknown tool {other}"),
    }
}

backend_tests!(
    each_autonomy_level_auto_approves_exactly_the_risks_it_allows,
    |app| async move {
        let w = World::setup(&app).await;
        let levels = [L::Unspecified, L::L0, L::L1, L::L2, L::L3];
        let mut plans: Vec<Vec<&str>> =
            vec![vec![READ_TOOL], vec![WRITE_TOOL], vec![DESTRUCTIVE_TOOL]];
        plans.push(vec![READ_TOOL, WRITE_TOOL]);
        plans.push(vec![READ_TOOL, DESTRUCTIVE_TOOL]);
        let mut n = 0;
        let mut table = Vec::new();
        for level in levels {
            for plan in &plans {
                n += 1;
                let session = w.session(&format!("p{n}")).await;
                let run = w.start(&session.name, with_autonomy("plan", level)).await;
                // Unspecified means L0, and may come back as either.
                let echoed = L::try_from(run.autonomy_level).expect("a known level");
                assert_eq!(
                    level_rank(echoed),
                    level_rank(level),
                    "{level:?} → {echoed:?}"
                );
                let task = w.worker.claim().await;
                let steps = plan.iter().map(|t| step(t, json!({"n": n}))).collect();
                let reply = w
                    .worker
                    .propose(&task.task_token, steps)
                    .await
                    .unwrap_or_else(|s| panic!("ProposePlan {level:?} {plan:?}: {s:?}"));
                let expected = plan.iter().all(|t| tool_rank(t).0 <= level_rank(level));
                table.push(format!("{level:?} {plan:?} → approved={}", reply.approved));
                assert_eq!(reply.approved, expected, "{level:?} with {plan:?}");
                let approval = reply
                    .approval
                    .clone()
                    .expect("the reply carries the approval");
                assert!(!approval.approval_id.is_empty());
                let risks: Vec<i32> = approval.steps.iter().map(|s| s.risk).collect();
                let declared: Vec<i32> = plan.iter().map(|t| tool_rank(t).1 as i32).collect();
                assert_eq!(risks, declared, "steps carry the declared risks");
                let tail: Vec<String> = w.story(&run.name).await.split_off(2);
                if expected {
                    assert_eq!(approval.decision, D::Approve as i32);
                    assert_eq!(approval.decided_by, "auto");
                    assert_eq!(tail, ["plan auto", "decided APPROVE by auto"]);
                    // The same lease goes on.
                    w.worker
                        .append(&task.task_token, vec![delta("m", "go")])
                        .await;
                    let done = w.worker.complete(&task.task_token, "done").await;
                    assert_eq!(done.status, RunStatus::Succeeded as i32);
                } else {
                    assert_eq!(approval.decision, D::Unspecified as i32, "pending");
                    assert_eq!(tail, ["plan pending", "status RUNNING->REQUIRES_ACTION"]);
                    let parked = w.get_run(&run.name).await;
                    assert_eq!(parked.status, RunStatus::RequiresAction as i32);
                    assert_eq!(parked.approval.as_ref(), Some(&approval));
                    // The lease has ended.
                    let beat = w.worker.heartbeat(&task.task_token, Duration::ZERO).await;
                    assert_status(beat, Code::FailedPrecondition, "STALE_TASK");
                    w.worker.expect_nothing(Duration::ZERO).await;
                    w.cancel(&run.name, "next case").await.unwrap();
                }
            }
        }
        println!("{}", table.join("\n"));
    }
);

/// Session `s`, a run at `level` whose worker proposed `steps` and was parked; returns
/// (run name, the pending approval).
async fn parked_run(
    w: &World,
    request: pb::CreateRunRequest,
    steps: Vec<pb::PlanStep>,
) -> (String, pb::Approval) {
    let run = w.try_run(request).await.expect("CreateRun");
    let task = w.worker.claim().await;
    let reply = w
        .worker
        .propose(&task.task_token, steps)
        .await
        .expect("ProposePlan");
    assert!(!reply.approved);
    w.wait_for(&run.name, RunStatus::RequiresAction, SOON).await;
    (run.name, reply.approval.unwrap())
}

backend_tests!(
    an_approved_plan_resumes_through_the_next_poll,
    |app| async move {
        let w = World::setup(&app).await;
        let (dev_key, dev_name) = named_key(&w.acme, pb::Role::Developer).await;
        let dev = app.execution(&dev_key).await;
        let session = w.session("s").await;
        let request = create_run(&session.name, with_autonomy("write it", L::L1));
        let (run, pending) =
            parked_run(&w, request, vec![step(WRITE_TOOL, json!({"path": "/a"}))]).await;
        let expires = millis_between(&pending.expire_time, &timestamp_from_nanos(now_nanos()));
        assert!(
            (-24.0 * 3600.0 * 1000.0 - 60_000.0..=-24.0 * 3600.0 * 1000.0 + 60_000.0)
                .contains(&expires),
            "the default approval timeout is 24 h ({expires} ms)"
        );

        let wrong_id = dev
            .clone()
            .decide_approval(decide(&run, "not-the-id", D::Approve, ""))
            .await;
        assert_status(wrong_id, Code::FailedPrecondition, "APPROVAL_NOT_PENDING");
        let no_decision = dev
            .clone()
            .decide_approval(decide(&run, &pending.approval_id, D::Unspecified, ""))
            .await;
        assert_eq!(no_decision.unwrap_err().code(), Code::InvalidArgument);

        let decided = dev
            .clone()
            .decide_approval(decide(&run, &pending.approval_id, D::Approve, "go ahead"))
            .await
            .expect("DecideApproval")
            .into_inner();
        assert_eq!(decided.status, RunStatus::Queued as i32);
        let approval = decided.approval.clone().unwrap();
        assert_eq!(approval.decision, D::Approve as i32);
        assert_eq!(approval.decided_by, dev_name);
        assert_eq!(approval.comment, "go ahead");
        assert_eq!(approval.approval_id, pending.approval_id);

        let again = dev
            .clone()
            .decide_approval(decide(&run, &pending.approval_id, D::Reject, ""))
            .await;
        assert_status(again, Code::FailedPrecondition, "APPROVAL_NOT_PENDING");

        let task = w.worker.claim().await;
        let resume = task.resume.clone().expect("the task carries the decision");
        let handed = resume.approval.unwrap();
        assert_eq!(handed.approval_id, pending.approval_id);
        assert_eq!(handed.decision, D::Approve as i32);
        assert_eq!(handed.steps.len(), 1);
        assert_eq!(handed.steps[0].tool, WRITE_TOOL);
        w.worker
            .append(
                &task.task_token,
                vec![
                    tool_started("c1", WRITE_TOOL, json!({"path": "/a"})),
                    tool_completed("c1", WRITE_TOOL, json!({"written": true})),
                ],
            )
            .await;
        let done = w.worker.complete(&task.task_token, "written").await;
        assert_eq!(done.status, RunStatus::Succeeded as i32);
        let story = w.finished_log(&run).await;
        assert_eq!(
            describe_all(&story),
            [
                "status none->QUEUED".to_string(),
                "status QUEUED->RUNNING".into(),
                "plan pending".into(),
                "status RUNNING->REQUIRES_ACTION".into(),
                format!("decided APPROVE by {dev_name}"),
                "status REQUIRES_ACTION->QUEUED".into(),
                "status QUEUED->RUNNING".into(),
                "tool_started c1 write_file".into(),
                "tool_completed c1 write_file".into(),
                "message ASSISTANT \"written\"".into(),
                "status RUNNING->SUCCEEDED END_TURN".into(),
            ]
        );
        match story[4].kind.as_ref().unwrap() {
            pb::run_event::Kind::ApprovalDecided(d) => {
                assert_eq!(d.approval.as_ref().unwrap().comment, "go ahead")
            }
            other => panic!("{other:?}"),
        }
    }
);

backend_tests!(
    a_rejected_plan_reaches_the_worker_as_a_rejection,
    |app| async move {
        let w = World::setup(&app).await;
        let session = w.session("s").await;
        let request = create_run(&session.name, with_autonomy("wipe it", L::L2));
        let (run, pending) = parked_run(
            &w,
            request,
            vec![step(DESTRUCTIVE_TOOL, json!({"t": "users"}))],
        )
        .await;
        let decided = w
            .client
            .clone()
            .decide_approval(decide(&run, &pending.approval_id, D::Reject, "too risky"))
            .await
            .expect("DecideApproval")
            .into_inner();
        assert_eq!(decided.status, RunStatus::Queued as i32);
        let task = w.worker.claim().await;
        let handed = task.resume.unwrap().approval.unwrap();
        assert_eq!(
            (handed.decision, handed.comment.as_str()),
            (D::Reject as i32, "too risky")
        );
        let done = w
            .worker
            .client
            .clone()
            .complete_task(pb::CompleteTaskRequest {
                task_token: task.task_token.clone(),
                output: vec![assistant("I will not drop it.")],
                usage: None,
                stop_reason: pb::StopReason::Rejected as i32,
                request_id: String::new(),
                events: vec![],
            })
            .await
            .expect("CompleteTask")
            .into_inner();
        assert_eq!(done.status, RunStatus::Succeeded as i32);
        assert_eq!(done.stop_reason, pb::StopReason::Rejected as i32);
        let story = w.story(&run).await;
        assert_eq!(story[4].split(" by ").next().unwrap(), "decided REJECT");
        assert_eq!(story.last().unwrap(), "status RUNNING->SUCCEEDED REJECTED");
    }
);

backend_tests!(an_undecided_plan_expires_as_rejected, |app| async move {
    let w = World::setup(&app).await;
    let session = w.session("s").await;
    let request = pb::CreateRunRequest {
        approval_timeout: ms(1000),
        ..create_run(&session.name, spec("ask and wait"))
    };
    let (run, pending) = parked_run(&w, request, vec![step(READ_TOOL, json!({}))]).await;
    let queued = w.wait_for(&run, RunStatus::Queued, SOON).await;
    let approval = queued.approval.unwrap();
    assert_eq!(approval.decision, D::Reject as i32);
    assert_eq!(approval.decided_by, "expired");
    let log = w.log(&run).await;
    assert_eq!(
        describe_all(&log)[2..],
        [
            "plan pending",
            "status RUNNING->REQUIRES_ACTION",
            "decided REJECT by expired",
            "status REQUIRES_ACTION->QUEUED",
        ]
    );
    let late = millis_between(&pending.expire_time, &log[4].create_time);
    println!("expired {late:.0} ms after expire_time");
    assert!(late >= 0.0, "expired {late} ms before its expire_time");
    assert!(late < 3000.0, "expired {late} ms after its expire_time");
    let parked_at = millis_between(&log[3].create_time, &pending.expire_time);
    assert!(
        (900.0..=1500.0).contains(&parked_at),
        "expire_time = proposal + approval_timeout: {parked_at} ms"
    );
    let task = w.worker.claim().await;
    let handed = task.resume.unwrap().approval.unwrap();
    assert_eq!(
        (handed.decision, handed.decided_by.as_str()),
        (D::Reject as i32, "expired")
    );
    let late_decision = w
        .client
        .clone()
        .decide_approval(decide(&run, &pending.approval_id, D::Approve, ""))
        .await;
    assert_status(
        late_decision,
        Code::FailedPrecondition,
        "APPROVAL_NOT_PENDING",
    );
});

backend_tests!(
    bad_plans_are_invalid_argument_and_change_nothing,
    |app| async move {
        let w = World::setup(&app).await;
        let session = w.session("s").await;
        let run = w.start(&session.name, with_autonomy("x", L::L3)).await;
        let task = w.worker.claim().await;
        let before = w.get_run(&run.name).await.last_sequence;
        let unknown = w
            .worker
            .propose(&task.task_token, vec![step("rm_rf", json!({}))])
            .await;
        assert_eq!(unknown.unwrap_err().code(), Code::InvalidArgument);
        let mixed = w
            .worker
            .propose(
                &task.task_token,
                vec![step(READ_TOOL, json!({})), step("nope", json!({}))],
            )
            .await;
        assert_eq!(mixed.unwrap_err().code(), Code::InvalidArgument);
        let empty = w.worker.propose(&task.task_token, vec![]).await;
        assert_eq!(empty.unwrap_err().code(), Code::InvalidArgument);
        let now = w.get_run(&run.name).await;
        assert_eq!(now.last_sequence, before, "nothing was written");
        assert_eq!(now.status, RunStatus::Running as i32);
        w.worker
            .heartbeat(&task.task_token, Duration::ZERO)
            .await
            .expect("still leased");
    }
);

backend_tests!(
    plans_are_judged_by_the_revision_the_instance_pins,
    |app| async move {
        let w = World::setup(&app).await;
        // Revision 2: `search` becomes destructive and `deploy` appears.
        let mut tools = tool_agent().tools;
        tools[0].risk = ToolRisk::Destructive as i32;
        tools.push(pb::Tool {
            name: "deploy".into(),
            description: String::new(),
            risk: ToolRisk::Write as i32,
        });
        let change = pb::Agent {
            name: w.agent.clone(),
            tools,
            ..Default::default()
        };
        let updated = w
            .acme
            .admin
            .clone()
            .update_agent(req::update_agent(change, &["tools"]))
            .await
            .must();
        assert_eq!(updated.revision, 2);

        // `bot` pins revision 1.
        let session = w.session("old").await;
        let run = w.start(&session.name, with_autonomy("x", L::L1)).await;
        assert_eq!(run.agent_revision, 1);
        let task = w.worker.claim().await;
        let agent = task.agent.clone().unwrap();
        assert_eq!((agent.revision, agent.tools.len()), (1, 3));
        let unknown = w
            .worker
            .propose(&task.task_token, vec![step("deploy", json!({}))])
            .await;
        assert_eq!(unknown.unwrap_err().code(), Code::InvalidArgument);
        let reply = w
            .worker
            .propose(&task.task_token, vec![step(READ_TOOL, json!({}))])
            .await
            .unwrap();
        assert!(reply.approved, "read-only in revision 1");
        assert_eq!(
            reply.approval.unwrap().steps[0].risk,
            ToolRisk::ReadOnly as i32
        );
        w.worker.complete(&task.task_token, "ok").await;

        // A new instance pins revision 2.
        let fresh = w
            .acme
            .instance(
                "web",
                "fresh",
                pb::Instance {
                    agent: w.agent.clone(),
                    ..Default::default()
                },
            )
            .await;
        let session = w.session_with("new", &fresh.name).await;
        let run = w.start(&session.name, with_autonomy("y", L::L1)).await;
        assert_eq!(run.agent_revision, 2);
        let task = w.worker.claim().await;
        let reply = w
            .worker
            .propose(&task.task_token, vec![step(READ_TOOL, json!({}))])
            .await
            .unwrap();
        assert!(!reply.approved, "destructive in revision 2");
        assert_eq!(
            reply.approval.unwrap().steps[0].risk,
            ToolRisk::Destructive as i32
        );
    }
);
