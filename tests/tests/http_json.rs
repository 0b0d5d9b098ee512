//! HTTP/JSON on the gRPC port: every unary method answers a plain HTTP/1.1 POST with a
//! JSON body (Connect's unary form), through the same auth, limits and errors as gRPC.
//! Only HTTP and JSON here: no tonic client, no generated types.

use std::{collections::BTreeSet, net::SocketAddr, sync::Mutex};

use agentry_e2e::{http::*, *};
use prost::Message as _;
use serde_json::Value;

const REGISTRY: &str = "agentry.v1.RegistryService";
const CONTEXTS: &str = "agentry.v1.ContextService";
const EXECUTION: &str = "agentry.v1.ExecutionService";
const WS: &str = "workspaces/web";

/// Every unary method of the `agentry.v1` services, as `Service/Method`.
fn unary_methods() -> BTreeSet<String> {
    let set = prost_types::FileDescriptorSet::decode(agentry_proto::FILE_DESCRIPTOR_SET)
        .expect("valid descriptors");
    let mut methods = BTreeSet::new();
    for file in set.file.iter().filter(|f| f.package() == "agentry.v1") {
        for service in &file.service {
            for method in &service.method {
                if !method.server_streaming() && !method.client_streaming() {
                    methods.insert(format!("agentry.v1.{}/{}", service.name(), method.name()));
                }
            }
        }
    }
    methods
}

/// JSON calls that must succeed, remembering which methods were called.
struct Caller {
    addr: SocketAddr,
    called: Mutex<BTreeSet<String>>,
}

impl Caller {
    async fn call(&self, method: &str, key: &str, body: Value) -> Value {
        self.called.lock().unwrap().insert(method.to_owned());
        call_json(self.addr, method, key, body).await
    }
}

fn m(service: &str, method: &str) -> String {
    format!("{service}/{method}")
}

backend_tests!(every_unary_method_answers_json, |app| async move {
    let api = Caller {
        addr: app.addr,
        called: Mutex::new(BTreeSet::new()),
    };
    let root = app.root_key.clone();
    let (admin_key, worker) = workspaces_and_keys(&api, &root).await;
    let key = admin_key.as_str();
    let worker_key = worker["secret"].as_str().unwrap().to_owned();
    let (project, agent_name, instance_name) = registry(&api, key).await;
    let context = contexts(&api, key, &project).await;
    let session = runs(
        &api,
        key,
        &worker_key,
        &project,
        &agent_name,
        &instance_name,
    )
    .await;
    failed_and_cancelled_runs(&api, key, &worker_key, &session, &agent_name).await;

    // The audit log, where the server has it (it arrives on a branch of its own).
    let audit = m(REGISTRY, "ListAuditRecords");
    if unary_methods().contains(&audit) {
        let records = api.call(&audit, key, json!({"parent": WS})).await;
        assert!(
            !records["auditRecords"].as_array().unwrap().is_empty(),
            "{records}"
        );
    }

    // Deletes, innermost first.
    api.call(
        &m(EXECUTION, "DeleteSession"),
        key,
        json!({"name": session}),
    )
    .await;
    api.call(&m(CONTEXTS, "DeleteContext"), key, json!({"name": context}))
        .await;
    api.call(
        &m(REGISTRY, "DeleteInstance"),
        key,
        json!({"name": instance_name}),
    )
    .await;
    api.call(
        &m(REGISTRY, "DeleteAgent"),
        key,
        json!({"name": agent_name, "force": true}),
    )
    .await;
    let worker_key_name = worker["apiKey"]["name"].as_str().unwrap();
    api.call(
        &m(REGISTRY, "DeleteApiKey"),
        key,
        json!({"name": worker_key_name}),
    )
    .await;
    api.call(
        &m(REGISTRY, "DeleteProject"),
        key,
        json!({"name": project, "force": true}),
    )
    .await;
    let deleted = api
        .call(
            &m(REGISTRY, "DeleteWorkspace"),
            &root,
            json!({"name": WS, "force": true}),
        )
        .await;
    assert_eq!(deleted, json!({}), "google.protobuf.Empty is {{}}");

    let missed: Vec<String> = unary_methods()
        .difference(&api.called.lock().unwrap())
        .cloned()
        .collect();
    assert!(
        missed.is_empty(),
        "unary methods not called over HTTP/JSON: {missed:?}"
    );
});

/// Workspaces and keys, as ROOT; the ADMIN key's secret and the WORKER key.
async fn workspaces_and_keys(api: &Caller, root: &str) -> (String, Value) {
    let ws = WS;
    let created = api
        .call(&m(REGISTRY, "CreateWorkspace"), root,
            json!({"workspaceId": "web", "workspace": {"displayName": "Web", "labels": {"team": "a"}}}))
        .await;
    assert_eq!(created["name"], ws);
    assert_eq!(
        created["quotas"]["maxContextBytes"], "1048576",
        "int64 is a string"
    );
    let got = api
        .call(&m(REGISTRY, "GetWorkspace"), root, json!({"name": ws}))
        .await;
    assert_eq!(got["displayName"], "Web");
    let listed = api
        .call(&m(REGISTRY, "ListWorkspaces"), root, json!({}))
        .await;
    assert!(
        listed["workspaces"]
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w["name"] == ws)
    );
    let updated = api
        .call(&m(REGISTRY, "UpdateWorkspace"), root,
            json!({"workspace": {"name": ws, "description": "over HTTP"}, "updateMask": "description"}))
        .await;
    assert_eq!(updated["description"], "over HTTP");
    let admin = api
        .call(
            &m(REGISTRY, "CreateApiKey"),
            root,
            json!({"parent": ws, "apiKey": {"displayName": "admin", "role": "ROLE_ADMIN"}}),
        )
        .await;
    let admin_key = admin["secret"].as_str().expect("a secret").to_owned();
    assert_eq!(admin["apiKey"]["role"], "ROLE_ADMIN", "enums by name");
    let worker = api
        .call(
            &m(REGISTRY, "CreateApiKey"),
            &admin_key,
            json!({"parent": ws, "api_key": {"display_name": "worker", "role": "ROLE_WORKER"}}),
        )
        .await;
    let keys = api
        .call(
            &m(REGISTRY, "ListApiKeys"),
            &admin_key,
            json!({"parent": ws}),
        )
        .await;
    assert_eq!(keys["apiKeys"].as_array().unwrap().len(), 2);

    (admin_key, worker)
}

/// Projects, agents, instances, as the workspace's ADMIN; their names.
async fn registry(api: &Caller, key: &str) -> (String, String, String) {
    let ws = WS;
    let project = api
        .call(
            &m(REGISTRY, "CreateProject"),
            key,
            json!({"parent": ws, "projectId": "p", "project": {}}),
        )
        .await["name"]
        .as_str()
        .unwrap()
        .to_owned();
    api.call(&m(REGISTRY, "GetProject"), key, json!({"name": project}))
        .await;
    let projects = api
        .call(&m(REGISTRY, "ListProjects"), key, json!({"parent": ws}))
        .await;
    assert_eq!(projects["projects"][0]["name"], project);
    let renamed = api
        .call(
            &m(REGISTRY, "UpdateProject"),
            key,
            json!({"project": {"name": project, "displayName": "P"}, "updateMask": "displayName"}),
        )
        .await;
    assert_eq!(renamed["displayName"], "P");
    let agent = api
        .call(&m(REGISTRY, "CreateAgent"), key,
            json!({"parent": ws, "agentId": "a", "agent": {"displayName": "A", "agentType": "langgraph",
                "enabled": true, "tools": [{"name": "write", "risk": "TOOL_RISK_WRITE"}],
                "configSchema": {"type": "object", "properties": {"t": {"type": "number", "maximum": 2}}}}}))
        .await;
    let agent_name = agent["name"].as_str().unwrap().to_owned();
    assert_eq!(
        agent["configSchema"]["properties"]["t"]["maximum"], 2.0,
        "a Struct is JSON"
    );
    api.call(&m(REGISTRY, "GetAgent"), key, json!({"name": agent_name}))
        .await;
    api.call(&m(REGISTRY, "ListAgents"), key, json!({"parent": ws}))
        .await;
    let revised = api
        .call(&m(REGISTRY, "UpdateAgent"), key,
            json!({"agent": {"name": agent_name, "description": "v2"}, "updateMask": "description"}))
        .await;
    assert_eq!(revised["revision"], "2", "int64 is a string");
    let revisions = api
        .call(
            &m(REGISTRY, "ListAgentRevisions"),
            key,
            json!({"name": agent_name}),
        )
        .await;
    assert_eq!(revisions["revisions"].as_array().unwrap().len(), 2);
    let instance = api
        .call(
            &m(REGISTRY, "CreateInstance"),
            key,
            json!({"parent": project, "instanceId": "i", "instance": {"agent": agent_name,
                "config": {"t": 1.5}, "heartbeatTtl": "30s"}}),
        )
        .await;
    let instance_name = instance["name"].as_str().unwrap().to_owned();
    assert_eq!(instance["heartbeatTtl"], "30s", "a Duration is text");
    api.call(
        &m(REGISTRY, "GetInstance"),
        key,
        json!({"name": instance_name}),
    )
    .await;
    api.call(
        &m(REGISTRY, "ListInstances"),
        key,
        json!({"parent": project}),
    )
    .await;
    api.call(&m(REGISTRY, "UpdateInstance"), key,
        json!({"instance": {"name": instance_name, "displayName": "I"}, "updateMask": "displayName"}))
        .await;
    let active = api
        .call(
            &m(REGISTRY, "SetInstanceStatus"),
            key,
            json!({"name": instance_name, "status": "INSTANCE_STATUS_INITIALIZING"}),
        )
        .await;
    assert_eq!(active["status"], "INSTANCE_STATUS_INITIALIZING");
    api.call(
        &m(REGISTRY, "HeartbeatInstance"),
        key,
        json!({"name": instance_name}),
    )
    .await;

    (project, agent_name, instance_name)
}

/// Every ContextService unary method on one context; its name.
async fn contexts(api: &Caller, key: &str, project: &str) -> String {
    let context = api
        .call(
            &m(CONTEXTS, "CreateContext"),
            key,
            json!({"parent": project, "contextId": "c", "context": {}, "data": {"a": 1}}),
        )
        .await["name"]
        .as_str()
        .unwrap()
        .to_owned();
    api.call(&m(CONTEXTS, "GetContext"), key, json!({"name": context}))
        .await;
    api.call(
        &m(CONTEXTS, "ListContexts"),
        key,
        json!({"parent": project}),
    )
    .await;
    let written = api
        .call(
            &m(CONTEXTS, "WriteContext"),
            key,
            json!({"name": context, "mergePatch": {"b": 2}, "expectedVersion": "1"}),
        )
        .await;
    assert_eq!(written["version"]["version"], "2", "{written}");
    let read = api
        .call(&m(CONTEXTS, "ReadContext"), key, json!({"name": context}))
        .await;
    assert_eq!(read["data"], json!({"a": 1, "b": 2}));
    api.call(
        &m(CONTEXTS, "ListContextVersions"),
        key,
        json!({"name": context}),
    )
    .await;
    let diff = api
        .call(
            &m(CONTEXTS, "DiffContextVersions"),
            key,
            json!({"name": context, "fromVersion": 1, "toVersion": 2}),
        )
        .await;
    assert_eq!(diff["operations"][0]["op"], "add");
    api.call(
        &m(CONTEXTS, "RollbackContext"),
        key,
        json!({"name": context, "targetVersion": 1}),
    )
    .await;

    context
}

/// Sessions and a run through its worker protocol (the WORKER key) and an approval;
/// the session's name.
async fn runs(
    api: &Caller,
    key: &str,
    worker_key: &str,
    project: &str,
    agent_name: &str,
    instance_name: &str,
) -> String {
    let ws = WS;
    let session = api
        .call(
            &m(EXECUTION, "CreateSession"),
            key,
            json!({"parent": project, "sessionId": "s", "session": {"instance": instance_name}}),
        )
        .await["name"]
        .as_str()
        .unwrap()
        .to_owned();
    api.call(&m(EXECUTION, "GetSession"), key, json!({"name": session}))
        .await;
    api.call(
        &m(EXECUTION, "ListSessions"),
        key,
        json!({"parent": project}),
    )
    .await;
    let run = start_run(api, key, &session, "AUTONOMY_LEVEL_L1").await;
    api.call(&m(EXECUTION, "GetRun"), key, json!({"name": run}))
        .await;
    let runs = api
        .call(
            &m(EXECUTION, "ListRuns"),
            key,
            json!({"parent": format!("{project}/sessions/-")}),
        )
        .await;
    assert_eq!(runs["runs"][0]["name"], run);
    let token = lease(api, worker_key, ws, agent_name).await;
    api.call(
        &m(EXECUTION, "HeartbeatTask"),
        worker_key,
        json!({"taskToken": token}),
    )
    .await;
    let appended = api
        .call(&m(EXECUTION, "AppendRunEvents"), worker_key,
            json!({"taskToken": token, "events": [{"messageDelta": {"messageId": "m", "text": "hi"}}]}))
        .await;
    assert!(appended["lastSequence"].as_str().is_some(), "{appended}");
    let proposed = api
        .call(
            &m(EXECUTION, "ProposePlan"),
            worker_key,
            json!({"taskToken": token, "steps": [{"tool": "write", "arguments": {"path": "/a"}}]}),
        )
        .await;
    assert_eq!(
        proposed.get("approved"),
        None,
        "L1 asks a human before a write: {proposed}"
    );
    let approval = proposed["approval"]["approvalId"]
        .as_str()
        .unwrap()
        .to_owned();
    let decided = api
        .call(
            &m(EXECUTION, "DecideApproval"),
            key,
            json!({"name": run, "approvalId": approval, "decision": "APPROVAL_DECISION_APPROVE"}),
        )
        .await;
    assert_eq!(decided["status"], "RUN_STATUS_QUEUED");
    let token = lease(api, worker_key, ws, agent_name).await;
    let done = api
        .call(&m(EXECUTION, "CompleteTask"), worker_key,
            json!({"taskToken": token, "output": [{"role": "MESSAGE_ROLE_ASSISTANT", "content": "done"}]}))
        .await;
    assert_eq!(done["status"], "RUN_STATUS_SUCCEEDED");
    let messages = api
        .call(
            &m(EXECUTION, "ListMessages"),
            key,
            json!({"parent": session}),
        )
        .await;
    assert!(
        messages["messages"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["content"] == "done")
    );
    let stats = api
        .call(
            &m(EXECUTION, "GetRunStats"),
            key,
            json!({"parent": project}),
        )
        .await;
    assert!(stats.is_object(), "{stats}");
    session
}

/// A run that fails and one that is cancelled.
async fn failed_and_cancelled_runs(
    api: &Caller,
    key: &str,
    worker_key: &str,
    session: &str,
    agent_name: &str,
) {
    let ws = WS;
    let failing = start_run(api, key, session, "AUTONOMY_LEVEL_L3").await;
    let token = lease(api, worker_key, ws, agent_name).await;
    let failed = api
        .call(
            &m(EXECUTION, "FailTask"),
            worker_key,
            json!({"taskToken": token, "error": {"type": "Boom", "message": "boom"}}),
        )
        .await;
    assert_eq!(failed["name"], failing);
    assert_eq!(failed["status"], "RUN_STATUS_FAILED");
    let cancelled = start_run(api, key, session, "AUTONOMY_LEVEL_L3").await;
    let cancel = api
        .call(&m(EXECUTION, "CancelRun"), key, json!({"name": cancelled}))
        .await;
    assert_eq!(cancel["status"], "RUN_STATUS_CANCELLED");
}

/// CreateRun in `session` at `autonomy`; the run's name.
async fn start_run(api: &Caller, key: &str, session: &str, autonomy: &str) -> String {
    let run = api
        .call(
            &m(EXECUTION, "CreateRun"),
            key,
            json!({"parent": session, "run": {"autonomyLevel": autonomy,
                "input": [{"role": "MESSAGE_ROLE_USER", "content": "hello"}]}}),
        )
        .await;
    assert_eq!(run["status"], "RUN_STATUS_QUEUED");
    run["name"].as_str().unwrap().to_owned()
}

/// PollTask until a task comes; its token.
async fn lease(api: &Caller, key: &str, workspace: &str, agent: &str) -> String {
    let reply = api
        .call(
            &m(EXECUTION, "PollTask"),
            key,
            json!({"parent": workspace, "agents": [agent], "wait": "10s", "identity": "curl"}),
        )
        .await;
    reply["task"]["taskToken"]
        .as_str()
        .unwrap_or_else(|| panic!("a task within 10 s: {reply}"))
        .to_owned()
}
