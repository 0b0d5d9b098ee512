//! The `agentry` client commands for sessions and runs, with a worker driven from the
//! test: `runs follow` prints deltas as they come, tool calls and statuses on lines of
//! their own, survives a dropped connection and exits with the run's outcome; approvals,
//! cancellation, filters, transcripts and stats.

mod cli_support;
mod execution_support;

use std::time::Duration;

use agentry_e2e::*;
use cli_support::{Cli, items, names};
use execution_support::*;
use tokio::io::AsyncReadExt;

fn cli_for(app: &TestApp, w: &World) -> Cli {
    Cli::new(app.addr, &w.acme.admin_key)
        .env("AGENTRY_WORKSPACE", "acme")
        .env("AGENTRY_PROJECT", "web")
}

backend_tests!(sessions_runs_and_transcripts, |app| async move {
    let w = World::setup(&app).await;
    let cli = cli_for(&app, &w);
    let session = cli
        .json(&["sessions", "create", "chat", "--instance", "bot"])
        .await;
    assert_eq!(
        session["name"],
        "workspaces/acme/projects/web/sessions/chat"
    );
    assert_eq!(
        names(
            &cli.json(&["sessions", "list", "--instance", "bot"]).await,
            "sessions"
        ),
        ["workspaces/acme/projects/web/sessions/chat"]
    );

    let run = cli
        .json(&[
            "runs",
            "create",
            "chat",
            "--input",
            "hello",
            "--autonomy",
            "l1",
            "--label",
            "k=v",
        ])
        .await;
    let run_name = run["name"].as_str().unwrap().to_owned();
    assert_eq!(run["status"], "RUN_STATUS_QUEUED");
    assert_eq!(run["autonomyLevel"], "AUTONOMY_LEVEL_L1");
    let relative = format!("chat/{}", run_name.rsplit('/').next().unwrap());
    assert_eq!(
        cli.json(&["runs", "get", &relative]).await["name"],
        run_name.as_str()
    );

    serve_one(&w, "hi there").await;
    let transcript = cli.json(&["sessions", "transcript", "chat"]).await;
    let said: Vec<(&str, &str)> = items(&transcript, "messages")
        .iter()
        .map(|m| (m["role"].as_str().unwrap(), m["content"].as_str().unwrap()))
        .collect();
    assert_eq!(
        said,
        [
            ("MESSAGE_ROLE_USER", "hello"),
            ("MESSAGE_ROLE_ASSISTANT", "hi there")
        ]
    );

    // A second run, cancelled while queued; filters tell them apart.
    let second = cli
        .json(&["runs", "create", "sessions/chat", "--input", "again"])
        .await;
    let second_name = second["name"].as_str().unwrap().to_owned();
    let cancelled = cli
        .json(&[
            "runs",
            "cancel",
            &second_name,
            "--reason",
            "changed my mind",
        ])
        .await;
    assert!(matches!(
        cancelled["status"].as_str(),
        Some("RUN_STATUS_CANCELLED" | "RUN_STATUS_CANCELLING")
    ));
    w.wait_for(&second_name, pb::RunStatus::Cancelled, SOON)
        .await;
    let succeeded = cli.json(&["runs", "list", "--status", "succeeded"]).await;
    assert_eq!(names(&succeeded, "runs"), [run_name.as_str()]);
    let in_session = cli
        .json(&[
            "runs",
            "list",
            "chat",
            "--since",
            "1h",
            "--instance",
            "bot",
            "--agent",
            "helper",
        ])
        .await;
    assert_eq!(
        names(&in_session, "runs"),
        [second_name.clone(), run_name.clone()]
    );
    assert!(
        items(
            &cli.json(&["runs", "list", "--since", "2099-01-01T00:00:00Z"])
                .await,
            "runs"
        )
        .is_empty()
    );
    // Following a finished run replays it and exits with its outcome.
    let replay = cli
        .run(&["runs", "follow", &second_name, "-o", "table"])
        .await;
    assert_eq!(
        replay.code, 11,
        "cancelled: {}{}",
        replay.stdout, replay.stderr
    );
    let replay = cli.run(&["runs", "follow", &run_name, "-o", "table"]).await;
    assert_eq!(replay.code, 0, "{}", replay.stderr);
    assert!(
        replay.stdout.contains("[status] SUCCEEDED"),
        "{}",
        replay.stdout
    );

    let stats = cli
        .json(&["runs", "stats", "--since", "1h", "--by-agent"])
        .await;
    assert_eq!(stats["total"]["total"], "2");
    assert_eq!(
        stats["byAgent"][0]["agent"],
        "workspaces/acme/agents/helper"
    );
    let table = cli.run(&["runs", "stats", "-o", "table"]).await;
    assert!(table.stdout.starts_with("AGENT"), "{}", table.stdout);
    assert!(table.stdout.contains("50.0%"), "{}", table.stdout);

    cli.json(&["sessions", "delete", "chat"]).await;
    cli.fails(&["sessions", "get", "chat"], 4).await;
});

backend_tests!(
    runs_wait_for_approval_and_are_approved_or_rejected,
    |app| async move {
        let w = World::setup(&app).await;
        let cli = cli_for(&app, &w);
        cli.json(&["sessions", "create", "ops", "--instance", "bot"])
            .await;
        for (verb, decision) in [
            ("approve", "APPROVAL_DECISION_APPROVE"),
            ("reject", "APPROVAL_DECISION_REJECT"),
        ] {
            let run = cli
                .json(&["runs", "create", "ops", "--input", "clean up"])
                .await;
            let name = run["name"].as_str().unwrap().to_owned();
            cli.fails(&["runs", verb, &name], 1).await;
            let task = w.worker.claim().await;
            w.worker
                .propose(
                    &task.task_token,
                    vec![step(DESTRUCTIVE_TOOL, json!({"table": "t"}))],
                )
                .await
                .unwrap();
            w.wait_for(&name, pb::RunStatus::RequiresAction, SOON).await;
            let decided = cli
                .json(&["runs", verb, &name, "--comment", "ok by me"])
                .await;
            assert_eq!(decided["approval"]["decision"], decision);
            assert_eq!(decided["approval"]["comment"], "ok by me");
            let task = w.worker.claim().await;
            w.worker.complete(&task.task_token, "done").await;
        }
    }
);

/// Reads what a child printed so far, up to `wanted` or the timeout.
async fn read_until(out: &mut tokio::process::ChildStdout, seen: &mut String, wanted: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let mut buf = [0u8; 4096];
    while !seen.contains(wanted) {
        let n = tokio::time::timeout_at(deadline, out.read(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("no {wanted:?} in {seen:?}"))
            .unwrap();
        assert!(n > 0, "the follower ended before {wanted:?}: {seen:?}");
        seen.push_str(std::str::from_utf8(&buf[..n]).unwrap());
    }
}

backend_tests!(
    runs_follow_streams_resumes_and_exits_with_the_outcome,
    |app| async move {
        let w = World::setup(&app).await;
        // The follower talks through a proxy that the test can cut.
        let proxy = PgProxy::start(&format!("http://{}/", app.addr)).await;
        let cli = Cli::new(proxy.addr, &w.acme.admin_key)
            .env("AGENTRY_WORKSPACE", "acme")
            .env("AGENTRY_PROJECT", "web");
        cli.json(&["sessions", "create", "live", "--instance", "bot"])
            .await;
        let run = cli
            .json(&["runs", "create", "live", "--input", "weather?"])
            .await;
        let name = run["name"].as_str().unwrap().to_owned();

        let mut follower = cli.spawn(&["runs", "follow", &name, "-o", "table"]);
        let mut out = follower.stdout.take().unwrap();
        let mut seen = String::new();
        let task = w.worker.claim().await;
        read_until(&mut out, &mut seen, "[status] RUNNING\n").await;
        w.worker
            .append(
                &task.task_token,
                vec![tool_started("c1", READ_TOOL, json!({"q": "weather"}))],
            )
            .await;
        read_until(&mut out, &mut seen, "[tool] search {\"q\":\"weather\"}\n").await;
        w.worker
            .append(&task.task_token, vec![delta("m1", "Sunny")])
            .await;
        read_until(&mut out, &mut seen, "Sunny").await;

        // The connection drops; events keep coming; the follower resumes after the last one.
        proxy.cut();
        w.worker
            .append(&task.task_token, vec![delta("m1", " all day")])
            .await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        proxy.restore();
        read_until(&mut out, &mut seen, "Sunny all day").await;
        w.worker
            .append(
                &task.task_token,
                vec![tool_completed("c1", READ_TOOL, json!("sun"))],
            )
            .await;
        w.worker.complete(&task.task_token, "Sunny all day").await;
        let status = tokio::time::timeout(Duration::from_secs(15), follower.wait())
            .await
            .expect("the follower exits when the run ends")
            .unwrap();
        let mut rest = String::new();
        out.read_to_string(&mut rest).await.unwrap();
        seen.push_str(&rest);
        assert_eq!(status.code(), Some(0), "{seen}");
        // Each delta exactly once, on the line of its message, across the reconnection.
        assert!(
            seen.contains(
                "[tool] search {\"q\":\"weather\"}\nSunny all day\n[tool] search returned \"sun\"\n"
            ),
            "{seen}"
        );
        assert!(seen.contains("[status] SUCCEEDED"), "{seen}");
        let mut stderr = String::new();
        follower
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut stderr)
            .await
            .unwrap();
        assert!(
            stderr.contains("connection lost"),
            "it said it resumed: {stderr}"
        );

        // JSON: one event per line; a failed run exits 10.
        let failing = cli
            .json(&["runs", "create", "live", "--input", "again"])
            .await;
        let failing = failing["name"].as_str().unwrap().to_owned();
        let task = w.worker.claim().await;
        w.worker
            .fail(&task.task_token, "Boom", false)
            .await
            .unwrap();
        let out = cli.run(&["runs", "follow", &failing]).await;
        assert_eq!(out.code, 10, "{}", out.stderr);
        let events: Vec<serde_json::Value> = out
            .stdout
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert!(events.len() >= 3, "{}", out.stdout);
        assert_eq!(
            events.last().unwrap()["statusChanged"]["status"],
            "RUN_STATUS_FAILED"
        );
    }
);
