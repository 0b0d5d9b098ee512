//! The Rust client against a real server (the `agentry` server library listening on a
//! socket, on a temporary SQLite file): auth, an error with details, pagination, a CAS
//! conflict on a context, and a streamed run with a resume.

use std::time::Duration;

use agentry_client::{Agentry, ErrorKind, connect, pb, prost_types, run_events};
use agentry_server::config::{Config, Secret};
use futures::StreamExt;

struct Server {
    url: String,
    root: String,
    running: agentry_server::RunningServer,
    dir: std::path::PathBuf,
}

impl Server {
    async fn stop(self) {
        self.running.shutdown().await.unwrap();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn server() -> Server {
    let dir = std::env::temp_dir().join(format!("agentry-client-{}", uuid::Uuid::now_v7()));
    std::fs::create_dir_all(&dir).unwrap();
    let root = format!("agk_root_{}", uuid::Uuid::now_v7().simple());
    let config = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        database_url: Secret::new(format!("sqlite://{}/a.db", dir.display())),
        root_key: Some(Secret::new(root.clone())),
        shutdown_grace: Duration::from_secs(1),
        ..Config::default()
    };
    let running = agentry_server::start(config).await.expect("server starts");
    Server {
        url: format!("http://{}", running.local_addr),
        root,
        running,
        dir,
    }
}

/// Workspace `acme`, project `web`, agent `echo`, instance `echo-1`; developer and
/// worker clients.
async fn tenant(s: &Server) -> (Agentry, Agentry) {
    let mut root = connect(s.url.clone(), &s.root).await.unwrap();
    root.registry
        .create_workspace(pb::CreateWorkspaceRequest {
            workspace_id: "acme".into(),
            workspace: Some(pb::Workspace::default()),
            ..Default::default()
        })
        .await
        .unwrap();
    let key = |role: pb::Role| {
        let mut root = root.clone();
        async move {
            root.registry
                .create_api_key(pb::CreateApiKeyRequest {
                    parent: "workspaces/acme".into(),
                    api_key: Some(pb::ApiKey {
                        role: role as i32,
                        ..Default::default()
                    }),
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner()
                .secret
        }
    };
    let mut dev = connect(s.url.clone(), &key(pb::Role::Developer).await)
        .await
        .unwrap();
    let worker = connect(s.url.clone(), &key(pb::Role::Worker).await)
        .await
        .unwrap();
    root.registry
        .create_project(pb::CreateProjectRequest {
            parent: "workspaces/acme".into(),
            project_id: "web".into(),
            project: Some(pb::Project::default()),
            ..Default::default()
        })
        .await
        .unwrap();
    dev.registry
        .create_agent(pb::CreateAgentRequest {
            parent: "workspaces/acme".into(),
            agent_id: "echo".into(),
            agent: Some(pb::Agent::default()),
            ..Default::default()
        })
        .await
        .unwrap();
    dev.registry
        .create_instance(pb::CreateInstanceRequest {
            parent: "workspaces/acme/projects/web".into(),
            instance_id: "echo-1".into(),
            instance: Some(pb::Instance {
                agent: "workspaces/acme/agents/echo".into(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap();
    (dev, worker)
}

#[tokio::test]
async fn a_bad_key_is_unauthenticated_and_a_good_one_works() {
    let s = server().await;
    let (mut dev, _) = tenant(&s).await;
    let mut stranger = connect(s.url.clone(), "agk_acme_00_nope").await.unwrap();
    let error: agentry_client::Error = stranger
        .registry
        .get_project(pb::GetProjectRequest {
            name: "workspaces/acme/projects/web".into(),
        })
        .await
        .unwrap_err()
        .into();
    assert_eq!(error.kind, ErrorKind::Unauthenticated);
    assert!(!error.reason().is_empty(), "{error:?}");
    let project = dev
        .registry
        .get_project(pb::GetProjectRequest {
            name: "workspaces/acme/projects/web".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(project.name, "workspaces/acme/projects/web");
    s.stop().await;
}

#[tokio::test]
async fn errors_carry_their_details() {
    let s = server().await;
    let (mut dev, _) = tenant(&s).await;
    let error: agentry_client::Error = dev
        .execution
        .create_session(pb::CreateSessionRequest {
            parent: "workspaces/acme/projects/web".into(),
            session_id: "Not A Slug".into(),
            session: Some(pb::Session {
                instance: "workspaces/acme/projects/web/instances/echo-1".into(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap_err()
        .into();
    assert_eq!(error.kind, ErrorKind::InvalidArgument);
    assert_eq!(error.reason(), "INVALID_ARGUMENT");
    assert_eq!(error.details.field_violations[0].0, "session_id");
    s.stop().await;
}

#[tokio::test]
async fn lists_page_with_tokens() {
    let s = server().await;
    let (mut dev, _) = tenant(&s).await;
    for i in 0..5 {
        dev.execution
            .create_session(pb::CreateSessionRequest {
                parent: "workspaces/acme/projects/web".into(),
                session_id: format!("s{i}"),
                session: Some(pb::Session {
                    instance: "workspaces/acme/projects/web/instances/echo-1".into(),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await
            .unwrap();
    }
    let mut names = Vec::new();
    let mut token = String::new();
    loop {
        let page = dev
            .execution
            .list_sessions(pb::ListSessionsRequest {
                parent: "workspaces/acme/projects/web".into(),
                page_size: 2,
                page_token: token,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert!(page.sessions.len() <= 2);
        names.extend(page.sessions.into_iter().map(|s| s.name));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    names.sort();
    let expected: Vec<String> = (0..5)
        .map(|i| format!("workspaces/acme/projects/web/sessions/s{i}"))
        .collect();
    assert_eq!(names, expected);
    s.stop().await;
}

fn doc(json: serde_json::Value) -> prost_types::Value {
    fn convert(v: serde_json::Value) -> prost_types::Value {
        use prost_types::value::Kind;
        let kind = match v {
            serde_json::Value::Null => Kind::NullValue(0),
            serde_json::Value::Bool(b) => Kind::BoolValue(b),
            serde_json::Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap()),
            serde_json::Value::String(s) => Kind::StringValue(s),
            serde_json::Value::Array(a) => Kind::ListValue(prost_types::ListValue {
                values: a.into_iter().map(convert).collect(),
            }),
            serde_json::Value::Object(o) => Kind::StructValue(prost_types::Struct {
                fields: o.into_iter().map(|(k, v)| (k, convert(v))).collect(),
            }),
        };
        prost_types::Value { kind: Some(kind) }
    }
    convert(json)
}

#[tokio::test]
async fn a_stale_compare_and_swap_is_a_version_conflict() {
    let s = server().await;
    let (mut dev, _) = tenant(&s).await;
    let name = "workspaces/acme/projects/web/contexts/memory";
    dev.contexts
        .create_context(pb::CreateContextRequest {
            parent: "workspaces/acme/projects/web".into(),
            context_id: "memory".into(),
            context: Some(pb::Context::default()),
            data: Some(doc(serde_json::json!({"n": 1}))),
            ..Default::default()
        })
        .await
        .unwrap();
    let write = |n: f64| pb::WriteContextRequest {
        name: name.into(),
        expected_version: Some(1),
        change: Some(pb::write_context_request::Change::Data(doc(
            serde_json::json!({ "n": n }),
        ))),
        ..Default::default()
    };
    dev.contexts.write_context(write(2.0)).await.unwrap();
    let error: agentry_client::Error = dev
        .contexts
        .write_context(write(3.0))
        .await
        .unwrap_err()
        .into();
    assert_eq!(error.kind, ErrorKind::Conflict);
    assert_eq!(error.reason(), "VERSION_CONFLICT");
    assert_eq!(error.current_version(), Some(2));
    s.stop().await;
}

#[tokio::test]
async fn a_run_streams_to_its_end_and_resumes_from_any_sequence() {
    let s = server().await;
    let (mut dev, mut worker) = tenant(&s).await;
    dev.execution
        .create_session(pb::CreateSessionRequest {
            parent: "workspaces/acme/projects/web".into(),
            session_id: "chat".into(),
            session: Some(pb::Session {
                instance: "workspaces/acme/projects/web/instances/echo-1".into(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap();
    let run = dev
        .execution
        .create_run(pb::CreateRunRequest {
            parent: "workspaces/acme/projects/web/sessions/chat".into(),
            run: Some(pb::Run {
                input: vec![pb::Message {
                    role: pb::MessageRole::User as i32,
                    content: "hi".into(),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let reader = dev.clone();
    let name = run.name.clone();
    let follower = tokio::spawn(async move {
        run_events(&reader, name, 0)
            .map(|e| e.unwrap().sequence)
            .collect::<Vec<_>>()
            .await
    });
    let task = worker
        .execution
        .poll_task(pb::PollTaskRequest {
            parent: "workspaces/acme".into(),
            agents: vec!["workspaces/acme/agents/echo".into()],
            wait: Some(prost_types::Duration {
                seconds: 10,
                nanos: 0,
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .task
        .expect("a task");
    let delta = |text: &str| pb::RunEventInput {
        kind: Some(pb::run_event_input::Kind::MessageDelta(pb::MessageDelta {
            message_id: "m".into(),
            text: text.into(),
        })),
    };
    worker
        .execution
        .append_run_events(pb::AppendRunEventsRequest {
            task_token: task.task_token.clone(),
            events: vec![delta("h"), delta("i")],
            ..Default::default()
        })
        .await
        .unwrap();
    worker
        .execution
        .complete_task(pb::CompleteTaskRequest {
            task_token: task.task_token.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    let sequences = tokio::time::timeout(Duration::from_secs(10), follower)
        .await
        .expect("the stream ends after the terminal event")
        .unwrap();
    assert_eq!(sequences, [1, 2, 3, 4, 5]);
    let resumed: Vec<i64> = run_events(&dev, run.name.clone(), 3)
        .map(|e| e.unwrap().sequence)
        .collect()
        .await;
    assert_eq!(resumed, [4, 5]);
    s.stop().await;
}
