//! The tenant a fuzz run works in, and a valid-looking request for every method, so that
//! a hostile variant of one field gets past the others and reaches the validation, the
//! store and the database behind it.
//!
//! Requests that use something up (deletes, cancels, decisions, the calls that end a
//! worker's attempt) get a fresh victim whenever the previous request consumed theirs:
//! [`World::baseline`] prepares one on demand and [`World::accepted`] marks it used.
//! Requests that change long-lived things aim at resources kept for them (`editable`,
//! `status-bot`, workspace `fuzzws`), so that the rest of the world stays usable.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use agentry_e2e::{json, pb, to_struct, to_value};
use prost::Message as _;
use prost_types::{FieldMask, Timestamp};

use super::Server;

/// A worker's live attempt.
struct Lease {
    token: String,
}

pub struct World {
    pub root: String,
    pub admin: String,
    pub worker: String,
    /// A valid page token of ListProjects: garbage for every other list.
    pub page_token: String,
    /// A name of the setup run in session `chat`.
    run: String,
    counter: u32,
    lease: Option<Lease>,
    parked: Option<(String, String)>,
    victims: std::collections::HashMap<String, String>,
}

pub const ACME: &str = "workspaces/acme";
pub const WEB: &str = "workspaces/acme/projects/web";
pub const HELPER: &str = "workspaces/acme/agents/helper";
const WORKER_AGENT: &str = "workspaces/acme/agents/wagent";
const CHAT: &str = "workspaces/acme/projects/web/sessions/chat";
const MEMORY: &str = "workspaces/acme/projects/web/contexts/memory";

fn tools() -> Vec<pb::Tool> {
    let tool = |name: &str, risk: pb::ToolRisk| pb::Tool {
        name: name.into(),
        description: format!("the {name} tool"),
        risk: risk as i32,
    };
    vec![
        tool("search", pb::ToolRisk::ReadOnly),
        tool("write_file", pb::ToolRisk::Write),
        tool("drop_table", pb::ToolRisk::Destructive),
    ]
}

fn agent() -> pb::Agent {
    pb::Agent {
        display_name: "Helper".into(),
        description: "helps".into(),
        agent_type: "langgraph".into(),
        capabilities: vec!["chat".into()],
        tools: tools(),
        config_schema: Some(to_struct(json!({
            "type": "object",
            "properties": {"temperature": {"type": "number", "maximum": 2}}
        }))),
        default_config: Some(to_struct(json!({"temperature": 1}))),
        labels: [("team".to_owned(), "core".to_owned())].into(),
        enabled: Some(true),
        ..Default::default()
    }
}

fn instance(agent: &str) -> pb::Instance {
    pb::Instance {
        display_name: "Bot".into(),
        agent: agent.into(),
        config: Some(to_struct(json!({"temperature": 0.5}))),
        heartbeat_ttl: Some(prost_types::Duration {
            seconds: 30,
            nanos: 0,
        }),
        labels: [("env".to_owned(), "test".to_owned())].into(),
        ..Default::default()
    }
}

fn seconds(n: i64) -> Option<prost_types::Duration> {
    Some(prost_types::Duration {
        seconds: n,
        nanos: 0,
    })
}

/// `offset_secs` from when the fuzz started: fixed, so that a baseline stays the same.
fn at(offset_secs: i64) -> Option<Timestamp> {
    static START: std::sync::OnceLock<i64> = std::sync::OnceLock::new();
    let start = START.get_or_init(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("after 1970")
            .as_secs() as i64
    });
    Some(Timestamp {
        seconds: start + offset_secs,
        nanos: 0,
    })
}

fn user(text: &str) -> pb::Message {
    pb::Message {
        role: pb::MessageRole::User as i32,
        content: text.into(),
        ..Default::default()
    }
}

fn run_spec() -> pb::Run {
    pb::Run {
        input: vec![user("hello")],
        autonomy_level: pb::AutonomyLevel::L1 as i32,
        timeout: seconds(600),
        retry_policy: Some(pb::RetryPolicy {
            initial_interval: seconds(1),
            backoff_coefficient: 2.0,
            max_interval: seconds(10),
            max_attempts: 3,
            non_retryable_error_types: vec!["fatal".into()],
        }),
        multitask_strategy: pb::MultitaskStrategy::Reject as i32,
        contexts: vec![pb::ContextBinding {
            context: MEMORY.into(),
            alias: "mem".into(),
        }],
        labels: [("k".to_owned(), "v".to_owned())].into(),
        ..Default::default()
    }
}

impl World {
    /// Workspace `acme` with everything the baselines name, and workspace `fuzzws`.
    pub async fn setup(server: &Server, root: &str) -> Self {
        let _: pb::Workspace = Server::must(
            server
                .call(
                    "RegistryService/CreateWorkspace",
                    root,
                    pb::CreateWorkspaceRequest {
                        workspace_id: "acme".into(),
                        workspace: Some(pb::Workspace {
                            display_name: "Acme".into(),
                            quotas: Some(pb::Quotas {
                                max_concurrent_runs: 1000,
                                max_instances_per_project: 1000,
                                ..Default::default()
                            }),
                            ..Default::default()
                        }),
                        request_id: String::new(),
                    },
                )
                .await,
            "create acme",
        );
        let _: pb::Workspace = Server::must(
            server
                .call(
                    "RegistryService/CreateWorkspace",
                    root,
                    pb::CreateWorkspaceRequest {
                        workspace_id: "fuzzws".into(),
                        workspace: Some(pb::Workspace::default()),
                        request_id: String::new(),
                    },
                )
                .await,
            "create fuzzws",
        );
        let key = |role: pb::Role| pb::CreateApiKeyRequest {
            parent: ACME.into(),
            api_key: Some(pb::ApiKey {
                display_name: "fuzz".into(),
                role: role as i32,
                ..Default::default()
            }),
            request_id: String::new(),
        };
        let created: pb::CreateApiKeyResponse = Server::must(
            server
                .call("RegistryService/CreateApiKey", root, key(pb::Role::Admin))
                .await,
            "admin key",
        );
        let admin = created.secret;
        let created: pb::CreateApiKeyResponse = Server::must(
            server
                .call("RegistryService/CreateApiKey", root, key(pb::Role::Worker))
                .await,
            "worker key",
        );
        let worker = created.secret;
        let mut world = Self {
            root: root.into(),
            admin,
            worker,
            page_token: String::new(),
            run: String::new(),
            counter: 0,
            lease: None,
            parked: None,
            victims: Default::default(),
        };
        for project in ["web", "web2"] {
            world.create_project(server, project).await;
        }
        let projects: pb::ListProjectsResponse = Server::must(
            server
                .call(
                    "RegistryService/ListProjects",
                    &world.admin,
                    pb::ListProjectsRequest {
                        parent: ACME.into(),
                        page_size: 1,
                        page_token: String::new(),
                    },
                )
                .await,
            "a page token",
        );
        world.page_token = projects.next_page_token;
        for id in ["helper", "editable", "wagent"] {
            world.create_agent(server, id).await;
        }
        for (id, agent) in [
            ("bot", HELPER),
            ("editable-bot", HELPER),
            ("status-bot", HELPER),
            ("wbot", WORKER_AGENT),
        ] {
            world.create_instance(server, id, agent).await;
        }
        let _: pb::Context = Server::must(
            server
                .call(
                    "ContextService/CreateContext",
                    &world.admin,
                    pb::CreateContextRequest {
                        parent: WEB.into(),
                        context_id: "memory".into(),
                        context: Some(pb::Context::default()),
                        data: Some(to_value(json!({"facts": ["a"], "n": 1}))),
                        request_id: String::new(),
                    },
                )
                .await,
            "context",
        );
        world
            .write_context(server, json!({"facts": ["a", "b"], "n": 2}))
            .await;
        let chat = world.create_session(server, "chat", "bot").await;
        world.run = world.create_run(server, &chat).await;
        world
    }

    /// The key a method is called with.
    pub fn key(&self, method: &str) -> &str {
        match method {
            "CreateWorkspace" | "ListWorkspaces" | "UpdateWorkspace" | "DeleteWorkspace" => {
                &self.root
            }
            "PollTask" | "HeartbeatTask" | "AppendRunEvents" | "ProposePlan" | "CompleteTask"
            | "FailTask" => &self.worker,
            _ => &self.admin,
        }
    }

    /// After `method` answered OK: its victim, if it had one, is used up.
    pub fn accepted(&mut self, method: &str) {
        match method {
            "ProposePlan" | "CompleteTask" | "FailTask" => self.lease = None,
            "DecideApproval" => self.parked = None,
            _ => {
                self.victims.remove(method);
            }
        }
    }

    /// A valid-looking request of `method`, encoded.
    pub async fn baseline(&mut self, server: &Server, method: &str) -> Vec<u8> {
        match method {
            "CreateWorkspace" => pb::CreateWorkspaceRequest {
                workspace_id: "fresh-ws".into(),
                workspace: Some(pb::Workspace {
                    display_name: "Fresh".into(),
                    description: "a workspace".into(),
                    quotas: Some(pb::Quotas {
                        max_projects: 5,
                        ..Default::default()
                    }),
                    labels: [("team".to_owned(), "a".to_owned())].into(),
                    ..Default::default()
                }),
                request_id: String::new(),
            }
            .encode_to_vec(),
            "GetWorkspace" => pb::GetWorkspaceRequest { name: ACME.into() }.encode_to_vec(),
            "ListWorkspaces" => pb::ListWorkspacesRequest {
                page_size: 2,
                page_token: String::new(),
            }
            .encode_to_vec(),
            "UpdateWorkspace" => pb::UpdateWorkspaceRequest {
                workspace: Some(pb::Workspace {
                    name: "workspaces/fuzzws".into(),
                    display_name: "Fuzz".into(),
                    description: "fuzzed".into(),
                    quotas: Some(pb::Quotas {
                        max_projects: 50,
                        ..Default::default()
                    }),
                    labels: [("a".to_owned(), "b".to_owned())].into(),
                    ..Default::default()
                }),
                update_mask: Some(mask(&["display_name", "labels", "quotas.max_projects"])),
                request_id: String::new(),
            }
            .encode_to_vec(),
            "DeleteWorkspace" => {
                let name = self.victim(server, method).await;
                pb::DeleteWorkspaceRequest {
                    name,
                    ..Default::default()
                }
                .encode_to_vec()
            }
            "CreateProject" => pb::CreateProjectRequest {
                parent: ACME.into(),
                project_id: "fresh-project".into(),
                project: Some(project("Fresh")),
                request_id: String::new(),
            }
            .encode_to_vec(),
            "GetProject" => pb::GetProjectRequest { name: WEB.into() }.encode_to_vec(),
            "ListProjects" => pb::ListProjectsRequest {
                parent: ACME.into(),
                page_size: 2,
                page_token: String::new(),
            }
            .encode_to_vec(),
            "UpdateProject" => pb::UpdateProjectRequest {
                project: Some(pb::Project {
                    name: WEB.into(),
                    ..project("Web")
                }),
                update_mask: Some(mask(&["display_name", "description", "labels"])),
                request_id: String::new(),
            }
            .encode_to_vec(),
            "DeleteProject" => {
                let name = self.victim(server, method).await;
                pb::DeleteProjectRequest {
                    name,
                    ..Default::default()
                }
                .encode_to_vec()
            }
            "CreateApiKey" => pb::CreateApiKeyRequest {
                parent: ACME.into(),
                api_key: Some(pb::ApiKey {
                    display_name: "ci".into(),
                    role: pb::Role::Developer as i32,
                    expire_time: at(86_400),
                    ..Default::default()
                }),
                request_id: String::new(),
            }
            .encode_to_vec(),
            "ListApiKeys" => pb::ListApiKeysRequest {
                parent: ACME.into(),
                page_size: 2,
                page_token: String::new(),
            }
            .encode_to_vec(),
            "DeleteApiKey" => {
                let name = self.victim(server, method).await;
                pb::DeleteApiKeyRequest {
                    name,
                    request_id: String::new(),
                }
                .encode_to_vec()
            }
            "CreateAgent" => pb::CreateAgentRequest {
                parent: ACME.into(),
                agent_id: "fresh-agent".into(),
                agent: Some(agent()),
                request_id: String::new(),
            }
            .encode_to_vec(),
            "GetAgent" => pb::GetAgentRequest {
                name: HELPER.into(),
                revision: 1,
            }
            .encode_to_vec(),
            "ListAgents" => pb::ListAgentsRequest {
                parent: ACME.into(),
                page_size: 2,
                page_token: String::new(),
            }
            .encode_to_vec(),
            "UpdateAgent" => pb::UpdateAgentRequest {
                agent: Some(pb::Agent {
                    name: format!("{ACME}/agents/editable"),
                    ..agent()
                }),
                update_mask: Some(mask(&["display_name", "tools", "config_schema"])),
                request_id: String::new(),
            }
            .encode_to_vec(),
            "DeleteAgent" => {
                let name = self.victim(server, method).await;
                pb::DeleteAgentRequest {
                    name,
                    ..Default::default()
                }
                .encode_to_vec()
            }
            "ListAgentRevisions" => pb::ListAgentRevisionsRequest {
                name: HELPER.into(),
                page_size: 2,
                page_token: String::new(),
            }
            .encode_to_vec(),
            "CreateInstance" => pb::CreateInstanceRequest {
                parent: WEB.into(),
                instance_id: "fresh-bot".into(),
                instance: Some(instance(HELPER)),
                request_id: String::new(),
            }
            .encode_to_vec(),
            "GetInstance" => pb::GetInstanceRequest {
                name: format!("{WEB}/instances/bot"),
            }
            .encode_to_vec(),
            "ListInstances" => pb::ListInstancesRequest {
                parent: WEB.into(),
                page_size: 2,
                page_token: String::new(),
                filter: "status = IDLE".into(),
            }
            .encode_to_vec(),
            "UpdateInstance" => pb::UpdateInstanceRequest {
                instance: Some(pb::Instance {
                    name: format!("{WEB}/instances/editable-bot"),
                    ..instance(HELPER)
                }),
                update_mask: Some(mask(&["display_name", "config", "labels"])),
                request_id: String::new(),
            }
            .encode_to_vec(),
            "DeleteInstance" => {
                let name = self.victim(server, method).await;
                pb::DeleteInstanceRequest {
                    name,
                    ..Default::default()
                }
                .encode_to_vec()
            }
            "SetInstanceStatus" => pb::SetInstanceStatusRequest {
                name: format!("{WEB}/instances/status-bot"),
                status: pb::InstanceStatus::Initializing as i32,
                status_message: "starting".into(),
                ..Default::default()
            }
            .encode_to_vec(),
            "HeartbeatInstance" => pb::HeartbeatInstanceRequest {
                name: format!("{WEB}/instances/status-bot"),
            }
            .encode_to_vec(),
            "CreateContext" => pb::CreateContextRequest {
                parent: WEB.into(),
                context_id: "fresh-context".into(),
                context: Some(pb::Context {
                    owner: format!("{WEB}/instances/bot"),
                    description: "notes".into(),
                    keep_last: 10,
                    labels: [("k".to_owned(), "v".to_owned())].into(),
                    ..Default::default()
                }),
                data: Some(to_value(json!({"a": 1, "list": [1, "two"]}))),
                request_id: String::new(),
            }
            .encode_to_vec(),
            "GetContext" => pb::GetContextRequest {
                name: MEMORY.into(),
            }
            .encode_to_vec(),
            "ListContexts" => pb::ListContextsRequest {
                parent: WEB.into(),
                page_size: 2,
                ..Default::default()
            }
            .encode_to_vec(),
            "DeleteContext" => {
                let name = self.victim(server, method).await;
                pb::DeleteContextRequest {
                    name,
                    request_id: String::new(),
                }
                .encode_to_vec()
            }
            "WriteContext" => pb::WriteContextRequest {
                name: MEMORY.into(),
                change: Some(pb::write_context_request::Change::JsonPatch(
                    pb::JsonPatch {
                        operations: vec![pb::JsonPatchOperation {
                            op: "add".into(),
                            path: "/facts/-".into(),
                            from: String::new(),
                            value: Some(to_value(json!("c"))),
                        }],
                    },
                )),
                expected_version: None,
                description: "a fact".into(),
                request_id: String::new(),
            }
            .encode_to_vec(),
            "ReadContext" => pb::ReadContextRequest {
                name: MEMORY.into(),
                version: 0,
            }
            .encode_to_vec(),
            "ListContextVersions" => pb::ListContextVersionsRequest {
                name: MEMORY.into(),
                page_size: 2,
                view: pb::ContextVersionView::Full as i32,
                ..Default::default()
            }
            .encode_to_vec(),
            "DiffContextVersions" => pb::DiffContextVersionsRequest {
                name: MEMORY.into(),
                from_version: 1,
                to_version: 2,
            }
            .encode_to_vec(),
            "RollbackContext" => pb::RollbackContextRequest {
                name: MEMORY.into(),
                target_version: 1,
                description: "back".into(),
                ..Default::default()
            }
            .encode_to_vec(),
            "WatchContext" => pb::WatchContextRequest {
                name: MEMORY.into(),
                after_version: 0,
                view: pb::ContextVersionView::Full as i32,
            }
            .encode_to_vec(),
            "CreateSession" => pb::CreateSessionRequest {
                parent: WEB.into(),
                session_id: "fresh-session".into(),
                session: Some(pb::Session {
                    instance: format!("{WEB}/instances/bot"),
                    description: "a chat".into(),
                    labels: [("k".to_owned(), "v".to_owned())].into(),
                    ..Default::default()
                }),
                request_id: String::new(),
            }
            .encode_to_vec(),
            "GetSession" => pb::GetSessionRequest { name: CHAT.into() }.encode_to_vec(),
            "ListSessions" => pb::ListSessionsRequest {
                parent: WEB.into(),
                page_size: 2,
                ..Default::default()
            }
            .encode_to_vec(),
            "DeleteSession" => {
                let name = self.victim(server, method).await;
                pb::DeleteSessionRequest {
                    name,
                    request_id: String::new(),
                }
                .encode_to_vec()
            }
            "ListMessages" => pb::ListMessagesRequest {
                parent: CHAT.into(),
                page_size: 2,
                ..Default::default()
            }
            .encode_to_vec(),
            // ENQUEUE: the session's active run does not stop the request short.
            "CreateRun" => pb::CreateRunRequest {
                parent: CHAT.into(),
                run: Some(pb::Run {
                    multitask_strategy: pb::MultitaskStrategy::Enqueue as i32,
                    ..run_spec()
                }),
                request_id: String::new(),
                approval_timeout: seconds(3600),
            }
            .encode_to_vec(),
            "GetRun" => pb::GetRunRequest {
                name: self.run.clone(),
            }
            .encode_to_vec(),
            "ListRuns" => pb::ListRunsRequest {
                parent: CHAT.into(),
                page_size: 2,
                filter: "status = QUEUED".into(),
                ..Default::default()
            }
            .encode_to_vec(),
            "CancelRun" => {
                let name = self.victim(server, method).await;
                pb::CancelRunRequest {
                    name,
                    reason: "no longer needed".into(),
                    request_id: String::new(),
                }
                .encode_to_vec()
            }
            "StreamRunEvents" => pb::StreamRunEventsRequest {
                name: self.run.clone(),
                after_sequence: 0,
            }
            .encode_to_vec(),
            "DecideApproval" => {
                let (name, approval_id) = self.parked(server).await;
                pb::DecideApprovalRequest {
                    name,
                    approval_id,
                    decision: pb::ApprovalDecision::Approve as i32,
                    comment: "go".into(),
                    request_id: String::new(),
                }
                .encode_to_vec()
            }
            "GetRunStats" => pb::GetRunStatsRequest {
                parent: WEB.into(),
                start_time: at(-86_400),
                end_time: at(3600),
                group_by_agent: true,
            }
            .encode_to_vec(),
            "PollTask" => pb::PollTaskRequest {
                parent: ACME.into(),
                agents: vec![HELPER.into()],
                identity: "fuzzer".into(),
                wait: seconds(0),
                lease_duration: seconds(30),
            }
            .encode_to_vec(),
            "HeartbeatTask" => {
                let task_token = self.lease(server).await;
                pb::HeartbeatTaskRequest {
                    task_token,
                    wait: None,
                }
                .encode_to_vec()
            }
            "AppendRunEvents" => {
                let task_token = self.lease(server).await;
                let event = |kind| pb::RunEventInput { kind: Some(kind) };
                use pb::run_event_input::Kind;
                pb::AppendRunEventsRequest {
                    task_token,
                    events: vec![
                        event(Kind::MessageDelta(pb::MessageDelta {
                            message_id: "m1".into(),
                            text: "Hel".into(),
                        })),
                        event(Kind::Usage(pb::Usage {
                            input_tokens: 3,
                            output_tokens: 1,
                            cost_usd: 0.001,
                        })),
                    ],
                    request_id: String::new(),
                }
                .encode_to_vec()
            }
            "ProposePlan" => {
                let task_token = self.lease(server).await;
                pb::ProposePlanRequest {
                    task_token,
                    steps: vec![pb::PlanStep {
                        tool: "write_file".into(),
                        arguments: Some(to_value(json!({"path": "/tmp/x"}))),
                        description: "write it".into(),
                        risk: 0,
                    }],
                    request_id: String::new(),
                }
                .encode_to_vec()
            }
            "CompleteTask" => {
                let task_token = self.lease(server).await;
                pb::CompleteTaskRequest {
                    task_token,
                    output: vec![pb::Message {
                        role: pb::MessageRole::Assistant as i32,
                        content: "done".into(),
                        ..Default::default()
                    }],
                    usage: Some(pb::Usage {
                        input_tokens: 3,
                        output_tokens: 1,
                        cost_usd: 0.001,
                    }),
                    stop_reason: pb::StopReason::EndTurn as i32,
                    request_id: String::new(),
                }
                .encode_to_vec()
            }
            "FailTask" => {
                let task_token = self.lease(server).await;
                pb::FailTaskRequest {
                    task_token,
                    error: Some(pb::RunError {
                        r#type: "boom".into(),
                        message: "it failed".into(),
                        details: Some(to_struct(json!({"line": 3}))),
                    }),
                    retryable: false,
                    next_retry_delay: seconds(1),
                    request_id: String::new(),
                }
                .encode_to_vec()
            }
            other => panic!("no baseline for {other}: add one to the fuzz test's world"),
        }
    }

    /// The lease worker methods use, claimed anew when the last one was used up.
    pub async fn lease(&mut self, server: &Server) -> String {
        if let Some(lease) = &self.lease {
            return lease.token.clone();
        }
        let token = self.claim(server).await.task_token;
        self.lease = Some(Lease {
            token: token.clone(),
        });
        token
    }

    /// A live worker attempt, if the fuzz left one: its token.
    pub fn live_lease(&self) -> Option<String> {
        self.lease.as_ref().map(|l| l.token.clone())
    }

    /// A run of the worker agent in a new session, claimed by the worker.
    async fn claim(&mut self, server: &Server) -> pb::Task {
        let id = self.next("w");
        let session = self.create_session(server, &id, "wbot").await;
        self.create_run(server, &session).await;
        let polled: pb::PollTaskResponse = Server::must(
            server
                .call(
                    "ExecutionService/PollTask",
                    &self.worker,
                    pb::PollTaskRequest {
                        parent: ACME.into(),
                        agents: vec![WORKER_AGENT.into()],
                        identity: "fuzz-world".into(),
                        wait: seconds(1),
                        lease_duration: seconds(600),
                    },
                )
                .await,
            "claim a run",
        );
        polled.task.expect("a run of the worker agent to claim")
    }

    /// A run waiting for a decision on its plan, and the approval's id.
    async fn parked(&mut self, server: &Server) -> (String, String) {
        if let Some(parked) = &self.parked {
            return parked.clone();
        }
        let task = self.claim(server).await;
        let proposed: pb::ProposePlanResponse = Server::must(
            server
                .call(
                    "ExecutionService/ProposePlan",
                    &self.worker,
                    pb::ProposePlanRequest {
                        task_token: task.task_token,
                        steps: vec![pb::PlanStep {
                            tool: "drop_table".into(),
                            ..Default::default()
                        }],
                        request_id: String::new(),
                    },
                )
                .await,
            "park a run",
        );
        let approval = proposed.approval.expect("an approval");
        let run = task.run.expect("the task's run").name;
        self.parked = Some((run, approval.approval_id));
        self.parked.clone().expect("just set")
    }

    /// The resource `method` destroys, created when the last one was used up.
    async fn victim(&mut self, server: &Server, method: &str) -> String {
        if let Some(name) = self.victims.get(method) {
            return name.clone();
        }
        let id = self.next("doomed");
        let name = match method {
            "DeleteWorkspace" => {
                let _: pb::Workspace = Server::must(
                    server
                        .call(
                            "RegistryService/CreateWorkspace",
                            &self.root,
                            pb::CreateWorkspaceRequest {
                                workspace_id: id.clone(),
                                workspace: Some(pb::Workspace::default()),
                                request_id: String::new(),
                            },
                        )
                        .await,
                    "a doomed workspace",
                );
                format!("workspaces/{id}")
            }
            "DeleteProject" => self.create_project(server, &id).await,
            "DeleteApiKey" => {
                let created: pb::CreateApiKeyResponse = Server::must(
                    server
                        .call(
                            "RegistryService/CreateApiKey",
                            &self.admin,
                            pb::CreateApiKeyRequest {
                                parent: ACME.into(),
                                api_key: Some(pb::ApiKey {
                                    role: pb::Role::Reader as i32,
                                    ..Default::default()
                                }),
                                request_id: String::new(),
                            },
                        )
                        .await,
                    "a doomed key",
                );
                created.api_key.expect("the key").name
            }
            "DeleteAgent" => self.create_agent(server, &id).await,
            "DeleteInstance" => self.create_instance(server, &id, HELPER).await,
            "DeleteContext" => {
                let created: pb::Context = Server::must(
                    server
                        .call(
                            "ContextService/CreateContext",
                            &self.admin,
                            pb::CreateContextRequest {
                                parent: WEB.into(),
                                context_id: id,
                                context: Some(pb::Context::default()),
                                data: Some(to_value(json!({}))),
                                request_id: String::new(),
                            },
                        )
                        .await,
                    "a doomed context",
                );
                created.name
            }
            "DeleteSession" => self.create_session(server, &id, "bot").await,
            "CancelRun" => {
                let session = self.create_session(server, &id, "bot").await;
                self.create_run(server, &session).await
            }
            other => unreachable!("{other} has no victim"),
        };
        self.victims.insert(method.to_owned(), name.clone());
        name
    }

    fn next(&mut self, prefix: &str) -> String {
        self.counter += 1;
        format!("{prefix}-{}", self.counter)
    }

    async fn create_project(&self, server: &Server, id: &str) -> String {
        let created: pb::Project = Server::must(
            server
                .call(
                    "RegistryService/CreateProject",
                    &self.admin,
                    pb::CreateProjectRequest {
                        parent: ACME.into(),
                        project_id: id.into(),
                        project: Some(pb::Project::default()),
                        request_id: String::new(),
                    },
                )
                .await,
            "a project",
        );
        created.name
    }

    async fn create_agent(&self, server: &Server, id: &str) -> String {
        let created: pb::Agent = Server::must(
            server
                .call(
                    "RegistryService/CreateAgent",
                    &self.admin,
                    pb::CreateAgentRequest {
                        parent: ACME.into(),
                        agent_id: id.into(),
                        agent: Some(agent()),
                        request_id: String::new(),
                    },
                )
                .await,
            "an agent",
        );
        created.name
    }

    async fn create_instance(&self, server: &Server, id: &str, agent: &str) -> String {
        let created: pb::Instance = Server::must(
            server
                .call(
                    "RegistryService/CreateInstance",
                    &self.admin,
                    pb::CreateInstanceRequest {
                        parent: WEB.into(),
                        instance_id: id.into(),
                        instance: Some(instance(agent)),
                        request_id: String::new(),
                    },
                )
                .await,
            "an instance",
        );
        created.name
    }

    async fn create_session(&self, server: &Server, id: &str, instance: &str) -> String {
        let created: pb::Session = Server::must(
            server
                .call(
                    "ExecutionService/CreateSession",
                    &self.admin,
                    pb::CreateSessionRequest {
                        parent: WEB.into(),
                        session_id: id.into(),
                        session: Some(pb::Session {
                            instance: format!("{WEB}/instances/{instance}"),
                            ..Default::default()
                        }),
                        request_id: String::new(),
                    },
                )
                .await,
            "a session",
        );
        created.name
    }

    async fn create_run(&self, server: &Server, session: &str) -> String {
        let created: pb::Run = Server::must(
            server
                .call(
                    "ExecutionService/CreateRun",
                    &self.admin,
                    pb::CreateRunRequest {
                        parent: session.into(),
                        run: Some(pb::Run {
                            input: vec![user("hi")],
                            ..Default::default()
                        }),
                        request_id: String::new(),
                        approval_timeout: None,
                    },
                )
                .await,
            "a run",
        );
        created.name
    }

    async fn write_context(&self, server: &Server, doc: serde_json::Value) {
        let _: pb::WriteContextResponse = Server::must(
            server
                .call(
                    "ContextService/WriteContext",
                    &self.admin,
                    pb::WriteContextRequest {
                        name: MEMORY.into(),
                        change: Some(pb::write_context_request::Change::Data(to_value(doc))),
                        ..Default::default()
                    },
                )
                .await,
            "a context write",
        );
    }
}

fn project(display_name: &str) -> pb::Project {
    pb::Project {
        display_name: display_name.into(),
        description: "a project".into(),
        labels: [("team".to_owned(), "web".to_owned())].into(),
        ..Default::default()
    }
}

fn mask(paths: &[&str]) -> FieldMask {
    FieldMask {
        paths: paths.iter().map(|p| (*p).to_owned()).collect(),
    }
}

/// The wait between the fuzz's end and the reaper's verdict, generous for a loaded
/// machine.
pub const REAPER_WAIT: Duration = Duration::from_secs(30);
