//! What a black-box fuzz of every method found, pinned one case at a time on both back
//! ends: text holding U+0000 (which Postgres cannot store) is refused up front, the same
//! on SQLite, and never reaches a run, a session or the reaper; errors that echo a huge
//! input stay small; oversized requests are RESOURCE_EXHAUSTED with details; bytes that
//! do not decode are MALFORMED_REQUEST saying what is wrong. And on SQLite, where rows
//! written before the rule may hold U+0000, such rows read back and change nothing else.

mod fuzz_support;

use std::time::{Duration, Instant};

use agentry_e2e::{Backend, FreshDatabase, fresh_database, json, pb, to_value};
use fuzz_support::{Outcome, Server, call_raw, status_wire_bytes};
use prost::Message as _;
use tonic::{Code, Status};
use tonic_types::StatusExt;

const ROOT: &str = "agk_root_fuzzfindings0123456789abcdef0123456789";

/// One tenant with a project, an agent with tools, an instance and a session.
struct Setup {
    server: Server,
    database: FreshDatabase,
    admin: String,
    worker: String,
}

const ACME: &str = "workspaces/acme";
const WEB: &str = "workspaces/acme/projects/web";
const AGENT: &str = "workspaces/acme/agents/helper";

impl Setup {
    async fn new(backend: Backend) -> Self {
        let database = fresh_database(backend).await;
        let server = Server::start(&database.url, ROOT, Duration::from_millis(100)).await;
        let _: pb::Workspace = Server::must(
            server
                .call(
                    "RegistryService/CreateWorkspace",
                    ROOT,
                    pb::CreateWorkspaceRequest {
                        workspace_id: "acme".into(),
                        workspace: Some(pb::Workspace::default()),
                        request_id: String::new(),
                    },
                )
                .await,
            "workspace",
        );
        let mut keys = Vec::new();
        for role in [pb::Role::Admin, pb::Role::Worker] {
            let created: pb::CreateApiKeyResponse = Server::must(
                server
                    .call(
                        "RegistryService/CreateApiKey",
                        ROOT,
                        pb::CreateApiKeyRequest {
                            parent: ACME.into(),
                            api_key: Some(pb::ApiKey {
                                role: role as i32,
                                ..Default::default()
                            }),
                            request_id: String::new(),
                        },
                    )
                    .await,
                "key",
            );
            keys.push(created.secret);
        }
        let setup = Self {
            server,
            database,
            admin: keys[0].clone(),
            worker: keys[1].clone(),
        };
        let _: pb::Project = setup
            .admin(
                "RegistryService/CreateProject",
                pb::CreateProjectRequest {
                    parent: ACME.into(),
                    project_id: "web".into(),
                    project: Some(pb::Project::default()),
                    request_id: String::new(),
                },
            )
            .await
            .expect("project");
        let tool = |name: &str| pb::Tool {
            name: name.into(),
            description: String::new(),
            risk: pb::ToolRisk::Write as i32,
        };
        let _: pb::Agent = setup
            .admin(
                "RegistryService/CreateAgent",
                pb::CreateAgentRequest {
                    parent: ACME.into(),
                    agent_id: "helper".into(),
                    agent: Some(pb::Agent {
                        tools: vec![tool("write_file")],
                        enabled: Some(true),
                        ..Default::default()
                    }),
                    request_id: String::new(),
                },
            )
            .await
            .expect("agent");
        let _: pb::Instance = setup
            .admin(
                "RegistryService/CreateInstance",
                pb::CreateInstanceRequest {
                    parent: WEB.into(),
                    instance_id: "bot".into(),
                    instance: Some(pb::Instance {
                        agent: AGENT.into(),
                        ..Default::default()
                    }),
                    request_id: String::new(),
                },
            )
            .await
            .expect("instance");
        setup
    }

    async fn admin<Req, Resp>(&self, method: &str, request: Req) -> Result<Resp, Status>
    where
        Req: prost::Message + Default + Send + Sync + 'static,
        Resp: prost::Message + prost::Name + Default + Send + Sync + 'static,
    {
        self.server.call(method, &self.admin, request).await
    }

    async fn worker<Req, Resp>(&self, method: &str, request: Req) -> Result<Resp, Status>
    where
        Req: prost::Message + Default + Send + Sync + 'static,
        Resp: prost::Message + prost::Name + Default + Send + Sync + 'static,
    {
        self.server.call(method, &self.worker, request).await
    }

    async fn session(&self, id: &str) -> String {
        let session: pb::Session = self
            .admin(
                "ExecutionService/CreateSession",
                pb::CreateSessionRequest {
                    parent: WEB.into(),
                    session_id: id.into(),
                    session: Some(pb::Session {
                        instance: format!("{WEB}/instances/bot"),
                        ..Default::default()
                    }),
                    request_id: String::new(),
                },
            )
            .await
            .expect("session");
        session.name
    }

    async fn try_run(
        &self,
        session: &str,
        content: &str,
        strategy: pb::MultitaskStrategy,
    ) -> Result<pb::Run, Status> {
        self.admin(
            "ExecutionService/CreateRun",
            pb::CreateRunRequest {
                parent: session.into(),
                run: Some(pb::Run {
                    input: vec![message(pb::MessageRole::User, content)],
                    multitask_strategy: strategy as i32,
                    ..Default::default()
                }),
                request_id: String::new(),
                approval_timeout: None,
            },
        )
        .await
    }

    /// Polls once; the task, if any.
    async fn claim(&self, lease_secs: i64) -> Option<pb::Task> {
        let polled: pb::PollTaskResponse = self
            .worker(
                "ExecutionService/PollTask",
                pb::PollTaskRequest {
                    parent: ACME.into(),
                    agents: vec![AGENT.into()],
                    wait: Some(prost_types::Duration {
                        seconds: 1,
                        nanos: 0,
                    }),
                    lease_duration: Some(prost_types::Duration {
                        seconds: lease_secs,
                        nanos: 0,
                    }),
                    ..Default::default()
                },
            )
            .await
            .expect("poll");
        polled.task
    }

    async fn complete(&self, token: &str, content: &str) -> Result<pb::Run, Status> {
        self.worker(
            "ExecutionService/CompleteTask",
            pb::CompleteTaskRequest {
                task_token: token.into(),
                output: vec![message(pb::MessageRole::Assistant, content)],
                ..Default::default()
            },
        )
        .await
    }

    async fn get_run(&self, name: &str) -> pb::Run {
        self.admin(
            "ExecutionService/GetRun",
            pb::GetRunRequest { name: name.into() },
        )
        .await
        .expect("get run")
    }

    async fn stop(self) {
        self.server.stop().await;
        self.database.drop_database().await;
    }
}

fn message(role: pb::MessageRole, content: &str) -> pb::Message {
    pb::Message {
        role: role as i32,
        content: content.into(),
        ..Default::default()
    }
}

#[track_caller]
fn assert_refused(
    result: Result<impl std::fmt::Debug, Status>,
    reason: &str,
    field: &str,
) -> Status {
    let status = result.expect_err("refused");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    let info = status.get_details_error_info().expect("an ErrorInfo");
    assert_eq!(info.reason, reason, "{status:?}");
    let fields: Vec<String> = status
        .get_details_bad_request()
        .map(|b| b.field_violations.into_iter().map(|v| v.field).collect())
        .unwrap_or_default();
    assert!(
        fields.iter().any(|f| f == field),
        "{field} in {fields:?}: {status:?}"
    );
    status
}

macro_rules! both_backends {
    ($name:ident, $body:ident) => {
        mod $name {
            #[tokio::test]
            async fn sqlite() {
                super::$body(agentry_e2e::Backend::Sqlite).await;
            }

            #[tokio::test]
            async fn postgres() {
                super::$body(agentry_e2e::Backend::Postgres).await;
            }
        }
    };
}

both_backends!(
    nul_text_never_reaches_a_run_a_session_or_the_reaper,
    nul_text
);

async fn nul_text(backend: Backend) {
    let s = Setup::new(backend).await;
    let chat = s.session("chat").await;

    let direct = s
        .try_run(&chat, "a\0b", pb::MultitaskStrategy::Reject)
        .await;
    assert_refused(direct, "INVALID_ARGUMENT", "run.input[0].content");

    // The reported chain: an active run, then a NUL run ENQUEUEd behind it.
    let active = s
        .try_run(&chat, "first", pb::MultitaskStrategy::Reject)
        .await
        .expect("run");
    let task = s.claim(30).await.expect("the active run is claimed");
    let queued = s
        .try_run(&chat, "x\0y", pb::MultitaskStrategy::Enqueue)
        .await;
    assert_refused(queued, "INVALID_ARGUMENT", "run.input[0].content");

    let completed = pb::RunEventInput {
        kind: Some(pb::run_event_input::Kind::MessageCompleted(
            pb::MessageCompleted {
                message: Some(message(pb::MessageRole::Assistant, "bad\0")),
            },
        )),
    };
    let append: Result<pb::AppendRunEventsResponse, _> = s
        .worker(
            "ExecutionService/AppendRunEvents",
            pb::AppendRunEventsRequest {
                task_token: task.task_token.clone(),
                events: vec![completed],
                request_id: String::new(),
            },
        )
        .await;
    assert_refused(
        append,
        "INVALID_ARGUMENT",
        "events[0].message_completed.message.content",
    );
    let complete = s.complete(&task.task_token, "out\0put").await;
    assert_refused(complete, "INVALID_ARGUMENT", "output[0].content");
    let document: Result<pb::Context, _> = s
        .admin(
            "ContextService/CreateContext",
            pb::CreateContextRequest {
                parent: WEB.into(),
                context_id: "notes".into(),
                context: Some(pb::Context::default()),
                data: Some(to_value(json!({"list": ["ok", {"deep": "n\u{0}ul"}]}))),
                request_id: String::new(),
            },
        )
        .await;
    assert_refused(document, "INVALID_ARGUMENT", "data/list/1/deep");

    // The worker's real answer lands; the session is free again, and serves the next run.
    let done = s
        .complete(&task.task_token, "fine")
        .await
        .expect("complete");
    assert_eq!(done.name, active.name);
    assert_eq!(done.status, pb::RunStatus::Succeeded as i32);
    let next = s
        .try_run(&chat, "again", pb::MultitaskStrategy::Reject)
        .await
        .expect("not busy");
    let task = s.claim(1).await.expect("the next run is claimed");
    assert_eq!(task.run.expect("a run").name, next.name);
    // Its lease lapses without a heartbeat: the reaper re-queues it.
    let deadline = Instant::now() + Duration::from_secs(30);
    while s.get_run(&next.name).await.attempt < 2 {
        assert!(
            Instant::now() < deadline,
            "the reaper re-queues a lapsed lease"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    s.stop().await;
}

both_backends!(errors_that_echo_huge_input_stay_small, huge_echoes);

async fn huge_echoes(backend: Backend) {
    let s = Setup::new(backend).await;
    let huge = "k".repeat(10_000);
    let small = |status: Status| {
        let bytes = status_wire_bytes(&status);
        assert!(
            bytes < 4096,
            "a {bytes}-byte status: {:?}",
            status.message()
        );
        status
    };
    let labelled: Result<pb::Project, _> = s
        .admin(
            "RegistryService/CreateProject",
            pb::CreateProjectRequest {
                parent: ACME.into(),
                project_id: "labelled".into(),
                project: Some(pb::Project {
                    labels: [(huge.clone(), "v".to_owned())].into(),
                    ..Default::default()
                }),
                request_id: String::new(),
            },
        )
        .await;
    small(labelled.expect_err("a 10000-character label key"));
    let masked: Result<pb::Project, _> = s
        .admin(
            "RegistryService/UpdateProject",
            pb::UpdateProjectRequest {
                project: Some(pb::Project {
                    name: WEB.into(),
                    ..Default::default()
                }),
                update_mask: Some(prost_types::FieldMask {
                    paths: vec![huge.clone()],
                }),
                request_id: String::new(),
            },
        )
        .await;
    small(masked.expect_err("a 10000-character mask path"));

    let chat = s.session("chat").await;
    let run = s
        .try_run(&chat, "plan", pb::MultitaskStrategy::Reject)
        .await
        .expect("run");
    let task = s.claim(30).await.expect("claimed");
    let plan: Result<pb::ProposePlanResponse, _> = s
        .worker(
            "ExecutionService/ProposePlan",
            pb::ProposePlanRequest {
                task_token: task.task_token.clone(),
                steps: vec![pb::PlanStep {
                    tool: huge.clone(),
                    ..Default::default()
                }],
                request_id: String::new(),
            },
        )
        .await;
    small(plan.expect_err("a 10000-character tool"));
    let plan: pb::ProposePlanResponse = s
        .worker(
            "ExecutionService/ProposePlan",
            pb::ProposePlanRequest {
                task_token: task.task_token.clone(),
                steps: vec![pb::PlanStep {
                    tool: "write_file".into(),
                    ..Default::default()
                }],
                request_id: String::new(),
            },
        )
        .await
        .expect("a plan that needs a decision");
    assert!(!plan.approved);
    let decided: Result<pb::Run, _> = s
        .admin(
            "ExecutionService/DecideApproval",
            pb::DecideApprovalRequest {
                name: run.name.clone(),
                approval_id: huge.clone(),
                decision: pb::ApprovalDecision::Approve as i32,
                comment: String::new(),
                request_id: String::new(),
            },
        )
        .await;
    let status = small(decided.expect_err("a 10000-character approval id"));
    assert_eq!(status.code(), Code::FailedPrecondition);
    s.stop().await;
}

both_backends!(
    oversized_requests_are_resource_exhausted_with_details,
    oversized
);

async fn oversized(backend: Backend) {
    let s = Setup::new(backend).await;
    let big = "x".repeat(5 << 20);
    let cases: [(&str, Vec<u8>); 3] = [
        (
            "/agentry.v1.RegistryService/CreateProject",
            pb::CreateProjectRequest {
                parent: ACME.into(),
                project_id: "huge".into(),
                project: Some(pb::Project {
                    description: big.clone(),
                    ..Default::default()
                }),
                request_id: String::new(),
            }
            .encode_to_vec(),
        ),
        (
            "/agentry.v1.ContextService/ReadContext",
            pb::ReadContextRequest {
                name: big.clone(),
                version: 0,
            }
            .encode_to_vec(),
        ),
        (
            "/agentry.v1.ExecutionService/StreamRunEvents",
            pb::StreamRunEventsRequest {
                name: big.clone(),
                after_sequence: 0,
            }
            .encode_to_vec(),
        ),
    ];
    for (path, bytes) in cases {
        let streaming = path.ends_with("StreamRunEvents");
        let Outcome::Refused(status) =
            call_raw(&s.server.channel, path, &s.admin, bytes, streaming).await
        else {
            panic!("{path}: a 5 MiB request is refused");
        };
        assert_eq!(status.code(), Code::ResourceExhausted, "{path}: {status:?}");
        let info = status.get_details_error_info().expect("an ErrorInfo");
        assert_eq!(info.reason, "MESSAGE_TOO_LARGE");
        assert_eq!(
            info.metadata.get("limit_bytes").map(String::as_str),
            Some("4194304")
        );
    }
    s.stop().await;
}

both_backends!(undecodable_requests_say_what_is_wrong, undecodable);

async fn undecodable(backend: Backend) {
    let s = Setup::new(backend).await;
    let path = "/agentry.v1.ExecutionService/GetSession";
    let good = pb::GetSessionRequest {
        name: format!("{WEB}/sessions/chat"),
    }
    .encode_to_vec();
    let mut invalid_utf8 = good.clone();
    let last = invalid_utf8.len() - 1;
    invalid_utf8[last] = 0xff;
    let mut deep = pb::CreateContextRequest {
        parent: WEB.into(),
        context_id: "deep".into(),
        ..Default::default()
    };
    let mut doc = json!(1);
    for _ in 0..50 {
        doc = json!({ "k": doc });
    }
    deep.data = Some(to_value(doc));
    let cases: [(&str, Vec<u8>, &str); 4] = [
        (path, good[..good.len() - 4].to_vec(), "truncated"),
        (path, invalid_utf8, "name is not valid UTF-8"),
        (path, vec![0x0f, 0x01], "invalid field key"),
        (
            "/agentry.v1.ContextService/CreateContext",
            deep.encode_to_vec(),
            "at most 32 levels",
        ),
    ];
    for (path, bytes, says) in cases {
        let Outcome::Refused(status) =
            call_raw(&s.server.channel, path, &s.admin, bytes, false).await
        else {
            panic!("{says}: refused");
        };
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        let info = status.get_details_error_info().expect("an ErrorInfo");
        assert_eq!(info.reason, "MALFORMED_REQUEST");
        assert!(
            status.message().contains(says),
            "{says}: {:?}",
            status.message()
        );
        if !says.contains("32 levels") {
            assert!(!status.message().contains("nest"), "{:?}", status.message());
        }
    }
    s.stop().await;
}

/// Rows written by versions that stored U+0000 on SQLite: they read back as stored, a
/// client sending them back is told which field, and they stop nothing.
#[tokio::test]
async fn legacy_nul_rows_on_sqlite_read_back_and_stop_nothing() {
    let s = Setup::new(Backend::Sqlite).await;
    let chat = s.session("chat").await;
    let run = s
        .try_run(&chat, "hello", pb::MultitaskStrategy::Reject)
        .await
        .expect("run");
    let task = s.claim(30).await.expect("claimed");
    s.complete(&task.task_token, "answer")
        .await
        .expect("complete");
    for sql in [
        "UPDATE projects SET description = 'be' || char(0) || 'fore'",
        "UPDATE messages SET content = content || char(0) || 'stored'",
        "UPDATE sessions SET description = 'nul' || char(0)",
    ] {
        assert!(s.database.execute(sql).await.expect(sql) > 0, "{sql}");
    }
    let project: pb::Project = s
        .admin(
            "RegistryService/GetProject",
            pb::GetProjectRequest { name: WEB.into() },
        )
        .await
        .expect("a project with a stored NUL reads back");
    assert_eq!(project.description, "be\0fore");
    let messages: pb::ListMessagesResponse = s
        .admin(
            "ExecutionService/ListMessages",
            pb::ListMessagesRequest {
                parent: chat.clone(),
                ..Default::default()
            },
        )
        .await
        .expect("a transcript with stored NULs reads back");
    assert!(
        messages
            .messages
            .iter()
            .all(|m| m.content.ends_with("\0stored"))
    );
    // Sent back as it was read, the text is refused and named.
    let update: Result<pb::Project, _> = s
        .admin(
            "RegistryService/UpdateProject",
            pb::UpdateProjectRequest {
                project: Some(project),
                update_mask: None,
                request_id: String::new(),
            },
        )
        .await;
    assert_refused(update, "INVALID_ARGUMENT", "project.description");
    // The session runs on over its transcript, and the reaper still works.
    let next = s
        .try_run(&chat, "more", pb::MultitaskStrategy::Reject)
        .await
        .expect("run");
    let task = s.claim(1).await.expect("claimed");
    assert_eq!(task.run.expect("a run").name, next.name);
    let deadline = Instant::now() + Duration::from_secs(30);
    while s.get_run(&next.name).await.attempt < 2 {
        assert!(
            Instant::now() < deadline,
            "the reaper re-queues a lapsed lease"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        s.get_run(&run.name).await.status,
        pb::RunStatus::Succeeded as i32
    );
    s.stop().await;
}
