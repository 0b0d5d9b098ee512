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

use agentry_core::trace::InTrace;
use agentry_proto::RequestId;
use futures::future::BoxFuture;
use tonic::body::Body;
use tracing::Level;

use crate::{
    auth::Principal,
    layer::{StateLayer, WithState},
    telemetry::{Caller, ServerSpan},
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
        if !observer.metrics && observer.spans.is_none() && !logged {
            return Box::pin(inner.call(request));
        }
        // Only the log line uses who called and the request's id.
        let info = logged.then(|| {
            let info = Arc::new(CallInfo::default());
            request.extensions_mut().insert(info.clone());
            info
        });
        let headers = request.headers();
        // The caller's trace context matters only to a span or a log line.
        let wanted = observer.spans.is_some() || logged;
        let caller = headers
            .get(&TRACEPARENT)
            .filter(|_| wanted)
            .and_then(|value| {
                let state = headers.get(&TRACESTATE).and_then(|v| v.to_str().ok());
                Caller::parse(value.to_str().ok()?, state)
            });
        let (span, caller_trace_id) = start_span(observer, method, caller, logged);
        let trace = span.as_ref().map(ServerSpan::parent);
        let call = Call::new(observer.clone(), index, info, span, caller_trace_id);
        let response = inner.call(request);
        match trace {
            // The handler runs in the span's trace: the store's spans are its children.
            Some(trace) => {
                Box::pin(async move { Ok(call.respond(InTrace::new(response, trace).await?)) })
            }
            None => Box::pin(async move { Ok(call.respond(response.await?)) }),
        }
    }
}

static TRACEPARENT: http::HeaderName = http::HeaderName::from_static("traceparent");
static TRACESTATE: http::HeaderName = http::HeaderName::from_static("tracestate");

/// The call's server span, when the sampler gives it one (named `package.Service/Method`,
/// with the RPC semantic-convention attributes, continuing the caller's W3C trace
/// context); else the caller's trace id, for the log line (`logged`).
fn start_span(
    observer: &Observer,
    method: &Method,
    caller: Option<Caller>,
    logged: bool,
) -> (Option<ServerSpan>, Option<String>) {
    if observer.spans.is_some() && crate::telemetry::sampled(caller.as_ref()) {
        let span = ServerSpan::start(method.span, caller);
        return (Some(span), None);
    }
    (None, caller.filter(|_| logged).map(|c| c.trace_id()))
}
