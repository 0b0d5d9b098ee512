//! Shared pieces of the ContextService end-to-end tests: a context client, request
//! builders, a handle on one context, a server started with our own [`Config`] (so a
//! test knows the database URL and can count blobs through the store), an independent
//! RFC 6902 applier for checking diffs, and RFC 3339 formatting for time filters.
//!
//! Each `contexts_*.rs` test binary uses a different part of this module.
#![allow(dead_code)]

use std::{net::SocketAddr, time::Duration};

use agentry_e2e::*;
use agentry_server::{
    RunningServer,
    config::{Config, Secret},
};
use pb::{
    context_service_client::ContextServiceClient, registry_service_client::RegistryServiceClient,
    write_context_request::Change,
};
use serde_json::Value;
use tonic::{
    Code, Status, Streaming,
    service::interceptor::InterceptedService,
    transport::{Channel, Endpoint},
};

pub type Contexts = ContextServiceClient<InterceptedService<Channel, Bearer>>;
pub type Watch = Streaming<pb::WatchContextResponse>;

/// A ContextService client on `addr` that authenticates with `key`.
pub async fn contexts(addr: SocketAddr, key: &str) -> Contexts {
    let channel = Endpoint::from_shared(format!("http://{addr}"))
        .expect("valid endpoint")
        .connect()
        .await
        .expect("connect to the test server");
    ContextServiceClient::with_interceptor(channel, Bearer::new(key))
        .max_decoding_message_size(64 << 20)
}

/// [`contexts`] over a connection whose HTTP/2 flow-control windows are `window` bytes,
/// so that a client that stops reading makes the server stop sending soon.
pub async fn contexts_with_window(addr: SocketAddr, key: &str, window: u32) -> Contexts {
    let channel = Endpoint::from_shared(format!("http://{addr}"))
        .expect("valid endpoint")
        .initial_stream_window_size(window)
        .initial_connection_window_size(window)
        .connect()
        .await
        .expect("connect to the test server");
    ContextServiceClient::with_interceptor(channel, Bearer::new(key))
}

/// A new key of `tenant` with `role`: (secret, resource name). The name is what the
/// server records as a version's `author`.
pub async fn named_key(tenant: &Tenant, role: pb::Role) -> (String, String) {
    let created = tenant
        .admin
        .clone()
        .create_api_key(req::create_api_key(&tenant.name, role as i32))
        .await
        .must();
    let name = created.api_key.expect("the key comes back").name;
    assert!(name.starts_with(&format!("{}/apiKeys/", tenant.name)));
    (created.secret, name)
}

// ---- request builders ----

pub fn data(doc: Value) -> Change {
    Change::Data(to_value(doc))
}

pub fn merge(patch: Value) -> Change {
    Change::MergePatch(to_value(patch))
}

/// A json_patch change from RFC 6902 JSON (`[{"op": "add", "path": "/a", "value": 1}]`).
pub fn patch(ops: Value) -> Change {
    Change::JsonPatch(pb::JsonPatch {
        operations: patch_ops(ops),
    })
}

pub fn patch_ops(ops: Value) -> Vec<pb::JsonPatchOperation> {
    let Value::Array(ops) = ops else {
        panic!("a JSON patch is an array")
    };
    ops.into_iter()
        .map(|op| pb::JsonPatchOperation {
            op: op["op"].as_str().expect("op").into(),
            path: op["path"].as_str().expect("path").into(),
            from: op["from"].as_str().unwrap_or_default().into(),
            value: op.get("value").cloned().map(to_value),
        })
        .collect()
}

/// The RFC 6902 JSON of operations returned by DiffContextVersions.
pub fn ops_json(ops: &[pb::JsonPatchOperation]) -> Value {
    Value::Array(
        ops.iter()
            .map(|op| {
                let mut out = json!({"op": op.op, "path": op.path});
                if matches!(op.op.as_str(), "move" | "copy") {
                    out["from"] = json!(op.from);
                }
                if let Some(value) = &op.value {
                    out["value"] = plain(from_value(value));
                }
                out
            })
            .collect(),
    )
}

pub fn write(name: &str, change: Change) -> pb::WriteContextRequest {
    pb::WriteContextRequest {
        name: name.into(),
        change: Some(change),
        ..Default::default()
    }
}

pub fn cas(name: &str, change: Change, expected_version: i64) -> pb::WriteContextRequest {
    pb::WriteContextRequest {
        expected_version: Some(expected_version),
        ..write(name, change)
    }
}

pub fn read(name: &str, version: i64) -> pb::ReadContextRequest {
    pb::ReadContextRequest {
        name: name.into(),
        version,
    }
}

pub fn rollback(name: &str, target_version: i64) -> pb::RollbackContextRequest {
    pb::RollbackContextRequest {
        name: name.into(),
        target_version,
        ..Default::default()
    }
}

pub fn diff(name: &str, from_version: i64, to_version: i64) -> pb::DiffContextVersionsRequest {
    pb::DiffContextVersionsRequest {
        name: name.into(),
        from_version,
        to_version,
    }
}

pub fn watch(name: &str, after_version: i64) -> pb::WatchContextRequest {
    pb::WatchContextRequest {
        name: name.into(),
        after_version,
        view: 0,
    }
}

pub fn create(
    parent: &str,
    id: &str,
    context: pb::Context,
    doc: Option<Value>,
) -> pb::CreateContextRequest {
    pb::CreateContextRequest {
        parent: parent.into(),
        context_id: id.into(),
        context: Some(context),
        data: doc.map(to_value),
        request_id: String::new(),
    }
}

/// A context spec keeping the last `keep_last` versions (0: the workspace default).
pub fn keeping(keep_last: i32) -> pb::Context {
    pb::Context {
        keep_last,
        ..Default::default()
    }
}

// ---- JSON ----

/// `data` of a version as plain JSON, with whole numbers as integers (the proto carries
/// every number as a double), so it compares equal to `json!` literals.
pub fn plain(value: Value) -> Value {
    match value {
        Value::Number(n) => match n.as_f64() {
            Some(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => json!(f as i64),
            _ => Value::Number(n),
        },
        Value::Array(items) => Value::Array(items.into_iter().map(plain).collect()),
        Value::Object(map) => Value::Object(map.into_iter().map(|(k, v)| (k, plain(v))).collect()),
        other => other,
    }
}

/// The document of a version (FULL view), as plain JSON.
#[track_caller]
pub fn doc_of(version: &pb::ContextVersion) -> Value {
    plain(from_value(
        version.data.as_ref().expect("a FULL version carries data"),
    ))
}

/// An object nested `depth` levels deep: `{"k": {"k": … {} }}`.
pub fn nested(depth: usize) -> Value {
    (0..depth).fold(json!({}), |inner, _| json!({ "k": inner }))
}

// ---- one context ----

/// A context name plus a client to talk about it.
#[derive(Clone)]
pub struct Ctx {
    pub client: Contexts,
    pub name: String,
}

impl Ctx {
    /// Creates `{parent}/contexts/{id}` and returns a handle on it.
    pub async fn create(
        client: &Contexts,
        parent: &str,
        id: &str,
        context: pb::Context,
        doc: Option<Value>,
    ) -> (Self, pb::Context) {
        let created = client
            .clone()
            .create_context(create(parent, id, context, doc))
            .await
            .must();
        let handle = Self {
            client: client.clone(),
            name: created.name.clone(),
        };
        assert_eq!(handle.name, format!("{parent}/contexts/{id}"));
        (handle, created)
    }

    pub fn with(&self, client: &Contexts) -> Self {
        Self {
            client: client.clone(),
            name: self.name.clone(),
        }
    }

    pub async fn get(&self) -> pb::Context {
        let request = pb::GetContextRequest {
            name: self.name.clone(),
        };
        self.client.clone().get_context(request).await.must()
    }

    pub async fn try_get(&self) -> Result<pb::Context, Status> {
        let request = pb::GetContextRequest {
            name: self.name.clone(),
        };
        self.client.clone().get_context(request).await.inner()
    }

    pub async fn head(&self) -> i64 {
        self.get().await.head_version
    }

    pub async fn try_write(&self, change: Change) -> Result<pb::WriteContextResponse, Status> {
        self.send(write(&self.name, change)).await
    }

    pub async fn send(
        &self,
        request: pb::WriteContextRequest,
    ) -> Result<pb::WriteContextResponse, Status> {
        self.client.clone().write_context(request).await.inner()
    }

    /// Writes and returns the version written (panics on failure or noop).
    pub async fn write(&self, change: Change) -> pb::ContextVersion {
        let response = self
            .try_write(change)
            .await
            .unwrap_or_else(|s| panic!("write failed: {s:?}"));
        assert!(!response.noop, "expected a new version, got a noop");
        response.version.expect("a written version")
    }

    pub async fn write_doc(&self, doc: Value) -> pb::ContextVersion {
        self.write(data(doc)).await
    }

    pub async fn try_read(&self, version: i64) -> Result<pb::ContextVersion, Status> {
        self.client
            .clone()
            .read_context(read(&self.name, version))
            .await
            .inner()
    }

    /// The document at `version` (0: the head).
    pub async fn doc(&self, version: i64) -> Value {
        let read = self
            .try_read(version)
            .await
            .unwrap_or_else(|s| panic!("read of version {version} failed: {s:?}"));
        doc_of(&read)
    }

    pub async fn try_rollback(
        &self,
        target_version: i64,
    ) -> Result<pb::WriteContextResponse, Status> {
        self.client
            .clone()
            .rollback_context(rollback(&self.name, target_version))
            .await
            .inner()
    }

    pub async fn try_diff(
        &self,
        from_version: i64,
        to_version: i64,
    ) -> Result<Vec<pb::JsonPatchOperation>, Status> {
        self.client
            .clone()
            .diff_context_versions(diff(&self.name, from_version, to_version))
            .await
            .inner()
            .map(|d| d.operations)
    }

    pub async fn list_page(
        &self,
        view: pb::ContextVersionView,
        filter: &str,
        page_size: i32,
        page_token: &str,
    ) -> Result<pb::ListContextVersionsResponse, Status> {
        let request = pb::ListContextVersionsRequest {
            name: self.name.clone(),
            page_size,
            page_token: page_token.into(),
            view: view as i32,
            filter: filter.into(),
        };
        self.client
            .clone()
            .list_context_versions(request)
            .await
            .inner()
    }

    /// Every version matching `filter`, newest first, following page tokens.
    pub async fn versions_where(
        &self,
        view: pb::ContextVersionView,
        filter: &str,
    ) -> Vec<pb::ContextVersion> {
        let mut all = Vec::new();
        let mut token = String::new();
        loop {
            let page = self
                .list_page(view, filter, 1000, &token)
                .await
                .unwrap_or_else(|s| panic!("ListContextVersions failed: {s:?}"));
            all.extend(page.versions);
            if page.next_page_token.is_empty() {
                return all;
            }
            token = page.next_page_token;
        }
    }

    /// Every retained version, newest first, headers only.
    pub async fn versions(&self) -> Vec<pb::ContextVersion> {
        self.versions_where(pb::ContextVersionView::Basic, "").await
    }

    /// The retained version numbers, newest first.
    pub async fn version_numbers(&self) -> Vec<i64> {
        self.versions().await.iter().map(|v| v.version).collect()
    }

    pub async fn try_watch(&self, after_version: i64) -> Result<Watch, Status> {
        self.client
            .clone()
            .watch_context(watch(&self.name, after_version))
            .await
            .inner()
    }

    pub async fn watch(&self, after_version: i64) -> Watch {
        self.try_watch(after_version)
            .await
            .unwrap_or_else(|s| panic!("WatchContext failed: {s:?}"))
    }

    pub async fn delete(&self) -> Result<(), Status> {
        let request = pb::DeleteContextRequest {
            name: self.name.clone(),
            request_id: String::new(),
        };
        self.client
            .clone()
            .delete_context(request)
            .await
            .inner()
            .map(|_| ())
    }
}

/// The next message of a watch, failing the test when none comes within `timeout`.
pub async fn next_within(
    stream: &mut Watch,
    timeout: Duration,
) -> Result<Option<pb::ContextVersion>, Status> {
    match tokio::time::timeout(timeout, stream.message()).await {
        Ok(message) => {
            message.map(|m| m.map(|m| m.version.expect("a watch message has a version")))
        }
        Err(_) => panic!("no watch message within {timeout:?}"),
    }
}

/// The next version of a watch (within 10 s); panics on an error or the end of the stream.
pub async fn next_version(stream: &mut Watch) -> pb::ContextVersion {
    match next_within(stream, Duration::from_secs(10)).await {
        Ok(Some(version)) => version,
        Ok(None) => panic!("the watch ended"),
        Err(status) => panic!("the watch failed: {status:?}"),
    }
}

/// Asserts that nothing arrives on the watch for `quiet` (longer than the server's poll
/// interval, so a duplicate delivered by the fallback poll would show).
pub async fn assert_quiet(stream: &mut Watch, quiet: Duration) {
    if let Ok(message) = tokio::time::timeout(quiet, stream.message()).await {
        panic!("expected nothing more on the watch, got {message:?}");
    }
}

/// Asserts that `result` failed with `code` and `reason`, and that its ErrorInfo
/// metadata has `key = value`.
#[track_caller]
pub fn assert_status_meta<T: std::fmt::Debug>(
    result: Result<T, Status>,
    code: Code,
    reason: &str,
    key: &str,
    value: i64,
) -> Status {
    let status = assert_status(result, code, reason);
    assert_eq!(
        error_metadata(&status, key),
        Some(value.to_string()),
        "ErrorInfo metadata {key}: {status:?}"
    );
    status
}

// ---- our own server ----

/// A server started with our own [`Config`] on a fresh database whose URL we keep, so a
/// test can reach the store directly (blob accounting), start a second replica on the
/// same database or shut the server down in the middle.
pub struct OwnServer {
    pub addr: SocketAddr,
    pub root_key: String,
    pub database: FreshDatabase,
    server: Option<RunningServer>,
}

/// A config like the harness's, with the watch fallback poll set to `poll_interval`.
pub fn config(database_url: &str, root_key: &str, poll_interval: Duration) -> Config {
    Config {
        listen: "127.0.0.1:0".parse().expect("valid address"),
        database_url: Secret::new(database_url),
        migrate: true,
        root_key: Some(Secret::new(root_key)),
        reaper_interval: Duration::from_millis(100),
        poll_interval,
        shutdown_grace: Duration::from_secs(1),
        db_max_connections: 16,
        ..Config::default()
    }
}

/// Two servers on one fresh Postgres database, with the watch fallback poll at 30 s (so
/// that anything crossing between them arrives through LISTEN/NOTIFY or storage, not the
/// poll), and tenant `acme` with project `web`, created through replica A.
pub struct TwoReplicas {
    pub a: RunningServer,
    pub b: RunningServer,
    pub acme: Tenant,
    database: FreshDatabase,
}

impl TwoReplicas {
    pub async fn start() -> Self {
        let database = fresh_database(Backend::Postgres).await;
        let root_key = new_root_key();
        let poll = Duration::from_secs(30);
        let a = agentry_server::start(config(&database.url, &root_key, poll))
            .await
            .expect("replica A starts");
        let b = agentry_server::start(config(&database.url, &root_key, poll))
            .await
            .expect("replica B starts");
        let acme = tenant_on(a.local_addr, &root_key, "acme", pb::Quotas::default()).await;
        acme.project("web").await;
        Self {
            a,
            b,
            acme,
            database,
        }
    }

    pub async fn stop(self) {
        self.a.shutdown().await.expect("replica A stops");
        self.b.shutdown().await.expect("replica B stops");
        self.database.drop_database().await;
    }
}

pub fn new_root_key() -> String {
    format!(
        "agk_root_{}{}",
        uuid::Uuid::now_v7().simple(),
        uuid::Uuid::now_v7().simple()
    )
}

impl OwnServer {
    pub async fn start(backend: Backend, poll_interval: Duration) -> Self {
        let database = fresh_database(backend).await;
        let root_key = new_root_key();
        let server = agentry_server::start(config(&database.url, &root_key, poll_interval))
            .await
            .expect("the server starts");
        Self {
            addr: server.local_addr,
            root_key,
            database,
            server: Some(server),
        }
    }

    /// The server's change feed (wake-up counts).
    pub fn change_feed(&self) -> std::sync::Arc<dyn agentry_store::ChangeFeed> {
        self.server
            .as_ref()
            .expect("the server is running")
            .change_feed()
    }

    pub async fn store(&self) -> agentry_store::Store {
        agentry_store::Store::connect(&self.database.url, 2)
            .await
            .expect("connect the store")
    }

    pub async fn tenant(&self, id: &str) -> Tenant {
        self.tenant_with_quotas(id, pb::Quotas::default()).await
    }

    pub async fn tenant_with_quotas(&self, id: &str, quotas: pb::Quotas) -> Tenant {
        tenant_on(self.addr, &self.root_key, id, quotas).await
    }

    /// Stops the server (health NOT_SERVING, in-flight calls drained) but keeps the
    /// database.
    pub async fn stop(&mut self) {
        if let Some(server) = self.server.take() {
            server
                .shutdown()
                .await
                .expect("the server shuts down cleanly");
        }
    }

    pub async fn shutdown(mut self) {
        self.stop().await;
        self.database.drop_database().await;
    }
}

/// Workspace `id` with an ADMIN key, created by ROOT on the server at `addr`.
pub async fn tenant_on(addr: SocketAddr, root_key: &str, id: &str, quotas: pb::Quotas) -> Tenant {
    let channel = Endpoint::from_shared(format!("http://{addr}"))
        .expect("valid endpoint")
        .connect()
        .await
        .expect("connect to the test server");
    let mut root = RegistryServiceClient::with_interceptor(channel.clone(), Bearer::new(root_key));
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
        admin: RegistryServiceClient::with_interceptor(channel, Bearer::new(&created.secret)),
        workspace,
    }
}

/// Blob count and bytes of `workspace`, straight from the store.
pub async fn blob_stats(store: &agentry_store::Store, workspace: &str) -> (i64, i64) {
    let id = workspace.trim_start_matches("workspaces/");
    store
        .context_blob_stats(id)
        .await
        .unwrap_or_else(|e| panic!("context_blob_stats: {e}"))
}

/// The version numbers `ctx` stores, ascending: its retained versions and those below
/// its floor that compaction has not deleted yet (it deletes in batches).
pub async fn stored_versions(store: &agentry_store::Store, ctx: &Ctx) -> Vec<i64> {
    let name = agentry_core::names::ContextName::parse("name", &ctx.name).expect("a context name");
    store
        .context_stored_versions(&name)
        .await
        .unwrap_or_else(|e| panic!("context_stored_versions: {e}"))
}

/// Asserts that the workspace stores one blob per distinct document of each context
/// among the retained versions of `contexts` (all of the workspace's contexts), and no
/// other, except for the documents of versions below a floor that compaction has not
/// deleted yet: fewer than `COMPACTION_BATCH` of them per context, all older than the
/// context's oldest retained version. Once a context has none, the count is exact.
pub async fn assert_blobs_match_retained(
    store: &agentry_store::Store,
    workspace: &str,
    contexts: &[&Ctx],
) {
    let mut distinct = std::collections::BTreeMap::new();
    let mut pending = 0;
    for ctx in contexts {
        let retained = ctx.versions().await;
        assert_row_head_hash(store, ctx, retained.first()).await;
        let oldest = retained.last().map_or(i64::MAX, |v| v.version);
        let below: Vec<i64> = stored_versions(store, ctx)
            .await
            .into_iter()
            .filter(|v| *v < oldest)
            .collect();
        assert!(
            (below.len() as i64) < agentry_store::COMPACTION_BATCH,
            "{} stores {} versions below its floor",
            ctx.name,
            below.len()
        );
        pending += below.len() as i64;
        for v in retained {
            distinct.insert((ctx.name.clone(), v.sha256.clone()), v.size_bytes);
        }
    }
    let expected = (distinct.len() as i64, distinct.values().sum::<i64>());
    let (blobs, bytes) = blob_stats(store, workspace).await;
    if pending == 0 {
        assert_eq!(
            (blobs, bytes),
            expected,
            "(blob count, bytes) must equal the distinct documents of each context's retained versions"
        );
    } else {
        assert!(
            blobs >= expected.0 && blobs <= expected.0 + pending && bytes >= expected.1,
            "{blobs} blobs of {bytes} bytes for {expected:?} retained and {pending} versions to compact"
        );
    }
}

/// Asserts that the context row's head hash (which writes decide on) is the hash of the
/// head version `head` (the newest retained version), or empty when there is none.
async fn assert_row_head_hash(
    store: &agentry_store::Store,
    ctx: &Ctx,
    head: Option<&pb::ContextVersion>,
) {
    let name = agentry_core::names::ContextName::parse("name", &ctx.name).expect("a context name");
    let recorded = store
        .context_row_head_sha256(&name)
        .await
        .unwrap_or_else(|e| panic!("context_row_head_sha256: {e}"));
    let expected = head.map(|v| v.sha256.clone()).unwrap_or_default();
    assert_eq!(recorded, expected, "{}: the row's head hash", ctx.name);
}

// ---- an independent RFC 6902 applier, to check diffs without trusting the server ----

fn pointer(path: &str) -> Vec<String> {
    if path.is_empty() {
        return Vec::new();
    }
    assert!(path.starts_with('/'), "bad pointer {path:?}");
    path[1..]
        .split('/')
        .map(|t| t.replace("~1", "/").replace("~0", "~"))
        .collect()
}

fn parent_of<'a>(doc: &'a mut Value, tokens: &[String]) -> &'a mut Value {
    tokens.iter().fold(doc, |node, token| match node {
        Value::Object(map) => map.get_mut(token).expect("pointer target exists"),
        Value::Array(items) => {
            let i: usize = token.parse().expect("array index");
            &mut items[i]
        }
        other => panic!("cannot descend into {other}"),
    })
}

fn take(doc: &mut Value, path: &str) -> Value {
    let tokens = pointer(path);
    let (last, parents) = tokens.split_last().expect("cannot remove the root");
    match parent_of(doc, parents) {
        Value::Object(map) => map.remove(last).expect("removed member exists"),
        Value::Array(items) => items.remove(last.parse::<usize>().expect("array index")),
        other => panic!("cannot remove from {other}"),
    }
}

fn put(doc: &mut Value, path: &str, value: Value, replace: bool) {
    let tokens = pointer(path);
    let Some((last, parents)) = tokens.split_last() else {
        *doc = value;
        return;
    };
    match parent_of(doc, parents) {
        Value::Object(map) => {
            map.insert(last.clone(), value);
        }
        Value::Array(items) if last == "-" => items.push(value),
        Value::Array(items) => {
            let i: usize = last.parse().expect("array index");
            if replace {
                items[i] = value;
            } else {
                items.insert(i, value);
            }
        }
        other => panic!("cannot add into {other}"),
    }
}

/// Applies RFC 6902 `ops` (JSON) to `doc`; panics on anything RFC 6902 forbids.
pub fn apply_ops(doc: &Value, ops: &Value) -> Value {
    let mut doc = doc.clone();
    for op in ops.as_array().expect("a JSON patch is an array") {
        let path = op["path"].as_str().expect("path");
        match op["op"].as_str().expect("op") {
            "add" => put(&mut doc, path, op["value"].clone(), false),
            "replace" => {
                take(&mut doc, path);
                put(&mut doc, path, op["value"].clone(), false);
            }
            "remove" => {
                take(&mut doc, path);
            }
            "move" => {
                let value = take(&mut doc, op["from"].as_str().expect("from"));
                put(&mut doc, path, value, false);
            }
            "copy" => {
                let from = op["from"].as_str().expect("from");
                let value = doc.pointer(from).expect("copy source exists").clone();
                put(&mut doc, path, value, false);
            }
            "test" => assert_eq!(doc.pointer(path), Some(&op["value"]), "test at {path}"),
            other => panic!("unknown op {other}"),
        }
    }
    doc
}

// ---- time ----

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

#[test]
fn rfc3339_formats_known_instants() {
    let at = |seconds, nanos| rfc3339(&Some(prost_types::Timestamp { seconds, nanos }));
    assert_eq!(at(0, 0), "1970-01-01T00:00:00.000000Z");
    assert_eq!(at(951_782_400, 5_000), "2000-02-29T00:00:00.000005Z");
    assert_eq!(
        at(1_790_000_000, 123_456_000),
        "2026-09-21T14:13:20.123456Z"
    );
}

#[test]
fn the_applier_follows_rfc_6902() {
    let doc = json!({"a": [1, 2, 3], "b": {"c": "x"}, "m~n": 1, "a/b": 2});
    let ops = json!([
        {"op": "add", "path": "/a/0", "value": 0},
        {"op": "remove", "path": "/a/3"},
        {"op": "replace", "path": "/b/c", "value": "y"},
        {"op": "move", "from": "/m~0n", "path": "/moved"},
        {"op": "copy", "from": "/a~1b", "path": "/a/-"},
        {"op": "test", "path": "/a", "value": [0, 1, 2, 2]},
    ]);
    assert_eq!(
        apply_ops(&doc, &ops),
        json!({"a": [0, 1, 2, 2], "b": {"c": "y"}, "moved": 1, "a/b": 2})
    );
}

/// Runs `story(Backend)` against SQLite and Postgres, for tests that start their own
/// server ([`OwnServer`]) rather than the harness's:
/// `per_backend!(rollback_keeps_history, rollback_story);`
#[allow(unused_macros)]
macro_rules! per_backend {
    ($name:ident, $story:ident) => {
        mod $name {
            #[tokio::test]
            async fn sqlite() {
                super::$story(agentry_e2e::Backend::Sqlite).await;
            }

            #[tokio::test]
            async fn postgres() {
                super::$story(agentry_e2e::Backend::Postgres).await;
            }
        }
    };
}
#[allow(unused_imports)]
pub(crate) use per_backend;
