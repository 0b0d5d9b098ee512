//! The tenant a fuzz run works in, and a valid-looking request for every method, so that
//! a hostile variant of one field gets past the others and reaches the validation, the
//! store and the database behind it.
//!
//! Requests that use something up (deletes, cancels, decisions, the calls that end a
//! worker's attempt) get a fresh victim whenever the previous request consumed theirs:
//! [`World::baseline`] (in [`baselines`]) prepares one on demand and [`World::accepted`] marks it used.
//! Requests that change long-lived things aim at resources kept for them (`editable`,
//! `status-bot`, workspace `fuzzws`), so that the rest of the world stays usable.

mod baselines;

use std::time::Duration;

use agentry_e2e::{json, pb, to_value};

use super::Server;
use baselines::{agent, instance, seconds, user};

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
pub const WORKER_AGENT: &str = "workspaces/acme/agents/wagent";
pub const CHAT: &str = "workspaces/acme/projects/web/sessions/chat";
pub const MEMORY: &str = "workspaces/acme/projects/web/contexts/memory";

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

/// The wait between the fuzz's end and the reaper's verdict, generous for a loaded
/// machine.
pub const REAPER_WAIT: Duration = Duration::from_secs(30);
