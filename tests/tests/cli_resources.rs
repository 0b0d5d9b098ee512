//! The `agentry` client commands for agents, instances and contexts: the real binary
//! against a real server, files in YAML and JSON, relative names, diffs and `contexts
//! watch` as a long-running process.

mod cli_support;

use std::time::Duration;

use agentry_e2e::*;
use cli_support::{Cli, items, names};
use tokio::io::{AsyncBufReadExt, BufReader};

const AGENT_YAML: &str = r#"
name: helper
displayName: Helper
agent_type: langgraph
capabilities: [chat]
tools:
  - name: search
    risk: TOOL_RISK_READ_ONLY
configSchema:
  type: object
  properties:
    temperature: {type: number, maximum: 2}
defaultConfig:
  temperature: 1
"#;

backend_tests!(
    agents_and_instances_from_files_and_flags,
    |app| async move {
        let acme = app.tenant("acme").await;
        acme.project("web").await;
        let cli = Cli::new(app.addr, &acme.admin_key)
            .env("AGENTRY_WORKSPACE", "acme")
            .env("AGENTRY_PROJECT", "web");
        let file = cli.file("agent.yaml", AGENT_YAML);
        let created = cli
            .json(&["agents", "create", "-f", file.to_str().unwrap()])
            .await;
        assert_eq!(created["name"], "workspaces/acme/agents/helper");
        assert_eq!(created["revision"], "1");
        assert_eq!(created["tools"][0]["risk"], "TOOL_RISK_READ_ONLY");

        // An update sets the fields its file has; `-` reads stdin.
        let update = cli.file(
            "update.json",
            r#"{"description": "helps", "defaultConfig": {"temperature": 0.5}}"#,
        );
        let updated = cli
            .json(&["agents", "update", "helper", "-f", update.to_str().unwrap()])
            .await;
        assert_eq!(updated["revision"], "2");
        assert_eq!(
            updated["displayName"], "Helper",
            "fields not in the file are kept"
        );
        assert_eq!(updated["description"], "helps");

        let first = cli
            .json(&["agents", "get", "helper", "--revision", "1"])
            .await;
        assert_eq!(first["defaultConfig"]["temperature"], 1.0);
        let revisions = cli.json(&["agents", "revisions", "helper"]).await;
        let numbers: Vec<&str> = items(&revisions, "revisions")
            .iter()
            .map(|r| r["revision"].as_str().unwrap())
            .collect();
        assert_eq!(numbers, ["2", "1"]);
        let diff = cli.json(&["agents", "diff", "helper", "1", "2"]).await;
        let mut ops: Vec<(String, String)> = items(&diff, "operations")
            .iter()
            .map(|op| {
                (
                    op["op"].as_str().unwrap().into(),
                    op["path"].as_str().unwrap().into(),
                )
            })
            .collect();
        ops.sort();
        assert_eq!(
            ops,
            [
                ("add".to_owned(), "/description".to_owned()),
                (
                    "replace".to_owned(),
                    "/defaultConfig/temperature".to_owned()
                )
            ]
        );
        let table = cli
            .run(&["agents", "diff", "helper", "1", "2", "-o", "table"])
            .await;
        assert!(
            table.stdout.contains("+ /description = \"helps\""),
            "{}",
            table.stdout
        );
        assert!(
            table.stdout.contains("~ /defaultConfig/temperature = 0.5"),
            "{}",
            table.stdout
        );
        assert_eq!(
            names(&cli.json(&["agents", "list"]).await, "agents"),
            ["workspaces/acme/agents/helper"]
        );

        let instance = cli
            .json(&[
                "instances",
                "create",
                "bot",
                "--agent",
                "helper",
                "--config",
                r#"{"temperature": 1.5}"#,
                "--heartbeat-ttl",
                "30s",
                "--label",
                "env=test",
            ])
            .await;
        assert_eq!(
            instance["name"],
            "workspaces/acme/projects/web/instances/bot"
        );
        assert_eq!(instance["agentRevision"], "2");
        assert_eq!(instance["effectiveConfig"]["temperature"], 1.5);
        let too_hot = cli
            .fails(
                &[
                    "instances",
                    "create",
                    "hot",
                    "--agent",
                    "helper",
                    "--config",
                    r#"{"temperature": 9}"#,
                ],
                3,
            )
            .await;
        assert!(too_hot.contains("temperature"), "{too_hot}");

        let active = cli
            .json(&[
                "instances",
                "set-status",
                "bot",
                "initializing",
                "--message",
                "up",
            ])
            .await;
        assert_eq!(active["status"], "INSTANCE_STATUS_INITIALIZING");
        let illegal = cli
            .fails(&["instances", "set-status", "bot", "idle"], 3)
            .await;
        assert!(
            illegal.contains("FAILED_PRECONDITION INVALID_TRANSITION"),
            "{illegal}"
        );
        let beat = cli.json(&["instances", "heartbeat", "instances/bot"]).await;
        assert!(beat["lastHeartbeatTime"].is_string());
        let listed = cli
            .json(&[
                "instances",
                "list",
                "--status",
                "initializing",
                "--agent",
                "helper",
            ])
            .await;
        assert_eq!(
            names(&listed, "instances"),
            ["workspaces/acme/projects/web/instances/bot"]
        );
        let idle = cli.json(&["instances", "list", "--status", "idle"]).await;
        assert!(items(&idle, "instances").is_empty());
        assert_eq!(
            cli.json(&["instances", "get", "bot"]).await["statusMessage"],
            "up"
        );
        let deleted = cli.json(&["instances", "delete", "bot"]).await;
        assert_eq!(deleted["status"], "INSTANCE_STATUS_TERMINATED");
        let refused = cli.fails(&["agents", "delete", "ghost"], 4).await;
        assert!(refused.contains("NOT_FOUND"), "{refused}");
        cli.json(&["agents", "delete", "helper"]).await;
    }
);

backend_tests!(
    contexts_are_read_written_diffed_and_rolled_back,
    |app| async move {
        let acme = app.tenant("acme").await;
        acme.project("web").await;
        let cli = Cli::new(app.addr, &acme.admin_key)
            .env("AGENTRY_WORKSPACE", "acme")
            .env("AGENTRY_PROJECT", "web");
        let first = cli.file("doc.yaml", "plan: [draft]\nowner: ada\n");
        let created = cli
            .json(&[
                "contexts",
                "create",
                "notes",
                "-f",
                first.to_str().unwrap(),
                "--description",
                "team notes",
            ])
            .await;
        assert_eq!(created["headVersion"], "1");

        let second = cli.file(
            "doc.json",
            r#"{"plan": ["draft", "review"], "owner": "ada"}"#,
        );
        let written = cli
            .json(&["contexts", "write", "notes", "-f", second.to_str().unwrap()])
            .await;
        assert_eq!(written["version"]["version"], "2");
        let merged = cli
            .json(&[
                "contexts",
                "write",
                "notes",
                "--merge-patch",
                r#"{"owner": "grace"}"#,
                "--expected-version",
                "2",
            ])
            .await;
        assert_eq!(merged["version"]["op"], "CONTEXT_OP_MERGE_PATCH");
        let patched = cli
            .json(&[
                "contexts",
                "write",
                "notes",
                "--json-patch",
                r#"[{"op": "add", "path": "/plan/-", "value": "ship"}]"#,
            ])
            .await;
        assert_eq!(patched["version"]["version"], "4");
        let stale = cli
            .fails(
                &[
                    "contexts",
                    "write",
                    "notes",
                    "--merge-patch",
                    r#"{"owner": "x"}"#,
                    "--expected-version",
                    "2",
                ],
                5,
            )
            .await;
        assert!(stale.starts_with("error: ABORTED"), "{stale}");
        assert_eq!(
            cli.run(&["contexts", "write", "notes"]).await.code,
            2,
            "one change is required"
        );

        let head = cli.json(&["contexts", "read", "notes"]).await;
        assert_eq!(
            head["data"],
            json!({"plan": ["draft", "review", "ship"], "owner": "grace"})
        );
        let v1 = cli
            .json(&["contexts", "read", "notes", "--version", "1"])
            .await;
        assert_eq!(v1["data"], json!({"plan": ["draft"], "owner": "ada"}));
        // On a table, `read` prints the document itself.
        let doc = cli.run(&["contexts", "read", "notes", "-o", "table"]).await;
        let doc: serde_json::Value = serde_json::from_str(&doc.stdout).unwrap();
        assert_eq!(doc, head["data"]);

        let log = cli.json(&["contexts", "log", "notes"]).await;
        let versions: Vec<&str> = items(&log, "versions")
            .iter()
            .map(|v| v["version"].as_str().unwrap())
            .collect();
        assert_eq!(versions, ["4", "3", "2", "1"]);
        let diff = cli.json(&["contexts", "diff", "notes", "1", "4"]).await;
        assert_eq!(items(&diff, "operations").len(), 3, "{diff}");
        let table = cli
            .run(&["contexts", "diff", "notes", "2", "3", "-o", "table"])
            .await;
        assert_eq!(table.stdout, "~ /owner = \"grace\"\n");
        let none = cli
            .run(&["contexts", "diff", "notes", "4", "4", "-o", "table"])
            .await;
        assert_eq!(none.stdout, "no changes\n");

        let rolled = cli.json(&["contexts", "rollback", "notes", "1"]).await;
        assert_eq!(rolled["version"]["op"], "CONTEXT_OP_ROLLBACK");
        assert_eq!(
            cli.json(&["contexts", "read", "notes"]).await["data"],
            v1["data"]
        );
        assert_eq!(
            cli.json(&["contexts", "get", "notes"]).await["headVersion"],
            "5"
        );
        assert_eq!(
            names(&cli.json(&["contexts", "list"]).await, "contexts"),
            ["workspaces/acme/projects/web/contexts/notes"]
        );
        cli.json(&["contexts", "delete", "notes"]).await;
        cli.fails(&["contexts", "read", "notes"], 4).await;
    }
);

backend_tests!(
    contexts_watch_prints_new_versions_as_they_come,
    |app| async move {
        let acme = app.tenant("acme").await;
        acme.project("web").await;
        let cli = Cli::new(app.addr, &acme.admin_key)
            .env("AGENTRY_WORKSPACE", "acme")
            .env("AGENTRY_PROJECT", "web");
        cli.json(&["contexts", "create", "notes"]).await;
        cli.json(&["contexts", "write", "notes", "--merge-patch", r#"{"a": 1}"#])
            .await;

        let mut watch = cli.spawn(&["contexts", "watch", "notes", "--after", "1"]);
        let mut lines = BufReader::new(watch.stdout.take().unwrap()).lines();
        let mut next = async || {
            let line = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
                .await
                .expect("a version within 10 s")
                .unwrap()
                .expect("the watch is still running");
            serde_json::from_str::<serde_json::Value>(&line).unwrap()
        };
        let replayed = next().await;
        assert_eq!(
            (replayed["version"].as_str(), &replayed["data"]),
            (Some("2"), &json!({"a": 1}))
        );
        cli.json(&["contexts", "write", "notes", "--merge-patch", r#"{"b": 2}"#])
            .await;
        let live = next().await;
        assert_eq!(
            (live["version"].as_str(), &live["data"]),
            (Some("3"), &json!({"a": 1, "b": 2}))
        );
        watch.kill().await.unwrap();
    }
);
