//! What every call leaves behind: one server span, the RPC metrics and one log line.
//!
//! [`ObserveLayer`] sits in front of every service, outside the auth layer. A gRPC call
//! ends with its `grpc-status`: in the response headers when the call failed before
//! answering (a trailers-only response), otherwise in the trailers after the last
//! message. So the layer wraps the response body and finishes the call when the
//! trailers pass by, or when the body is dropped before them (the client went away:
//! CANCELLED). A stream is one call that lasts as long as its body: one span, one log
//! line, and `agentry_streams_open` while it is open.
//!
//! Methods are known in advance from the descriptor sets the server serves, so metric
//! handles are registered once per method and code and a call only bumps atomics; a
//! path that names no method is counted under `unknown` (a client cannot create label
//! values). With metrics and traces off and the log line filtered out, the layer only
//! looks the method up and passes the call through.

use std::{
    pin::Pin,
    sync::{Arc, OnceLock},
    task::{Context, Poll},
    time::Instant,
};

use agentry_proto::RequestId;
use futures::future::BoxFuture;
use http_body::{Frame, SizeHint};
use metrics::{Counter, Gauge, Histogram};
use prost::{Message as _, bytes::Bytes};
use tonic::{Code, body::Body};
use tracing::{Instrument as _, Level, Span};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use crate::auth::Principal;

/// Who made a call and which request it was, filled in while the call runs: the auth
/// layer sets the principal, the handler the request's `request_id`.
#[derive(Default)]
pub struct CallInfo {
    principal: OnceLock<(String, String)>,
    request_id: OnceLock<String>,
}

impl CallInfo {
    pub fn set_principal(&self, principal: &Principal) {
        // `workspaces/{w}/apiKeys/{id}`: the key's id, never its secret.
        let key = principal
            .name
            .rsplit_once('/')
            .map_or(principal.name.as_str(), |(_, id)| id);
        let workspace = principal.workspace.clone().unwrap_or_default();
        let _ = self.principal.set((workspace, key.to_owned()));
    }
}

/// Notes the request's `request_id` for the call's log line (the `rpc!` handlers call
/// this).
pub fn note_request<T: RequestId>(request: &tonic::Request<T>) {
    let id = request.get_ref().request_id();
    if !id.is_empty()
        && let Some(info) = request.extensions().get::<Arc<CallInfo>>()
    {
        let _ = info.request_id.set(id.to_owned());
    }
}

/// Canonical code names, indexed by code number: the `code` label and log field.
const CODE_NAMES: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

/// The methods whose response is a stream of `agentry_streams_open{kind}`.
pub const STREAM_KINDS: &[(&str, &str)] = &[
    ("WatchContext", "watch_context"),
    ("StreamRunEvents", "run_events"),
];

/// One method the server serves, with its metric handles.
struct Method {
    path: String,
    service: &'static str,
    method: &'static str,
    /// `agentry.*`: logged at info; health and reflection at debug.
    api: bool,
    stream: Option<Gauge>,
    /// By code number; registered on first use, so that only codes that happened and
    /// methods that were called are listed.
    requests: [OnceLock<Counter>; 17],
    duration: OnceLock<Histogram>,
}

impl Method {
    fn requests(&self, code: Code) -> &Counter {
        let code = code as usize % CODE_NAMES.len();
        self.requests[code].get_or_init(|| {
            metrics::counter!(
                "agentry_rpc_requests_total",
                "service" => self.service, "method" => self.method, "code" => CODE_NAMES[code]
            )
        })
    }

    fn duration(&self) -> &Histogram {
        self.duration.get_or_init(|| {
            metrics::histogram!(
                "agentry_rpc_duration_seconds",
                "service" => self.service, "method" => self.method
            )
        })
    }
}

/// Observation settings and the method table, shared by every call.
pub struct Observer {
    /// Sorted by path.
    methods: Vec<Method>,
    /// Where calls of paths that name no method are counted.
    unknown: usize,
    metrics: bool,
    tracing: bool,
}

fn leak(s: &str) -> &'static str {
    Box::leak(s.to_owned().into_boxed_str())
}

impl Observer {
    /// The methods of every served descriptor set. Metric handles bind to the recorder
    /// installed now, so this runs after [`crate::metrics::install`].
    pub fn new(metrics: bool, tracing: bool) -> Self {
        let sets = [
            agentry_proto::FILE_DESCRIPTOR_SET,
            tonic_health::pb::FILE_DESCRIPTOR_SET,
            tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
            tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
        ];
        let mut names = Vec::new();
        for set in sets {
            let set = prost_types::FileDescriptorSet::decode(set).expect("valid descriptors");
            for file in set.file {
                for service in &file.service {
                    let full = format!("{}.{}", file.package(), service.name());
                    for method in &service.method {
                        names.push((full.clone(), method.name().to_owned()));
                    }
                }
            }
        }
        names.push(("unknown".into(), "unknown".into()));
        let mut methods: Vec<Method> = names
            .into_iter()
            .map(|(service, method)| {
                let (service, method) = (leak(&service), leak(&method));
                let stream = STREAM_KINDS
                    .iter()
                    .find(|(m, _)| *m == method && service.starts_with("agentry."))
                    .map(|(_, kind)| metrics::gauge!("agentry_streams_open", "kind" => *kind));
                Method {
                    path: format!("/{service}/{method}"),
                    api: service.starts_with("agentry."),
                    stream,
                    requests: Default::default(),
                    duration: OnceLock::new(),
                    service,
                    method,
                }
            })
            .collect();
        methods.sort_by(|a, b| a.path.cmp(&b.path));
        methods.dedup_by(|a, b| a.path == b.path);
        let unknown = methods
            .iter()
            .position(|m| m.path == "/unknown/unknown")
            .expect("the unknown method is listed");
        Self {
            methods,
            unknown,
            metrics,
            tracing,
        }
    }

    fn find(&self, path: &str) -> usize {
        self.methods
            .binary_search_by(|m| m.path.as_str().cmp(path))
            .unwrap_or(self.unknown)
    }
}

#[derive(Clone)]
pub struct ObserveLayer {
    observer: Arc<Observer>,
}

impl ObserveLayer {
    pub fn new(observer: Arc<Observer>) -> Self {
        Self { observer }
    }
}

impl<S> tower::Layer<S> for ObserveLayer {
    type Service = ObserveService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ObserveService {
            inner,
            observer: self.observer.clone(),
        }
    }
}

#[derive(Clone)]
pub struct ObserveService<S> {
    inner: S,
    observer: Arc<Observer>,
}

impl<S, B> tower::Service<http::Request<B>> for ObserveService<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let observer = self.observer.clone();
        let index = observer.find(request.uri().path());
        let method = &observer.methods[index];
        let logged = if method.api {
            tracing::enabled!(target: "agentry_server::rpc", Level::INFO)
        } else {
            tracing::enabled!(target: "agentry_server::rpc", Level::DEBUG)
        };
        if !observer.metrics && !observer.tracing && !logged {
            return Box::pin(inner.call(request));
        }
        let info = Arc::new(CallInfo::default());
        request.extensions_mut().insert(info.clone());
        let span = if observer.tracing
            && crate::telemetry::traced(request.headers().contains_key("traceparent"))
        {
            server_span(method, request.headers())
        } else {
            Span::none()
        };
        let caller_trace_id = if span.is_disabled() {
            caller_trace_id(request.headers())
        } else {
            None
        };
        let mut call = Call {
            observer: observer.clone(),
            index,
            info,
            span: span.clone(),
            caller_trace_id,
            started: Instant::now(),
            logged,
            stream_open: false,
            done: false,
        };
        let response = inner.call(request).instrument(span);
        Box::pin(async move {
            let response = response.await?;
            if let Some((code, message)) = grpc_status(response.headers()) {
                call.finish(code, &message);
                return Ok(response);
            }
            call.open_stream();
            Ok(response.map(|body| {
                Body::new(ObservedBody {
                    body,
                    call: Some(call),
                })
            }))
        })
    }
}

/// The server span: named `package.Service/Method`, with the RPC semantic-convention
/// attributes, continuing the caller's W3C trace context.
fn server_span(method: &Method, headers: &http::HeaderMap) -> Span {
    let span = tracing::debug_span!(
        target: "agentry_server::rpc",
        "rpc",
        otel.name = &method.path[1..],
        otel.kind = "server",
        rpc.system = "grpc",
        rpc.service = method.service,
        rpc.method = method.method,
    );
    if headers.contains_key("traceparent") {
        let parent = opentelemetry::global::get_text_map_propagator(|propagator| {
            propagator.extract(&HeaderExtractor(headers))
        });
        let _ = span.set_parent(parent);
    }
    span
}

struct HeaderExtractor<'a>(&'a http::HeaderMap);

impl opentelemetry::propagation::Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

/// The trace id of a W3C `traceparent` header (`00-{trace}-{span}-{flags}`), for the log
/// line when spans are not recorded.
fn caller_trace_id(headers: &http::HeaderMap) -> Option<String> {
    let value = headers.get("traceparent")?.to_str().ok()?;
    let mut parts = value.split('-');
    let (_version, trace) = (parts.next()?, parts.next()?);
    (trace.len() == 32 && trace.bytes().all(|b| b.is_ascii_hexdigit())).then(|| trace.into())
}

fn grpc_status(headers: &http::HeaderMap) -> Option<(Code, String)> {
    let code = headers
        .get("grpc-status")?
        .to_str()
        .ok()?
        .parse::<i32>()
        .ok()?;
    let message = headers
        .get("grpc-message")
        .and_then(|v| v.to_str().ok())
        .map(percent_decode)
        .unwrap_or_default();
    Some((Code::from_i32(code), message))
}

/// `grpc-message` is percent-encoded.
pub(crate) fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Ok(b) = u8::from_str_radix(&s[i + 1..i + 3], 16)
        {
            out.push(b);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A call in flight; finished once, by its status or by being dropped.
struct Call {
    observer: Arc<Observer>,
    index: usize,
    info: Arc<CallInfo>,
    span: Span,
    caller_trace_id: Option<String>,
    started: Instant,
    logged: bool,
    stream_open: bool,
    done: bool,
}

impl Call {
    fn open_stream(&mut self) {
        if self.observer.metrics
            && let Some(gauge) = &self.observer.methods[self.index].stream
        {
            gauge.increment(1.0);
            self.stream_open = true;
        }
    }

    fn finish(&mut self, code: Code, message: &str) {
        if std::mem::replace(&mut self.done, true) {
            return;
        }
        let elapsed = self.started.elapsed();
        let method = &self.observer.methods[self.index];
        let code_name = CODE_NAMES.get(code as usize).copied().unwrap_or("UNKNOWN");
        if self.observer.metrics {
            method.requests(code).increment(1);
            method.duration().record(elapsed.as_secs_f64());
            if std::mem::take(&mut self.stream_open)
                && let Some(gauge) = &method.stream
            {
                gauge.decrement(1.0);
            }
        }
        if !self.span.is_disabled() {
            self.span.set_attribute("rpc.grpc.status_code", code as i64);
            if code != Code::Ok {
                self.span
                    .set_status(opentelemetry::trace::Status::error(format!(
                        "{code_name}: {message}"
                    )));
            }
        }
        if !self.logged {
            return;
        }
        let trace_id = if self.span.is_disabled() {
            self.caller_trace_id.clone().unwrap_or_default()
        } else {
            use opentelemetry::trace::TraceContextExt as _;
            self.span
                .context()
                .span()
                .span_context()
                .trace_id()
                .to_string()
        };
        let (workspace, key) = self
            .info
            .principal
            .get()
            .map(|(w, k)| (w.as_str(), k.as_str()))
            .unwrap_or_default();
        let request_id = self.info.request_id.get().map_or("", String::as_str);
        let duration_ms = elapsed.as_micros() as f64 / 1000.0;
        macro_rules! line {
            ($level:expr) => {
                tracing::event!(
                    target: "agentry_server::rpc",
                    $level,
                    method = %&method.path[1..],
                    code = %code_name,
                    duration_ms,
                    workspace = %workspace,
                    key = %key,
                    request_id = %request_id,
                    trace_id = %trace_id,
                    "rpc"
                )
            };
        }
        if method.api {
            line!(Level::INFO);
        } else {
            line!(Level::DEBUG);
        }
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        // Dropped before its status: the client cancelled or went away.
        self.finish(Code::Cancelled, "the client went away");
    }
}

/// A response body that finishes its call when the trailers pass by.
struct ObservedBody {
    body: Body,
    call: Option<Call>,
}

impl http_body::Body for ObservedBody {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.body).poll_frame(cx);
        match &polled {
            Poll::Pending => {}
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(trailers) = frame.trailers_ref()
                    && let Some(mut call) = this.call.take()
                {
                    let (code, message) =
                        grpc_status(trailers).unwrap_or((Code::Unknown, String::new()));
                    call.finish(code, &message);
                }
            }
            Poll::Ready(Some(Err(status))) => {
                if let Some(mut call) = this.call.take() {
                    call.finish(status.code(), status.message());
                }
            }
            Poll::Ready(None) => {
                if let Some(mut call) = this.call.take() {
                    call.finish(Code::Unknown, "the response ended without a status");
                }
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_server_stream_of_the_api_has_a_kind() {
        let set = prost_types::FileDescriptorSet::decode(agentry_proto::FILE_DESCRIPTOR_SET)
            .expect("descriptors");
        let mut streams: Vec<String> = set
            .file
            .iter()
            .flat_map(|f| &f.service)
            .flat_map(|s| &s.method)
            .filter(|m| m.server_streaming())
            .map(|m| m.name().to_owned())
            .collect();
        streams.sort();
        let mut kinds: Vec<String> = STREAM_KINDS.iter().map(|(m, _)| m.to_string()).collect();
        kinds.sort();
        assert_eq!(streams, kinds);
    }

    #[test]
    fn every_served_method_is_found_and_other_paths_are_unknown() {
        let observer = Observer::new(false, false);
        assert!(observer.methods.len() > 40);
        for method in &observer.methods {
            assert_eq!(
                observer.methods[observer.find(&method.path)].path,
                method.path
            );
        }
        for path in ["/agentry.v1.Nope/Nope", "/", "/zzz/zzz", "/a/b"] {
            assert_eq!(observer.methods[observer.find(path)].method, "unknown");
        }
        let read = observer.find("/agentry.v1.ContextService/ReadContext");
        assert_eq!(observer.methods[read].method, "ReadContext");
        assert_eq!(observer.methods[read].service, "agentry.v1.ContextService");
    }

    #[test]
    fn grpc_messages_are_percent_decoded() {
        assert_eq!(percent_decode("a%20b%25"), "a b%");
        assert_eq!(percent_decode("100%"), "100%");
    }

    #[test]
    fn traceparent_gives_the_trace_id() {
        let mut headers = http::HeaderMap::new();
        headers.insert(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
                .parse()
                .unwrap(),
        );
        assert_eq!(
            caller_trace_id(&headers).as_deref(),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
    }
}
