//! Shared pieces of the ExecutionService end-to-end tests: a tenant with a project, an
//! agent whose tools cover every risk and an instance of it ([`World`]); a worker
//! ([`Worker`]) that polls, heartbeats, appends, proposes, completes and fails; request
//! and event builders; reading a run's log ([`World::log`]) and a session's transcript;
//! a one-line rendering of each event ([`describe`]) so tests can assert whole event
//! sequences; and servers started with our own config (replicas on one database).
//!
//! Each `execution_*.rs` test binary uses a different part of this module.
#![allow(dead_code)]

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use agentry_e2e::*;
use agentry_server::config::{Config, Secret};
use pb::{
    MessageRole, RunStatus, StopReason, execution_service_client::ExecutionServiceClient,
    run_event::Kind, run_event_input::Kind as In,
};
use serde_json::Value;
use tonic::{
    Status, Streaming,
    transport::{Channel, Endpoint},
};

/// The agent's tools, one per risk.
pub const READ_TOOL: &str = "search";
pub const WRITE_TOOL: &str = "write_file";
pub const DESTRUCTIVE_TOOL: &str = "drop_table";

/// Generous bound for anything that should happen "soon" on a loaded 2-core machine.
pub const SOON: Duration = Duration::from_secs(10);

pub type Events = Streaming<pb::StreamRunEventsResponse>;

// ---- durations and time ----

pub fn ms(millis: u64) -> Option<prost_types::Duration> {
    let d = Duration::from_millis(millis);
    Some(prost_types::Duration {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
    })
}

pub fn proto_duration(d: Duration) -> Option<prost_types::Duration> {
    Some(prost_types::Duration {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
    })
}

/// A proto duration in milliseconds (panics when unset).
#[track_caller]
pub fn millis_of(d: &Option<prost_types::Duration>) -> f64 {
    let d = d.as_ref().expect("duration is set");
    d.seconds as f64 * 1000.0 + f64::from(d.nanos) / 1e6
}

/// Milliseconds from `from` to `to` (server timestamps).
#[track_caller]
pub fn millis_between(
    from: &Option<prost_types::Timestamp>,
    to: &Option<prost_types::Timestamp>,
) -> f64 {
    (nanos(to) - nanos(from)) as f64 / 1e6
}

/// Now, as nanoseconds since the epoch (to compare with server timestamps).
pub fn now_nanos() -> i128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after the epoch")
        .as_nanos() as i128
}

pub fn timestamp_from_nanos(n: i128) -> Option<prost_types::Timestamp> {
    Some(prost_types::Timestamp {
        seconds: n.div_euclid(1_000_000_000) as i64,
        nanos: n.rem_euclid(1_000_000_000) as i32,
    })
}

/// RFC 3339 (UTC, microseconds) of a proto timestamp, for `create_time` filters.
pub fn rfc3339(timestamp: &Option<prost_types::Timestamp>) -> String {
    let t = timestamp.as_ref().expect("timestamp is set");
    let days = t.seconds.div_euclid(86_400);
    let secs = t.seconds.rem_euclid(86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:06}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60,
        t.nanos / 1000
    )
}

// ---- the agent ----

/// An agent with one tool of each risk.
pub fn tool_agent() -> pb::Agent {
    let tool = |name: &str, risk: pb::ToolRisk| pb::Tool {
        name: name.into(),
        description: format!("the {name} tool"),
        risk: risk as i32,
    };
    pb::Agent {
        tools: vec![
            tool(READ_TOOL, pb::ToolRisk::ReadOnly),
            tool(WRITE_TOOL, pb::ToolRisk::Write),
            tool(DESTRUCTIVE_TOOL, pb::ToolRisk::Destructive),
        ],
        ..simple_agent()
    }
}

// ---- clients ----

/// An ExecutionService client on its own connection to `addr`.
pub async fn execution_on(addr: SocketAddr, key: &str) -> Execution {
    let channel = Endpoint::from_shared(format!("http://{addr}"))
        .expect("valid endpoint")
        .connect()
        .await
        .expect("connect to the test server");
    ExecutionServiceClient::with_interceptor(channel, Bearer::new(key))
        .max_decoding_message_size(64 << 20)
}

/// A new key of `tenant` with `role`: (secret, resource name). The name is what the
/// server records as `decided_by`.
pub async fn named_key(tenant: &Tenant, role: pb::Role) -> (String, String) {
    let created = tenant
        .admin
        .clone()
        .create_api_key(req::create_api_key(&tenant.name, role as i32))
        .await
        .must();
    let name = created.api_key.expect("the key comes back").name;
    (created.secret, name)
}

// ---- request builders ----

pub fn message(role: MessageRole, text: &str) -> pb::Message {
    pb::Message {
        role: role as i32,
        content: text.into(),
        ..Default::default()
    }
}

pub fn user(text: &str) -> pb::Message {
    message(MessageRole::User, text)
}

pub fn assistant(text: &str) -> pb::Message {
    message(MessageRole::Assistant, text)
}

/// A run spec whose input is one USER message.
pub fn spec(text: &str) -> pb::Run {
    pb::Run {
        input: vec![user(text)],
        ..Default::default()
    }
}

pub fn with_strategy(text: &str, strategy: pb::MultitaskStrategy) -> pb::Run {
    pb::Run {
        multitask_strategy: strategy as i32,
        ..spec(text)
    }
}

pub fn with_autonomy(text: &str, level: pb::AutonomyLevel) -> pb::Run {
    pb::Run {
        autonomy_level: level as i32,
        ..spec(text)
    }
}

/// A retry policy with `initial` delay, coefficient 2 and `max_attempts`.
pub fn retry(initial_ms: u64, max_attempts: i32) -> Option<pb::RetryPolicy> {
    Some(pb::RetryPolicy {
        initial_interval: ms(initial_ms),
        backoff_coefficient: 2.0,
        max_interval: None,
        max_attempts,
        non_retryable_error_types: vec![],
    })
}

pub fn create_run(session: &str, run: pb::Run) -> pb::CreateRunRequest {
    pb::CreateRunRequest {
        parent: session.into(),
        run: Some(run),
        request_id: String::new(),
        approval_timeout: None,
    }
}

pub fn create_session(project: &str, id: &str, instance: &str) -> pb::CreateSessionRequest {
    pb::CreateSessionRequest {
        parent: project.into(),
        session_id: id.into(),
        session: Some(pb::Session {
            instance: instance.into(),
            ..Default::default()
        }),
        request_id: String::new(),
    }
}

pub fn cancel(run: &str, reason: &str) -> pb::CancelRunRequest {
    pb::CancelRunRequest {
        name: run.into(),
        reason: reason.into(),
        request_id: String::new(),
    }
}

pub fn decide(
    run: &str,
    approval_id: &str,
    decision: pb::ApprovalDecision,
    comment: &str,
) -> pb::DecideApprovalRequest {
    pb::DecideApprovalRequest {
        name: run.into(),
        approval_id: approval_id.into(),
        decision: decision as i32,
        comment: comment.into(),
        request_id: String::new(),
    }
}

pub fn get_run(name: &str) -> pb::GetRunRequest {
    pb::GetRunRequest { name: name.into() }
}

pub fn get_session(name: &str) -> pb::GetSessionRequest {
    pb::GetSessionRequest { name: name.into() }
}

pub fn list_runs(parent: &str, filter: &str, page_size: i32, token: &str) -> pb::ListRunsRequest {
    pb::ListRunsRequest {
        parent: parent.into(),
        page_size,
        page_token: token.into(),
        filter: filter.into(),
    }
}

pub fn list_messages(
    session: &str,
    show_superseded: bool,
    page_size: i32,
    token: &str,
) -> pb::ListMessagesRequest {
    pb::ListMessagesRequest {
        parent: session.into(),
        page_size,
        page_token: token.into(),
        show_superseded,
    }
}

pub fn stream_events(run: &str, after_sequence: i64) -> pb::StreamRunEventsRequest {
    pb::StreamRunEventsRequest {
        name: run.into(),
        after_sequence,
    }
}

// ---- event inputs (what a worker appends) ----

fn input(kind: In) -> pb::RunEventInput {
    pb::RunEventInput { kind: Some(kind) }
}

pub fn delta(message_id: &str, text: &str) -> pb::RunEventInput {
    input(In::MessageDelta(pb::MessageDelta {
        message_id: message_id.into(),
        text: text.into(),
    }))
}

/// A message_completed input: the message joins the transcript.
pub fn said(message: pb::Message) -> pb::RunEventInput {
    input(In::MessageCompleted(pb::MessageCompleted {
        message: Some(message),
    }))
}

pub fn call(id: &str, tool: &str, arguments: Value) -> pb::ToolCall {
    pb::ToolCall {
        id: id.into(),
        tool: tool.into(),
        arguments: Some(to_value(arguments)),
        ..Default::default()
    }
}

pub fn tool_started(id: &str, tool: &str, arguments: Value) -> pb::RunEventInput {
    input(In::ToolCallStarted(pb::ToolCallStarted {
        tool_call: Some(call(id, tool, arguments)),
    }))
}

pub fn tool_completed(id: &str, tool: &str, result: Value) -> pb::RunEventInput {
    input(In::ToolCallCompleted(pb::ToolCallCompleted {
        tool_call: Some(pb::ToolCall {
            id: id.into(),
            tool: tool.into(),
            result: Some(to_value(result)),
            ..Default::default()
        }),
        synthetic: false,
    }))
}

pub fn usage(input_tokens: i64, output_tokens: i64, cost_usd: f64) -> pb::Usage {
    pb::Usage {
        input_tokens,
        output_tokens,
        cost_usd,
    }
}

pub fn usage_event(input_tokens: i64, output_tokens: i64, cost_usd: f64) -> pb::RunEventInput {
    input(In::Usage(usage(input_tokens, output_tokens, cost_usd)))
}

pub fn custom(name: &str, data: Value) -> pb::RunEventInput {
    input(In::Custom(pb::CustomEvent {
        name: name.into(),
        data: Some(to_struct(data)),
    }))
}

pub fn run_error(error_type: &str, message: &str) -> pb::RunError {
    pb::RunError {
        r#type: error_type.into(),
        message: message.into(),
        details: None,
    }
}

pub fn error_event(error_type: &str, message: &str) -> pb::RunEventInput {
    input(In::Error(pb::ErrorEvent {
        error: Some(run_error(error_type, message)),
    }))
}

pub fn step(tool: &str, arguments: Value) -> pb::PlanStep {
    pb::PlanStep {
        tool: tool.into(),
        arguments: Some(to_value(arguments)),
        description: format!("use {tool}"),
        risk: 0,
    }
}

// ---- rendering events ----

fn status_name(status: i32) -> String {
    match RunStatus::try_from(status) {
        Ok(RunStatus::Unspecified) => "none".into(),
        Ok(s) => s.as_str_name().trim_start_matches("RUN_STATUS_").into(),
        Err(_) => format!("?{status}"),
    }
}

fn stop_name(stop: i32) -> String {
    match StopReason::try_from(stop) {
        Ok(s) => s.as_str_name().trim_start_matches("STOP_REASON_").into(),
        Err(_) => format!("?{stop}"),
    }
}

fn role_name(role: i32) -> String {
    match MessageRole::try_from(role) {
        Ok(r) => r.as_str_name().trim_start_matches("MESSAGE_ROLE_").into(),
        Err(_) => format!("?{role}"),
    }
}

fn decision_name(decision: i32) -> String {
    match pb::ApprovalDecision::try_from(decision) {
        Ok(d) => d
            .as_str_name()
            .trim_start_matches("APPROVAL_DECISION_")
            .into(),
        Err(_) => format!("?{decision}"),
    }
}

/// One line per event, e.g. `status QUEUED->RUNNING`, `status RUNNING->SUCCEEDED
/// END_TURN` (the stop reason when set, except on entering CANCELLING), `delta m1 "Hel"`, `message ASSISTANT "Hello"`, `tool_started c1 search`,
/// `tool_completed c1 search synthetic`, `usage 10/5`, `custom thought`, `error Boom`,
/// `plan auto`, `plan pending`, `decided APPROVE by auto`.
pub fn describe(event: &pb::RunEvent) -> String {
    match event.kind.as_ref().expect("an event has a kind") {
        Kind::StatusChanged(s) => {
            // The contract gives no stop reason for entering CANCELLING (nothing has
            // stopped yet), so whatever the server puts there is left out.
            let stop = if s.stop_reason == 0 || s.status == RunStatus::Cancelling as i32 {
                String::new()
            } else {
                format!(" {}", stop_name(s.stop_reason))
            };
            format!(
                "status {}->{}{stop}",
                status_name(s.previous_status),
                status_name(s.status)
            )
        }
        Kind::MessageDelta(d) => format!("delta {} {:?}", d.message_id, d.text),
        Kind::MessageCompleted(m) => {
            let m = m.message.as_ref().expect("message_completed has a message");
            match &m.tool_call {
                Some(call) => format!("message {} {:?} {}", role_name(m.role), m.content, call.id),
                None => format!("message {} {:?}", role_name(m.role), m.content),
            }
        }
        Kind::ToolCallStarted(t) => {
            let call = t.tool_call.as_ref().expect("tool_call_started has a call");
            format!("tool_started {} {}", call.id, call.tool)
        }
        Kind::ToolCallCompleted(t) => {
            let call = t
                .tool_call
                .as_ref()
                .expect("tool_call_completed has a call");
            let synthetic = if t.synthetic { " synthetic" } else { "" };
            format!("tool_completed {} {}{synthetic}", call.id, call.tool)
        }
        Kind::PlanProposed(p) => {
            if p.auto_approved {
                "plan auto".into()
            } else {
                "plan pending".into()
            }
        }
        Kind::ApprovalDecided(a) => {
            let a = a
                .approval
                .as_ref()
                .expect("approval_decided has an approval");
            format!("decided {} by {}", decision_name(a.decision), a.decided_by)
        }
        Kind::Usage(u) => format!("usage {}/{}", u.input_tokens, u.output_tokens),
        Kind::Custom(c) => format!("custom {}", c.name),
        Kind::Error(e) => format!(
            "error {}",
            e.error.as_ref().map(|e| e.r#type.as_str()).unwrap_or("")
        ),
    }
}

pub fn describe_all(events: &[pb::RunEvent]) -> Vec<String> {
    events.iter().map(describe).collect()
}

/// The status event's payload (panics on another kind).
#[track_caller]
pub fn status_of(event: &pb::RunEvent) -> &pb::StatusChanged {
    match event.kind.as_ref() {
        Some(Kind::StatusChanged(s)) => s,
        other => panic!("expected a status event, got {other:?}"),
    }
}

/// Asserts sequences 1..=n, gapless, and names `{run}/events/{seq}`.
#[track_caller]
pub fn assert_gapless(run: &str, events: &[pb::RunEvent]) {
    for (i, e) in events.iter().enumerate() {
        assert_eq!(
            e.sequence,
            i as i64 + 1,
            "sequence of event {i}: {:#?}",
            describe_all(events)
        );
        assert_eq!(e.name, format!("{run}/events/{}", e.sequence));
        assert!(
            e.create_time.is_some(),
            "event {} has a create_time",
            e.sequence
        );
    }
}

/// `("ROLE", content, tool call id)` of each message, for transcript assertions. The
/// content of a message that carries a tool call is left out (the contract does not say
/// what it holds).
pub fn transcript(messages: &[pb::Message]) -> Vec<(String, String, String)> {
    messages
        .iter()
        .map(|m| match &m.tool_call {
            Some(call) => (role_name(m.role), String::new(), call.id.clone()),
            None => (role_name(m.role), m.content.clone(), String::new()),
        })
        .collect()
}

pub fn line(role: &str, content: &str, call: &str) -> (String, String, String) {
    (role.into(), content.into(), call.into())
}

// ---- streams ----

/// The next event of a stream within `timeout`; panics on an error, the end or a timeout.
pub async fn next_event(stream: &mut Events, timeout: Duration) -> pb::RunEvent {
    match tokio::time::timeout(timeout, stream.message()).await {
        Ok(Ok(Some(m))) => m.event.expect("a stream message carries an event"),
        Ok(Ok(None)) => panic!("the event stream ended"),
        Ok(Err(status)) => panic!("the event stream failed: {status:?}"),
        Err(_) => panic!("no event within {timeout:?}"),
    }
}

/// Reads a stream to its end (within `timeout` overall); panics on an error.
pub async fn read_to_end(stream: &mut Events, timeout: Duration) -> Vec<pb::RunEvent> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut events = Vec::new();
    loop {
        match tokio::time::timeout_at(deadline, stream.message()).await {
            Ok(Ok(Some(m))) => events.push(m.event.expect("an event")),
            Ok(Ok(None)) => return events,
            Ok(Err(status)) => panic!("the event stream failed after {events:#?}: {status:?}"),
            Err(_) => panic!(
                "the event stream did not end within {timeout:?}; got {:?}",
                describe_all(&events)
            ),
        }
    }
}

/// Asserts that nothing arrives on the stream for `quiet` (and it does not end).
pub async fn assert_quiet(stream: &mut Events, quiet: Duration) {
    if let Ok(message) = tokio::time::timeout(quiet, stream.message()).await {
        panic!("expected nothing on the event stream, got {message:?}");
    }
}

// ---- a tenant with an agent and an instance ----

/// Workspace `acme` with project `web`, agent `helper` ([`tool_agent`]), its instance
/// `bot`, and clients: ADMIN, DEVELOPER, READER and a [`Worker`].
pub struct World {
    pub acme: Tenant,
    pub project: String,
    pub agent: String,
    pub instance: String,
    /// ADMIN.
    pub client: Execution,
    pub dev: Execution,
    pub reader: Execution,
    pub worker: Worker,
    pub worker_key: String,
}

impl World {
    pub async fn setup(app: &TestApp) -> Self {
        Self::setup_with_quotas(app, pb::Quotas::default()).await
    }

    pub async fn setup_with_quotas(app: &TestApp, quotas: pb::Quotas) -> Self {
        Self::setup_tenant(app, "acme", quotas).await
    }

    /// As [`World::setup`] for workspace `id`.
    pub async fn setup_tenant(app: &TestApp, id: &str, quotas: pb::Quotas) -> Self {
        let acme = app.tenant_with_quotas(id, quotas).await;
        Self::populate(&acme).await;
        Self::connect(acme, |key| {
            let key = key.to_owned();
            async move { app.execution(&key).await }
        })
        .await
    }

    /// As [`World::setup`], on the server at `addr` (for servers of our own).
    pub async fn setup_on(addr: SocketAddr, root_key: &str) -> Self {
        let acme = tenant_on(addr, root_key, "acme", pb::Quotas::default()).await;
        Self::populate(&acme).await;
        Self::connect(acme, |key| {
            let key = key.to_owned();
            async move { execution_on(addr, &key).await }
        })
        .await
    }

    /// The same tenant and names, with clients on another replica at `addr`.
    pub async fn on_replica(&self, addr: SocketAddr) -> Self {
        let acme = tenant_on_replica(&self.acme, addr).await;
        let mut other = Self::connect(acme, |key| {
            let key = key.to_owned();
            async move { execution_on(addr, &key).await }
        })
        .await;
        other.project = self.project.clone();
        other
    }

    async fn populate(acme: &Tenant) {
        acme.project("web").await;
        acme.agent("helper", tool_agent()).await;
        acme.instance(
            "web",
            "bot",
            pb::Instance {
                agent: acme.agent_name("helper"),
                ..Default::default()
            },
        )
        .await;
    }

    async fn connect<F, Fut>(acme: Tenant, client: F) -> Self
    where
        F: Fn(&str) -> Fut,
        Fut: std::future::Future<Output = Execution>,
    {
        let worker_key = acme.role_key(pb::Role::Worker).await;
        let dev_key = acme.role_key(pb::Role::Developer).await;
        let reader_key = acme.role_key(pb::Role::Reader).await;
        let agent = acme.agent_name("helper");
        let worker = Worker {
            client: client(&worker_key).await,
            parent: acme.name.clone(),
            agents: vec![agent.clone()],
            identity: "test-worker".into(),
        };
        Self {
            project: acme.project_name("web"),
            instance: acme.instance_name("web", "bot"),
            agent,
            client: client(&acme.admin_key).await,
            dev: client(&dev_key).await,
            reader: client(&reader_key).await,
            worker,
            worker_key,
            acme,
        }
    }

    pub fn session_name(&self, id: &str) -> String {
        format!("{}/sessions/{id}", self.project)
    }

    /// Session `id` with the instance `bot`.
    pub async fn session(&self, id: &str) -> pb::Session {
        self.session_with(id, &self.instance).await
    }

    pub async fn session_with(&self, id: &str, instance: &str) -> pb::Session {
        let session = self
            .client
            .clone()
            .create_session(create_session(&self.project, id, instance))
            .await
            .must();
        assert_eq!(session.name, self.session_name(id));
        session
    }

    pub async fn get_session(&self, name: &str) -> pb::Session {
        self.client
            .clone()
            .get_session(get_session(name))
            .await
            .must()
    }

    pub async fn try_run(&self, request: pb::CreateRunRequest) -> Result<pb::Run, Status> {
        self.client.clone().create_run(request).await.inner()
    }

    /// CreateRun on `session` with `run` (panics on failure).
    pub async fn start(&self, session: &str, run: pb::Run) -> pb::Run {
        self.try_run(create_run(session, run))
            .await
            .unwrap_or_else(|s| panic!("CreateRun failed: {s:?}"))
    }

    /// A run on `session` whose input is the USER message `text`.
    pub async fn run(&self, session: &str, text: &str) -> pb::Run {
        self.start(session, spec(text)).await
    }

    pub async fn get_run(&self, name: &str) -> pb::Run {
        self.client.clone().get_run(get_run(name)).await.must()
    }

    pub async fn cancel(&self, run: &str, reason: &str) -> Result<pb::Run, Status> {
        self.client
            .clone()
            .cancel_run(cancel(run, reason))
            .await
            .inner()
    }

    pub async fn stream(&self, run: &str, after: i64) -> Events {
        self.client
            .clone()
            .stream_run_events(stream_events(run, after))
            .await
            .unwrap_or_else(|s| panic!("StreamRunEvents({run}, {after}) failed: {s:?}"))
            .into_inner()
    }

    /// The run's events as stored now (1 ..= last_sequence).
    pub async fn log(&self, run: &str) -> Vec<pb::RunEvent> {
        let last = self.get_run(run).await.last_sequence;
        let mut stream = self.stream(run, 0).await;
        let mut events = Vec::new();
        for _ in 0..last {
            events.push(next_event(&mut stream, SOON).await);
        }
        assert_gapless(run, &events);
        events
    }

    /// The whole log of a finished run, read until the stream ends.
    pub async fn finished_log(&self, run: &str) -> Vec<pb::RunEvent> {
        let mut stream = self.stream(run, 0).await;
        let events = read_to_end(&mut stream, SOON).await;
        assert_gapless(run, &events);
        events
    }

    /// [`World::log`] rendered with [`describe`].
    pub async fn story(&self, run: &str) -> Vec<String> {
        describe_all(&self.log(run).await)
    }

    /// Every message of the session, oldest first, following page tokens.
    pub async fn messages(&self, session: &str, show_superseded: bool) -> Vec<pb::Message> {
        let mut all = Vec::new();
        let mut token = String::new();
        loop {
            let page = self
                .client
                .clone()
                .list_messages(list_messages(session, show_superseded, 100, &token))
                .await
                .inner()
                .unwrap_or_else(|s| panic!("ListMessages failed: {s:?}"));
            all.extend(page.messages);
            if page.next_page_token.is_empty() {
                return all;
            }
            token = page.next_page_token;
        }
    }

    /// Every run under `parent` matching `filter`, newest first.
    pub async fn runs(&self, parent: &str, filter: &str) -> Vec<pb::Run> {
        let mut all = Vec::new();
        let mut token = String::new();
        loop {
            let page = self
                .client
                .clone()
                .list_runs(list_runs(parent, filter, 100, &token))
                .await
                .inner()
                .unwrap_or_else(|s| panic!("ListRuns({parent}, {filter:?}) failed: {s:?}"));
            all.extend(page.runs);
            if page.next_page_token.is_empty() {
                return all;
            }
            token = page.next_page_token;
        }
    }

    /// Waits (up to `timeout`) until the run has `status`; returns it.
    pub async fn wait_for(&self, run: &str, status: RunStatus, timeout: Duration) -> pb::Run {
        let found = eventually(timeout, || async {
            let r = self.get_run(run).await;
            (r.status == status as i32).then_some(r)
        })
        .await;
        match found {
            Some(run) => run,
            None => {
                let now = self.get_run(run).await;
                panic!(
                    "run did not become {status:?} within {timeout:?}: {:?}\nlog: {:#?}",
                    RunStatus::try_from(now.status),
                    self.story(run).await
                )
            }
        }
    }
}

/// The same tenant (names and keys) with its registry client on the replica at `addr`.
pub async fn tenant_on_replica(tenant: &Tenant, addr: SocketAddr) -> Tenant {
    let channel = Endpoint::from_shared(format!("http://{addr}"))
        .expect("valid endpoint")
        .connect()
        .await
        .expect("connect to the replica");
    Tenant {
        id: tenant.id.clone(),
        name: tenant.name.clone(),
        admin_key: tenant.admin_key.clone(),
        admin: pb::registry_service_client::RegistryServiceClient::with_interceptor(
            channel,
            Bearer::new(&tenant.admin_key),
        ),
        workspace: tenant.workspace.clone(),
    }
}

// ---- the worker ----

/// A worker backend serving `agents` of workspace `parent`.
#[derive(Clone)]
pub struct Worker {
    pub client: Execution,
    pub parent: String,
    pub agents: Vec<String>,
    pub identity: String,
}

impl Worker {
    pub fn with_client(&self, client: Execution) -> Self {
        Self {
            client,
            ..self.clone()
        }
    }

    pub fn poll_request(&self, wait: Duration, lease: Duration) -> pb::PollTaskRequest {
        pb::PollTaskRequest {
            parent: self.parent.clone(),
            agents: self.agents.clone(),
            identity: self.identity.clone(),
            wait: proto_duration(wait),
            lease_duration: proto_duration(lease),
        }
    }

    pub async fn try_poll(
        &self,
        wait: Duration,
        lease: Duration,
    ) -> Result<Option<pb::Task>, Status> {
        self.client
            .clone()
            .poll_task(self.poll_request(wait, lease))
            .await
            .inner()
            .map(|r| r.task)
    }

    pub async fn poll(&self, wait: Duration, lease: Duration) -> Option<pb::Task> {
        self.try_poll(wait, lease)
            .await
            .unwrap_or_else(|s| panic!("PollTask failed: {s:?}"))
    }

    /// Leases a run (lease `lease`), waiting for one up to 10 s; panics when none comes.
    pub async fn claim_with_lease(&self, lease: Duration) -> pb::Task {
        let task = self
            .poll(SOON, lease)
            .await
            .unwrap_or_else(|| panic!("no task within {SOON:?}"));
        assert!(!task.task_token.is_empty(), "a task carries a token");
        task
    }

    /// Leases a run with a 30 s lease.
    pub async fn claim(&self) -> pb::Task {
        self.claim_with_lease(Duration::from_secs(30)).await
    }

    /// Asserts that a poll waiting `wait` gets nothing.
    pub async fn expect_nothing(&self, wait: Duration) {
        if let Some(task) = self.poll(wait, Duration::from_secs(30)).await {
            panic!(
                "expected no runnable run, got {:?}",
                task.run.map(|r| (r.name, r.status, r.attempt))
            );
        }
    }

    pub async fn heartbeat(
        &self,
        token: &str,
        wait: Duration,
    ) -> Result<pb::HeartbeatTaskResponse, Status> {
        let request = pb::HeartbeatTaskRequest {
            task_token: token.into(),
            wait: proto_duration(wait),
        };
        self.client.clone().heartbeat_task(request).await.inner()
    }

    pub async fn try_append(
        &self,
        token: &str,
        events: Vec<pb::RunEventInput>,
    ) -> Result<pb::AppendRunEventsResponse, Status> {
        let request = pb::AppendRunEventsRequest {
            task_token: token.into(),
            events,
            request_id: String::new(),
        };
        self.client.clone().append_run_events(request).await.inner()
    }

    /// Appends `events` (panics on failure); returns the last sequence.
    pub async fn append(&self, token: &str, events: Vec<pb::RunEventInput>) -> i64 {
        self.try_append(token, events)
            .await
            .unwrap_or_else(|s| panic!("AppendRunEvents failed: {s:?}"))
            .last_sequence
    }

    pub async fn propose(
        &self,
        token: &str,
        steps: Vec<pb::PlanStep>,
    ) -> Result<pb::ProposePlanResponse, Status> {
        let request = pb::ProposePlanRequest {
            task_token: token.into(),
            steps,
            request_id: String::new(),
        };
        self.client.clone().propose_plan(request).await.inner()
    }

    pub async fn try_complete(
        &self,
        token: &str,
        output: Vec<pb::Message>,
        usage: Option<pb::Usage>,
    ) -> Result<pb::Run, Status> {
        let request = pb::CompleteTaskRequest {
            task_token: token.into(),
            output,
            usage,
            stop_reason: 0,
            request_id: String::new(),
            events: vec![],
        };
        self.client.clone().complete_task(request).await.inner()
    }

    /// Completes with one ASSISTANT message `answer` (panics on failure).
    pub async fn complete(&self, token: &str, answer: &str) -> pb::Run {
        self.try_complete(token, vec![assistant(answer)], None)
            .await
            .unwrap_or_else(|s| panic!("CompleteTask failed: {s:?}"))
    }

    pub async fn fail_with(&self, request: pb::FailTaskRequest) -> Result<pb::Run, Status> {
        self.client.clone().fail_task(request).await.inner()
    }

    pub async fn fail(
        &self,
        token: &str,
        error_type: &str,
        retryable: bool,
    ) -> Result<pb::Run, Status> {
        self.fail_with(fail_request(token, error_type, retryable))
            .await
    }
}

pub fn fail_request(token: &str, error_type: &str, retryable: bool) -> pb::FailTaskRequest {
    pb::FailTaskRequest {
        task_token: token.into(),
        error: Some(run_error(error_type, &format!("{error_type} happened"))),
        retryable,
        next_retry_delay: None,
        request_id: String::new(),
    }
}

/// Runs one whole attempt: claims a run, completes it with `answer`; returns the run.
pub async fn serve_one(world: &World, answer: &str) -> pb::Run {
    let task = world.worker.claim().await;
    world.worker.complete(&task.task_token, answer).await
}

/// Elapsed time since `start`, in milliseconds.
pub fn elapsed_ms(start: Instant) -> f64 {
    start.elapsed().as_secs_f64() * 1000.0
}

// ---- servers of our own ----

/// A config like the harness's (reaper every 100 ms) on `database_url`.
pub fn config(database_url: &str, root_key: &str) -> Config {
    Config {
        listen: "127.0.0.1:0".parse().expect("valid address"),
        database_url: Secret::new(database_url),
        migrate: true,
        root_key: Some(Secret::new(root_key)),
        reaper_interval: Duration::from_millis(100),
        shutdown_grace: Duration::from_secs(1),
        db_max_connections: 8,
        ..Config::default()
    }
}

pub fn new_root_key() -> String {
    format!(
        "agk_root_{}{}",
        uuid::Uuid::now_v7().simple(),
        uuid::Uuid::now_v7().simple()
    )
}

/// Workspace `id` with an ADMIN key, created by ROOT on the server at `addr`.
pub async fn tenant_on(addr: SocketAddr, root_key: &str, id: &str, quotas: pb::Quotas) -> Tenant {
    let channel: Channel = Endpoint::from_shared(format!("http://{addr}"))
        .expect("valid endpoint")
        .connect()
        .await
        .expect("connect to the test server");
    let mut root = pb::registry_service_client::RegistryServiceClient::with_interceptor(
        channel.clone(),
        Bearer::new(root_key),
    );
    let spec = pb::Workspace {
        display_name: format!("Workspace {id}"),
        quotas: Some(quotas),
        ..Default::default()
    };
    let workspace = root
        .create_workspace(req::create_workspace(id, spec))
        .await
        .must();
    let created = root
        .create_api_key(req::create_api_key(&workspace.name, pb::Role::Admin as i32))
        .await
        .must();
    Tenant {
        id: id.into(),
        name: workspace.name.clone(),
        admin_key: created.secret.clone(),
        admin: pb::registry_service_client::RegistryServiceClient::with_interceptor(
            channel,
            Bearer::new(&created.secret),
        ),
        workspace,
    }
}
