//! A call in flight: finished once, when its status passes by (in the response headers
//! or the trailers) or when its response is dropped before that (CANCELLED), with its
//! metrics, its span's status and its log line.

use std::{
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Instant,
};

use http_body::{Frame, SizeHint};
use prost::bytes::Bytes;
use tonic::{Code, body::Body};
use tracing::Level;

use super::{
    CallInfo,
    methods::{CODE_NAMES, Observer},
};
use crate::telemetry::ServerSpan;

static GRPC_STATUS: http::HeaderName = http::HeaderName::from_static("grpc-status");
static GRPC_MESSAGE: http::HeaderName = http::HeaderName::from_static("grpc-message");

/// The call's code and, when it failed, its message (an OK call's is not read).
pub(super) fn grpc_status(headers: &http::HeaderMap) -> Option<(Code, String)> {
    let code = match headers.get(&GRPC_STATUS)?.as_bytes() {
        b"0" => return Some((Code::Ok, String::new())),
        digits => std::str::from_utf8(digits).ok()?.parse::<i32>().ok()?,
    };
    let message = headers
        .get(&GRPC_MESSAGE)
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
pub(super) struct Call {
    observer: Arc<Observer>,
    index: usize,
    /// Set when the call's line is logged.
    info: Option<Arc<CallInfo>>,
    /// The call's span, when it has one.
    span: Option<ServerSpan>,
    caller_trace_id: Option<String>,
    started: Instant,
    stream_open: bool,
    done: bool,
}

impl Call {
    pub(super) fn new(
        observer: Arc<Observer>,
        index: usize,
        info: Option<Arc<CallInfo>>,
        span: Option<ServerSpan>,
        caller_trace_id: Option<String>,
    ) -> Self {
        Self {
            observer,
            index,
            info,
            span,
            caller_trace_id,
            started: Instant::now(),
            stream_open: false,
            done: false,
        }
    }

    /// Finishes the call when the response's headers carry its status (it failed before
    /// answering); otherwise wraps the body, whose trailers will.
    pub(super) fn respond(mut self, response: http::Response<Body>) -> http::Response<Body> {
        if let Some((code, message)) = grpc_status(response.headers()) {
            self.finish(code, &message);
            return response;
        }
        self.open_stream();
        response.map(|body| {
            Body::new(ObservedBody {
                body,
                call: Some(self),
            })
        })
    }

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
        if let (Some(span), Some(spans)) = (&self.span, &self.observer.spans) {
            let error = (code != Code::Ok).then(|| format!("{code_name}: {message}"));
            spans.push(|buf| span.end(elapsed, code as i64, error.as_deref(), buf));
        }
        let Some(info) = &self.info else { return };
        let trace_id = match &self.span {
            Some(span) => span.trace_id(),
            None => self.caller_trace_id.clone().unwrap_or_default(),
        };
        let (workspace, key) = info
            .principal
            .get()
            .map(|(w, k)| (w.as_str(), k.as_str()))
            .unwrap_or_default();
        let request_id = info.request_id.get().map_or("", String::as_str);
        let duration_ms = elapsed.as_micros() as f64 / 1000.0;
        macro_rules! line {
            ($level:expr) => {
                tracing::event!(
                    target: "agentry_server::rpc",
                    $level,
                    method = %method.name(),
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
    fn grpc_messages_are_percent_decoded() {
        assert_eq!(percent_decode("a%20b%25"), "a b%");
        assert_eq!(percent_decode("100%"), "100%");
    }
}
