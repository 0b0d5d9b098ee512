//! Traces over OTLP/gRPC, received by an in-process collector: one server span per RPC
//! named `agentry.v1.<Service>/<Method>` with the RPC semantic-convention attributes,
//! an error status on failure, database transaction and statement spans as children, a
//! caller's `traceparent` continued, one span per stream, the service name and the
//! configured export headers; and a ratio sampler deciding before any span is built.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use agentry_e2e::*;
use agentry_server::config::LogFormat;
use opentelemetry_proto::tonic::{
    collector::trace::v1::{
        ExportTraceServiceRequest, ExportTraceServiceResponse,
        trace_service_server::{TraceService, TraceServiceServer},
    },
    common::v1::{AnyValue, KeyValue, any_value::Value},
    trace::v1::{Span, span::SpanKind, status::StatusCode},
};
use pb::{
    context_service_client::ContextServiceClient, registry_service_client::RegistryServiceClient,
};
use tonic::{Request, Status};

/// What the collector received: spans with their resource's service name, and the
/// export requests' `x-agentry-test` header values.
#[derive(Default, Clone)]
struct Collector {
    spans: Arc<Mutex<Vec<(String, Span)>>>,
    headers: Arc<Mutex<Vec<String>>>,
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, Status> {
        if let Some(value) = request.metadata().get("x-agentry-test") {
            self.headers
                .lock()
                .unwrap()
                .push(value.to_str().unwrap_or_default().to_owned());
        }
        for resource_spans in request.into_inner().resource_spans {
            let service = resource_spans
                .resource
                .as_ref()
                .and_then(|r| string_attribute(&r.attributes, "service.name"))
                .unwrap_or_default();
            for scope in resource_spans.scope_spans {
                for span in scope.spans {
                    self.spans.lock().unwrap().push((service.clone(), span));
                }
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

fn attribute<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a Value> {
    attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v: &AnyValue| v.value.as_ref())
}

fn string_attribute(attributes: &[KeyValue], key: &str) -> Option<String> {
    match attribute(attributes, key)? {
        Value::StringValue(s) => Some(s.clone()),
        _ => None,
    }
}

fn int_attribute(attributes: &[KeyValue], key: &str) -> Option<i64> {
    match attribute(attributes, key)? {
        Value::IntValue(n) => Some(*n),
        _ => None,
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

const CREATE_WORKSPACE: &str = "agentry.v1.RegistryService/CreateWorkspace";
const CALLER_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rpcs_export_server_spans_with_database_children() {
    let (collector, collector_addr) = start_collector().await;
    let env: HashMap<&str, String> = HashMap::from([
        (
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            format!("http://{collector_addr}"),
        ),
        (
            "OTEL_EXPORTER_OTLP_HEADERS",
            "x-agentry-test=yes%20please".into(),
        ),
        ("RUST_LOG", "warn".into()),
    ]);
    let telemetry =
        agentry_server::telemetry::init_with(LogFormat::Text, |name| env.get(name).cloned())
            .expect("telemetry starts");
    assert!(agentry_server::telemetry::tracing_enabled());

    let app = spawn_app(Backend::Sqlite).await;
    let mut traced = in_the_callers_trace(&app);
    traced
        .create_workspace(req::create_workspace("acme", pb::Workspace::default()))
        .await
        .must();
    let missing = app
        .root()
        .await
        .get_workspace(req::get_workspace("workspaces/nope"))
        .await;
    assert!(missing.is_err());

    // A stream: one span for its whole life.
    let mut root = app.root().await;
    root.create_project(req::create_project("workspaces/acme", "web"))
        .await
        .must();
    let mut contexts =
        ContextServiceClient::with_interceptor(app.channel(), Bearer::new(&app.root_key));
    let context = contexts
        .create_context(pb::CreateContextRequest {
            parent: "workspaces/acme/projects/web".into(),
            context_id: "memory".into(),
            context: Some(pb::Context::default()),
            data: Some(to_value(json!({"turn": 1}))),
            ..Default::default()
        })
        .await
        .must();
    let mut watch = contexts
        .watch_context(pb::WatchContextRequest {
            name: context.name.clone(),
            after_version: 0,
            ..Default::default()
        })
        .await
        .must();
    watch.message().await.unwrap().expect("version 1");
    drop(watch);
    app.shutdown().await;

    let spans = exported_until(
        telemetry,
        &collector,
        "agentry.v1.ContextService/WatchContext",
    )
    .await
    .expect("the spans reach the collector");

    let named = |name: &str| -> Vec<&Span> {
        spans
            .iter()
            .map(|(_, s)| s)
            .filter(|s| s.name == name)
            .collect()
    };
    assert!(spans.iter().all(|(service, _)| service == "agentry"));
    // Background work (the reaper's statements, start-up) leaves no span: every database
    // span is named after what it ran, within a call.
    assert!(
        spans
            .iter()
            .all(|(_, s)| s.name != "db.statement" && s.name != "db.transaction"),
        "spans of work outside any call were exported"
    );
    assert!(
        collector
            .headers
            .lock()
            .unwrap()
            .iter()
            .any(|h| h == "yes please")
    );

    // The server span of CreateWorkspace continues the caller's trace.
    let create = named("agentry.v1.RegistryService/CreateWorkspace");
    assert_eq!(create.len(), 1, "one span per call");
    let create = create[0];
    assert_eq!(create.kind, SpanKind::Server as i32);
    assert_eq!(hex(&create.trace_id), CALLER_TRACE);
    assert_eq!(hex(&create.parent_span_id), CALLER_SPAN);
    let attrs = &create.attributes;
    assert_eq!(
        string_attribute(attrs, "rpc.system").as_deref(),
        Some("grpc")
    );
    assert_eq!(
        string_attribute(attrs, "rpc.service").as_deref(),
        Some("agentry.v1.RegistryService")
    );
    assert_eq!(
        string_attribute(attrs, "rpc.method").as_deref(),
        Some("CreateWorkspace")
    );
    assert_eq!(int_attribute(attrs, "rpc.grpc.status_code"), Some(0));
    assert_ne!(
        create.status.as_ref().map(|s| s.code),
        Some(StatusCode::Error as i32)
    );

    // Its transaction is a child, and the transaction's statements are its children.
    let transaction = spans
        .iter()
        .map(|(_, s)| s)
        .find(|s| s.parent_span_id == create.span_id && s.name == "transaction CreateWorkspace")
        .unwrap_or_else(|| {
            let all: Vec<_> = spans
                .iter()
                .map(|(_, s)| (&s.name, hex(&s.span_id), hex(&s.parent_span_id)))
                .collect();
            panic!("the transaction span is a child of the RPC span: {all:#?}")
        });
    assert_eq!(transaction.trace_id, create.trace_id);
    assert_eq!(
        string_attribute(&transaction.attributes, "db.system").as_deref(),
        Some("sqlite")
    );
    let statements: Vec<&Span> = spans
        .iter()
        .map(|(_, s)| s)
        .filter(|s| s.parent_span_id == transaction.span_id)
        .collect();
    assert!(
        statements.iter().any(|s| s.name == "INSERT workspaces"),
        "statements: {:?}",
        statements.iter().map(|s| &s.name).collect::<Vec<_>>()
    );
    for statement in &statements {
        let summary = string_attribute(&statement.attributes, "db.query.summary").unwrap();
        assert!(!summary.contains("acme"), "no value in {summary}");
    }
    // No value of the request appears in any span attribute.
    for (_, span) in &spans {
        for kv in &span.attributes {
            if let Some(Value::StringValue(s)) = kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                assert!(!s.contains(&app_root_key_marker()), "{s}");
            }
        }
    }

    // A failure: an error status and the code.
    let failed = named("agentry.v1.RegistryService/GetWorkspace");
    assert_eq!(failed.len(), 1);
    assert_eq!(
        failed[0].status.as_ref().map(|s| s.code),
        Some(StatusCode::Error as i32)
    );
    assert_eq!(
        int_attribute(&failed[0].attributes, "rpc.grpc.status_code"),
        Some(5)
    );
    assert_ne!(
        hex(&failed[0].trace_id),
        CALLER_TRACE,
        "a new trace without traceparent"
    );

    // The stream: one span, which ended when the stream did.
    let watches = named("agentry.v1.ContextService/WatchContext");
    assert_eq!(watches.len(), 1);
    assert!(watches[0].end_time_unix_nano >= watches[0].start_time_unix_nano);
}

/// A registry client that sends the root key and a caller's sampled `traceparent`.
fn in_the_callers_trace(
    app: &TestApp,
) -> RegistryServiceClient<
    tonic::service::interceptor::InterceptedService<
        tonic::transport::Channel,
        impl tonic::service::Interceptor + use<>,
    >,
> {
    let root_key = app.root_key.clone();
    RegistryServiceClient::with_interceptor(app.channel(), move |mut r: Request<()>| {
        r.metadata_mut().insert(
            "authorization",
            format!("Bearer {root_key}").parse().unwrap(),
        );
        r.metadata_mut().insert(
            "traceparent",
            format!("00-{CALLER_TRACE}-{CALLER_SPAN}-01")
                .parse()
                .unwrap(),
        );
        Ok(r)
    })
}

/// Flushes the exporter until a span named `name` has reached the collector (20 s at
/// most); then every span received.
async fn exported_until(
    telemetry: agentry_server::telemetry::Telemetry,
    collector: &Collector,
    name: &'static str,
) -> Option<Vec<(String, Span)>> {
    let telemetry = Arc::new(telemetry);
    eventually(Duration::from_secs(20), || {
        let telemetry = telemetry.clone();
        let collector = collector.clone();
        async move {
            tokio::task::spawn_blocking(move || telemetry.flush())
                .await
                .unwrap();
            let spans = collector.spans.lock().unwrap().clone();
            spans.iter().any(|(_, s)| s.name == name).then_some(spans)
        }
    })
    .await
}

/// A collector on a port of its own.
async fn start_collector() -> (Collector, std::net::SocketAddr) {
    start_collector_with(tonic::transport::Server::builder()).await
}

async fn start_collector_with(
    mut server: tonic::transport::Server,
) -> (Collector, std::net::SocketAddr) {
    let collector = Collector::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        server
            .add_service(TraceServiceServer::new(collector.clone()))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    (collector, addr)
}

/// An `https://` endpoint: spans reach a collector that requires mutual TLS, verified
/// with `OTEL_EXPORTER_OTLP_CERTIFICATE` and presenting the client certificate of
/// `OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE` and `_CLIENT_KEY`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_reach_a_collector_over_mutual_tls() {
    use tonic::transport::{Certificate, Identity, ServerTlsConfig};
    let pki = agentry_e2e::pki::Pki::new("otlp");
    let (server, client) = (pki.server("collector"), pki.client("exporter"));
    let tls = ServerTlsConfig::new()
        .identity(Identity::from_pem(server.cert_pem(), server.key_pem()))
        .client_ca_root(Certificate::from_pem(pki.ca_pem()));
    let builder = tonic::transport::Server::builder()
        .tls_config(tls)
        .expect("collector TLS");
    let (collector, collector_addr) = start_collector_with(builder).await;
    let path = |p: &std::path::Path| p.display().to_string();
    let env: HashMap<&str, String> = HashMap::from([
        (
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            format!("https://localhost:{}", collector_addr.port()),
        ),
        ("OTEL_EXPORTER_OTLP_CERTIFICATE", path(&pki.ca_file())),
        ("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE", path(&client.cert)),
        ("OTEL_EXPORTER_OTLP_CLIENT_KEY", path(&client.key)),
        ("RUST_LOG", "warn".into()),
    ]);
    let telemetry =
        agentry_server::telemetry::init_with(LogFormat::Text, |name| env.get(name).cloned())
            .expect("telemetry starts");
    let app = spawn_app(Backend::Sqlite).await;
    app.root()
        .await
        .create_workspace(req::create_workspace("acme", pb::Workspace::default()))
        .await
        .must();
    app.shutdown().await;
    let spans = exported_until(telemetry, &collector, CREATE_WORKSPACE).await;
    assert!(spans.is_some(), "the span reaches the collector over TLS");
}

/// `parentbased_traceidratio` at 0: calls that start a trace get no span and neither do
/// their statements; a caller's sampled trace is still followed, with its database
/// children.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ratio_sampler_builds_no_span_for_calls_it_leaves_out() {
    let (collector, collector_addr) = start_collector().await;
    let env: HashMap<&str, String> = HashMap::from([
        (
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            format!("http://{collector_addr}"),
        ),
        ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio".into()),
        ("OTEL_TRACES_SAMPLER_ARG", "0".into()),
        ("RUST_LOG", "warn".into()),
    ]);
    let telemetry =
        agentry_server::telemetry::init_with(LogFormat::Text, |name| env.get(name).cloned())
            .expect("telemetry starts");
    let app = spawn_app(Backend::Sqlite).await;
    let mut root = app.root().await;
    for id in ["one", "two", "three"] {
        root.create_workspace(req::create_workspace(id, pb::Workspace::default()))
            .await
            .must();
    }
    let mut followed = in_the_callers_trace(&app);
    followed
        .create_workspace(req::create_workspace("four", pb::Workspace::default()))
        .await
        .must();
    app.shutdown().await;

    let spans = exported_until(telemetry, &collector, CREATE_WORKSPACE)
        .await
        .expect("the followed call's spans reach the collector");
    let spans: Vec<Span> = spans.into_iter().map(|(_, s)| s).collect();
    let calls: Vec<&Span> = spans
        .iter()
        .filter(|s| s.kind == SpanKind::Server as i32)
        .collect();
    assert_eq!(
        calls.len(),
        1,
        "only the followed call: {:?}",
        names(&spans)
    );
    assert_eq!(hex(&calls[0].trace_id), CALLER_TRACE);
    assert!(
        spans.iter().all(|s| hex(&s.trace_id) == CALLER_TRACE),
        "no span of an unsampled call, database spans included: {:?}",
        names(&spans)
    );
    assert!(
        spans.iter().any(|s| s.kind == SpanKind::Client as i32),
        "the followed call's database spans: {:?}",
        names(&spans)
    );
}

fn names(spans: &[Span]) -> Vec<&str> {
    spans.iter().map(|s| s.name.as_str()).collect()
}

/// The harness's root keys all start with this.
fn app_root_key_marker() -> String {
    "agk_root_".into()
}
