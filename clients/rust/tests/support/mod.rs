//! What the worker and TLS tests share: the real `agentry` binary as a child process on
//! a temporary SQLite file (stopped and started again on the same port and file for the
//! restart test), a tenant with a `researcher` agent, and run helpers.

#![allow(dead_code)] // each test file uses its own part

use std::{path::PathBuf, process::Stdio, time::Duration};

use agentry_client::{Agentry, connect, pb, run_events};
use futures::StreamExt;
use tokio::process::{Child, Command};

pub const LONG: Duration = Duration::from_secs(60);

/// `agentry serve` as a child process.
pub struct Server {
    pub port: u16,
    pub root: String,
    pub dir: PathBuf,
    extra: Vec<String>,
    child: Option<Child>,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Server {
    /// A server on a free port and a new SQLite file.
    pub async fn start() -> Self {
        Self::start_with(Vec::new()).await
    }

    /// [`Server::start`] with more `serve` flags (TLS files …).
    pub async fn start_with(extra: Vec<String>) -> Self {
        let dir = std::env::temp_dir().join(format!("agentry-rust-{}", uuid::Uuid::now_v7()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut server = Self {
            port: free_port(),
            root: format!("agk_root_{}", uuid::Uuid::now_v7().simple()),
            dir,
            extra,
            child: None,
        };
        server.spawn().await;
        server
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    async fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("server.log"))
            .unwrap();
        let child = Command::new(agentry_e2e::process::agentry_bin())
            .args(["serve", "--listen", &format!("127.0.0.1:{}", self.port)])
            .args([
                "--database-url",
                &format!("sqlite://{}/a.db", self.dir.display()),
            ])
            .args(["--reaper-interval", "200ms", "--shutdown-grace", "1s"])
            .args(&self.extra)
            .env("AGENTRY_ROOT_KEY", &self.root)
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("the agentry binary runs");
        self.child = Some(child);
        let deadline = tokio::time::Instant::now() + LONG;
        while tokio::net::TcpStream::connect(("127.0.0.1", self.port))
            .await
            .is_err()
        {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the server never listened: {}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGTERM, wait for the exit, stay down for `down`, start again (same port, file).
    pub async fn restart(&mut self, down: Duration) {
        let mut child = self.child.take().expect("running");
        let pid = child.id().expect("a pid").to_string();
        let killed = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap();
        assert!(killed.success());
        tokio::time::timeout(LONG, child.wait())
            .await
            .expect("the server stops")
            .unwrap();
        tokio::time::sleep(down).await;
        self.spawn().await;
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.start_kill();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Workspace `acme` with a developer and a worker key, agent `researcher` (tool `search`,
/// WRITE risk: an L1 run asks a human, L2 approves it), instance `researcher-1` in
/// project `lab`, context `notes` at version 1.
pub struct World {
    pub dev: Agentry,
    pub worker: Agentry,
    pub worker_key: String,
    pub agent: String,
    pub instance: String,
    pub context: String,
}

pub async fn world(url: &str, root_key: &str) -> World {
    let mut root = connect(url.to_owned(), root_key).await.unwrap();
    root.registry
        .create_workspace(pb::CreateWorkspaceRequest {
            workspace_id: "acme".into(),
            workspace: Some(pb::Workspace::default()),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut keys = Vec::new();
    for role in [pb::Role::Developer, pb::Role::Worker] {
        let key = root
            .registry
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
            .secret;
        keys.push(key);
    }
    root.registry
        .create_project(pb::CreateProjectRequest {
            parent: "workspaces/acme".into(),
            project_id: "lab".into(),
            project: Some(pb::Project::default()),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut dev = connect(url.to_owned(), &keys[0]).await.unwrap();
    let agent = dev
        .registry
        .create_agent(pb::CreateAgentRequest {
            parent: "workspaces/acme".into(),
            agent_id: "researcher".into(),
            agent: Some(pb::Agent {
                tools: vec![pb::Tool {
                    name: "search".into(),
                    risk: pb::ToolRisk::Write as i32,
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let instance = dev
        .registry
        .create_instance(pb::CreateInstanceRequest {
            parent: "workspaces/acme/projects/lab".into(),
            instance_id: "researcher-1".into(),
            instance: Some(pb::Instance {
                agent: agent.name.clone(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let context = dev
        .contexts
        .create_context(pb::CreateContextRequest {
            parent: "workspaces/acme/projects/lab".into(),
            context_id: "notes".into(),
            context: Some(pb::Context::default()),
            data: Some(agentry_client::worker::json_value(
                serde_json::json!({"findings": []}),
            )),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    World {
        dev,
        worker: connect(url.to_owned(), &keys[1]).await.unwrap(),
        worker_key: keys[1].clone(),
        agent: agent.name,
        instance: instance.name,
        context: context.name,
    }
}

impl World {
    /// A run of `text` at `autonomy` in a new session, retried up to 3 attempts 0.1 s apart.
    pub async fn run(&self, text: &str, autonomy: pb::AutonomyLevel) -> pb::Run {
        let mut dev = self.dev.clone();
        let session = dev
            .execution
            .create_session(pb::CreateSessionRequest {
                parent: "workspaces/acme/projects/lab".into(),
                session: Some(pb::Session {
                    instance: self.instance.clone(),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        dev.execution
            .create_run(pb::CreateRunRequest {
                parent: session.name,
                run: Some(pb::Run {
                    input: vec![pb::Message {
                        role: pb::MessageRole::User as i32,
                        content: text.into(),
                        ..Default::default()
                    }],
                    autonomy_level: autonomy as i32,
                    retry_policy: Some(pb::RetryPolicy {
                        max_attempts: 3,
                        initial_interval: Some(prost_types::Duration {
                            seconds: 0,
                            nanos: 100_000_000,
                        }),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
    }

    pub async fn get_run(&self, name: &str) -> pb::Run {
        self.dev
            .clone()
            .execution
            .get_run(pb::GetRunRequest { name: name.into() })
            .await
            .unwrap()
            .into_inner()
    }

    /// The run's whole event log, one line per event, read to the terminal status;
    /// asserts it has no gap and no repeat.
    pub async fn events(&self, run: &str) -> Vec<String> {
        let mut seen = Vec::new();
        let mut events = std::pin::pin!(run_events(&self.dev, run.into(), 0));
        let mut sequence = 0;
        while let Some(event) = tokio::time::timeout(LONG, events.next())
            .await
            .expect("the run ends")
        {
            let event = event.unwrap();
            sequence += 1;
            assert_eq!(event.sequence, sequence, "gap or repeat in {seen:?}");
            seen.push(describe(&event));
        }
        seen
    }
}

/// One line per event, e.g. `a1 status QUEUED->RUNNING` or `a1 delta "hi"`.
pub fn describe(event: &pb::RunEvent) -> String {
    use pb::run_event::Kind;
    let a = event.attempt;
    let status = |s: i32| {
        pb::RunStatus::try_from(s)
            .map(|s| s.as_str_name().trim_start_matches("RUN_STATUS_").to_owned())
            .unwrap_or_default()
    };
    match event.kind.as_ref().expect("an event kind") {
        Kind::StatusChanged(c) => {
            let stop = pb::StopReason::try_from(c.stop_reason)
                .ok()
                .filter(|r| *r != pb::StopReason::Unspecified)
                .map(|r| format!(" {}", r.as_str_name().trim_start_matches("STOP_REASON_")))
                .unwrap_or_default();
            format!(
                "a{a} status {}->{}{stop}",
                status(c.previous_status),
                status(c.status)
            )
        }
        Kind::MessageDelta(d) => format!("a{a} delta {:?}", d.text),
        Kind::MessageCompleted(m) => {
            let m = m.message.as_ref().unwrap();
            let role = pb::MessageRole::try_from(m.role).unwrap().as_str_name();
            format!(
                "a{a} message {} {:?}",
                role.trim_start_matches("MESSAGE_ROLE_"),
                m.content
            )
        }
        Kind::ToolCallStarted(t) => {
            let call = t.tool_call.as_ref().unwrap();
            format!("a{a} tool_started {} {}", call.id, call.tool)
        }
        Kind::ToolCallCompleted(t) => {
            let call = t.tool_call.as_ref().unwrap();
            let synthetic = if t.synthetic { " synthetic" } else { "" };
            format!("a{a} tool_completed {}{synthetic}", call.id)
        }
        Kind::PlanProposed(p) => {
            let tools: Vec<_> = p
                .approval
                .as_ref()
                .unwrap()
                .steps
                .iter()
                .map(|s| s.tool.as_str())
                .collect();
            format!("a{a} plan {} auto={}", tools.join(","), p.auto_approved)
        }
        Kind::ApprovalDecided(d) => {
            let decision =
                pb::ApprovalDecision::try_from(d.approval.as_ref().unwrap().decision).unwrap();
            format!(
                "a{a} decided {}",
                decision
                    .as_str_name()
                    .trim_start_matches("APPROVAL_DECISION_")
            )
        }
        Kind::Custom(c) => format!("a{a} custom {}", c.name),
        Kind::Error(e) => format!(
            "a{a} error {}",
            e.error.as_ref().map(|e| e.r#type.as_str()).unwrap_or("")
        ),
        Kind::Usage(u) => format!("a{a} usage {}+{}", u.input_tokens, u.output_tokens),
    }
}

/// Approves the pending plan of `run` once it waits for one.
pub async fn approve(world: &World, run: &str) {
    let deadline = tokio::time::Instant::now() + LONG;
    loop {
        let current = world.get_run(run).await;
        if current.status == pb::RunStatus::RequiresAction as i32 {
            let approval = current.approval.expect("a pending plan");
            world
                .dev
                .clone()
                .execution
                .decide_approval(pb::DecideApprovalRequest {
                    name: run.into(),
                    approval_id: approval.approval_id,
                    decision: pb::ApprovalDecision::Approve as i32,
                    comment: "go ahead".into(),
                    ..Default::default()
                })
                .await
                .unwrap();
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the run never asked: {current:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
