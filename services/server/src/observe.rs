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

mod call;
mod methods;

use std::{
    sync::{Arc, OnceLock},
    task::{Context, Poll},
};

use agentry_proto::RequestId;
use futures::future::BoxFuture;
use opentelemetry::{
    Context as OtelContext,
    trace::{FutureExt as _, SpanBuilder, SpanKind, TraceContextExt as _},
};
use opentelemetry_sdk::trace::SdkTracer;
use tonic::body::Body;
use tracing::Level;

use crate::{
    auth::Principal,
    layer::{StateLayer, WithState},
};
use call::Call;
pub(crate) use call::percent_decode;
use methods::Method;
pub use methods::{Observer, STREAM_KINDS};

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

/// Tower layer that times, counts and logs every call, in its span.
pub type ObserveLayer = StateLayer<Observer>;

pub type ObserveService<S> = WithState<S, Observer>;

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
        self.inner().poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        let mut inner = self.take_ready();
        let observer = &self.state;
        let index = observer.find(request.uri().path());
        let method = &observer.methods[index];
        let logged = if method.api {
            tracing::enabled!(target: "agentry_server::rpc", Level::INFO)
        } else {
            tracing::enabled!(target: "agentry_server::rpc", Level::DEBUG)
        };
        if !observer.metrics && observer.tracer.is_none() && !logged {
            return Box::pin(inner.call(request));
        }
        // Only the log line uses who called and the request's id.
        let info = logged.then(|| {
            let info = Arc::new(CallInfo::default());
            request.extensions_mut().insert(info.clone());
            info
        });
        let headers = request.headers();
        let has_traceparent = headers.contains_key(&TRACEPARENT);
        let trace = observer
            .tracer
            .as_ref()
            .filter(|_| crate::telemetry::traced(has_traceparent))
            .map(|tracer| server_span(tracer, method, has_traceparent.then_some(headers)));
        let caller_trace_id = if logged && trace.is_none() && has_traceparent {
            caller_trace_id(headers)
        } else {
            None
        };
        let call = Call::new(
            observer.clone(),
            index,
            info,
            trace.clone(),
            caller_trace_id,
        );
        let response = inner.call(request);
        match trace {
            // The handler runs in the span's context: the store's spans are its children.
            Some(trace) => {
                Box::pin(async move { Ok(call.respond(response.with_context(trace).await?)) })
            }
            None => Box::pin(async move { Ok(call.respond(response.await?)) }),
        }
    }
}

static TRACEPARENT: http::HeaderName = http::HeaderName::from_static("traceparent");

/// The server span, in a context of its own: named `package.Service/Method`, with the RPC
/// semantic-convention attributes, continuing the caller's W3C trace context (from
/// `headers`, given when they carry a `traceparent`).
fn server_span(
    tracer: &SdkTracer,
    method: &Method,
    headers: Option<&http::HeaderMap>,
) -> OtelContext {
    let parent = match headers {
        Some(headers) => opentelemetry::global::get_text_map_propagator(|propagator| {
            propagator.extract(&HeaderExtractor(headers))
        }),
        None => OtelContext::new(),
    };
    // Room for the status code the call ends with.
    let mut attributes = Vec::with_capacity(method.span_attributes.len() + 1);
    attributes.extend_from_slice(&method.span_attributes);
    let span = SpanBuilder::from_name(method.name())
        .with_kind(SpanKind::Server)
        .with_attributes(attributes)
        .start_with_context(tracer, &parent);
    parent.with_span(span)
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
    let value = headers.get(&TRACEPARENT)?.to_str().ok()?;
    let mut parts = value.split('-');
    let (_version, trace) = (parts.next()?, parts.next()?);
    (trace.len() == 32 && trace.bytes().all(|b| b.is_ascii_hexdigit())).then(|| trace.into())
}

#[cfg(test)]
mod tests {
    use super::*;

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
