//! HTTP/JSON errors: Connect's JSON error with the HTTP status of its code and the
//! details decoded, for the same refusals gRPC gives (auth first, invalid arguments with
//! their field violations, not found, a message or body over the size limit), and calls
//! counted in the same metrics as gRPC calls.

use std::net::SocketAddr;

use agentry_e2e::{http::*, process::http_get, *};
use prost::Message as _;
use serde_json::Value;

const REGISTRY: &str = "agentry.v1.RegistryService";
const EXECUTION: &str = "agentry.v1.ExecutionService";

fn m(service: &str, method: &str) -> String {
    format!("{service}/{method}")
}

/// The `debug` JSON of the detail of `type` in a Connect error.
fn detail<'a>(error: &'a Value, r#type: &str) -> &'a Value {
    error["details"]
        .as_array()
        .and_then(|d| d.iter().find(|d| d["type"] == r#type))
        .map(|d| &d["debug"])
        .unwrap_or_else(|| panic!("no {type} detail in {error}"))
}

fn with_small_limit_and_metrics(config: &mut agentry_server::config::Config) {
    config.max_message_bytes = 64 * 1024;
    config.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
}

#[tokio::test]
async fn errors_are_connect_json_with_decoded_details_sqlite() {
    errors_are_connect_json_with_decoded_details(Backend::Sqlite).await;
}

#[tokio::test]
async fn errors_are_connect_json_with_decoded_details_postgres() {
    errors_are_connect_json_with_decoded_details(Backend::Postgres).await;
}

async fn errors_are_connect_json_with_decoded_details(backend: Backend) {
    let app = spawn_app_with(backend, with_small_limit_and_metrics).await;
    let (addr, root) = (app.addr, app.root_key.clone());
    refusals(addr, &root).await;
    size_limits(addr, &root).await;
    other_paths(addr, &root).await;

    // Counted like gRPC calls.
    let metrics = http_get(app.metrics_addr.unwrap(), "/metrics").await.1;
    for (method, code) in [
        ("GetWorkspace", "UNAUTHENTICATED"),
        ("GetWorkspace", "NOT_FOUND"),
        ("CreateWorkspace", "RESOURCE_EXHAUSTED"),
    ] {
        let (method, code) = (format!("method=\"{method}\""), format!("code=\"{code}\""));
        assert!(
            metrics
                .lines()
                .any(|l| l.starts_with("agentry_rpc_requests_total")
                    && l.contains(&method)
                    && l.contains(&code)),
            "no agentry_rpc_requests_total with {method} {code}"
        );
    }
    app.shutdown().await;
}

/// UNAUTHENTICATED, INVALID_ARGUMENT (the service's and the JSON's), NOT_FOUND.
async fn refusals(addr: SocketAddr, root: &str) {
    let get = m(REGISTRY, "GetWorkspace");
    let anonymous = post_json(addr, &get, "", json!({"name": "workspaces/x"})).await;
    assert_eq!(anonymous.status, 401);
    let error = anonymous.json();
    assert_eq!(error["code"], "unauthenticated");
    assert_eq!(
        detail(&error, "google.rpc.ErrorInfo")["reason"],
        "MISSING_CREDENTIALS"
    );
    // Auth comes first, as over gRPC: a bad body without a key is still UNAUTHENTICATED.
    let anonymous_garbage = post_raw(addr, &format!("/{get}"), "", "{not json").await;
    assert_eq!(anonymous_garbage.status, 401);

    let invalid = post_json(
        addr,
        &m(REGISTRY, "CreateWorkspace"),
        root,
        json!({"workspaceId": "Not An Id"}),
    )
    .await;
    assert_eq!(invalid.status, 400);
    let error = invalid.json();
    assert_eq!(error["code"], "invalid_argument");
    assert_eq!(
        detail(&error, "google.rpc.ErrorInfo")["domain"],
        ERROR_DOMAIN
    );
    let violations = &detail(&error, "google.rpc.BadRequest")["fieldViolations"];
    assert_eq!(violations[0]["field"], "workspace_id", "{error}");
    let encoded = error["details"][0]["value"]
        .as_str()
        .expect("the encoded detail");
    assert!(
        !encoded.is_empty() && !encoded.contains('='),
        "unpadded base64: {encoded}"
    );

    let misspelt = post_json(addr, &get, root, json!({"nmae": "workspaces/x"})).await;
    assert_eq!(misspelt.status, 400);
    let error = misspelt.json();
    assert_eq!(
        detail(&error, "google.rpc.ErrorInfo")["reason"],
        "MALFORMED_REQUEST"
    );
    assert!(
        error["message"].as_str().unwrap().contains("nmae"),
        "{error}"
    );
    let not_json = post_raw(addr, &format!("/{get}"), root, "{\"name\":").await;
    assert_eq!(not_json.status, 400);
    assert_eq!(not_json.json()["code"], "invalid_argument");

    let missing = post_json(addr, &get, root, json!({"name": "workspaces/nowhere"})).await;
    assert_eq!(missing.status, 404);
    let error = missing.json();
    assert_eq!(error["code"], "not_found");
    assert_eq!(
        detail(&error, "google.rpc.ErrorInfo")["metadata"]["resource"],
        "workspaces/nowhere"
    );
}

async fn size_limits(addr: SocketAddr, root: &str) {
    // A message over the limit (its JSON under twice the limit: the service refuses it),
    // and a body over twice the limit (refused before it is parsed): the same answer.
    for description_bytes in [80 * 1024, 200 * 1024] {
        let body = json!({"workspaceId": "big", "workspace": {"description": "x".repeat(description_bytes)}});
        let large = post_json(addr, &m(REGISTRY, "CreateWorkspace"), root, body).await;
        assert_eq!(large.status, 429, "{description_bytes} bytes");
        let error = large.json();
        assert_eq!(error["code"], "resource_exhausted");
        let info = detail(&error, "google.rpc.ErrorInfo");
        assert_eq!(info["reason"], "MESSAGE_TOO_LARGE");
        assert_eq!(info["metadata"]["limit_bytes"], (64 * 1024).to_string());
    }

    let stream = post_json(addr, &m(EXECUTION, "StreamRunEvents"), root, json!({})).await;
    assert_eq!(stream.status, 501);
    assert_eq!(stream.json()["code"], "unimplemented");
    let unknown = post_json(addr, &m(REGISTRY, "NoSuchMethod"), root, json!({})).await;
    assert_eq!(unknown.status, 501);
    assert_eq!(unknown.json()["code"], "unimplemented");
}

/// Streams, unknown methods, health, the binary codec.
async fn other_paths(addr: SocketAddr, root: &str) {
    let get = m(REGISTRY, "GetWorkspace");
    // Health needs no key; the binary form (application/proto) works too.
    let health = post_json(addr, "grpc.health.v1.Health/Check", "", json!({})).await;
    assert_eq!(health.json(), json!({"status": "SERVING"}));
    let request = ::http::Request::post(format!("/{get}"))
        .header("content-type", "application/proto")
        .header("authorization", format!("Bearer {root}"))
        .body(http_body_util::Full::new(
            pb::GetWorkspaceRequest {
                name: "workspaces/nowhere".into(),
            }
            .encode_to_vec()
            .into(),
        ))
        .unwrap();
    let binary = fetch(addr, request).await;
    assert_eq!(binary.status, 404);
    assert_eq!(
        binary.json()["code"],
        "not_found",
        "errors are JSON whatever the codec"
    );
}
