//! A valid-looking request for every method of the three services, aimed at the
//! world's resources; [`World::baseline`] is what the fuzz test mutates. A method without
//! a baseline fails the test, so a new method cannot go unfuzzed.

use std::time::{SystemTime, UNIX_EPOCH};

use agentry_e2e::{json, pb, to_struct, to_value};
use prost::Message as _;
use prost_types::{FieldMask, Timestamp};

use super::{ACME, CHAT, HELPER, MEMORY, Server, WEB, World};

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

pub(super) fn agent() -> pb::Agent {
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

pub(super) fn instance(agent: &str) -> pb::Instance {
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

pub(super) fn seconds(n: i64) -> Option<prost_types::Duration> {
    Some(prost_types::Duration {
        seconds: n,
        nanos: 0,
    })
}

/// `offset_secs` from when the fuzz started: fixed, so that a baseline stays the same.
pub(super) fn at(offset_secs: i64) -> Option<Timestamp> {
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

pub(super) fn user(text: &str) -> pb::Message {
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

impl World {
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
            "ListAuditRecords" => pb::ListAuditRecordsRequest {
                parent: ACME.into(),
                page_size: 2,
                page_token: String::new(),
                filter: format!("resource = \"{WEB}\" AND method = \"CreateInstance\""),
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
                    events: vec![],
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
}
