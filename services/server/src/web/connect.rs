//! The Connect protocol's unary form on the gRPC port: `POST /{Service}/{Method}` with a
//! JSON body (`application/json`) or a protobuf one (`application/proto`) is turned into
//! a gRPC call and handed to the same stack every gRPC call goes through (observe, auth,
//! the services with their limits), and the gRPC answer is turned back: the message as
//! JSON, or an error as Connect's JSON error with the HTTP status Connect gives its code.
//!
//! A request the front cannot hand over as it came (JSON that does not fit the request
//! type, a body over the size cap, a stream method) still goes down the stack, empty and
//! marked with the status it deserves ([`Refusal`]); the innermost layer answers with
//! that status. So such a call is authenticated first, logged and counted like any
//! other, and fails the way the same mistake fails over gRPC.

use std::{
    sync::Arc,
    task::{Context, Poll},
};

use agentry_core::{Error, Reason};
use futures::future::{BoxFuture, Either, Ready, ready};
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, Version, header};
use http_body_util::{BodyExt as _, Full};
use prost::bytes::{BufMut as _, Bytes, BytesMut};
use prost_reflect::MessageDescriptor;
use tonic::{Code, Status, body::Body};

use super::procedures::{self, Procedures};
use crate::{
    error::{to_status, too_large},
    layer::{StateLayer, WithState},
};

/// How a Connect request's messages are encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Codec {
    Json,
    Proto,
}

impl Codec {
    fn of<B>(request: &Request<B>) -> Option<Self> {
        if request.method() != http::Method::POST {
            return None;
        }
        let content_type = request.headers().get(header::CONTENT_TYPE)?.to_str().ok()?;
        let essence = content_type.split(';').next()?.trim();
        if essence.eq_ignore_ascii_case("application/json") {
            Some(Self::Json)
        } else if essence.eq_ignore_ascii_case("application/proto") {
            Some(Self::Proto)
        } else {
            None
        }
    }
}

/// How much of an oversized body is read and thrown away before answering, so that a
/// client still sending gets its answer rather than a reset connection.
const DRAIN_BYTES: usize = 64 << 20;

/// Headers of a Connect request that mean nothing to the gRPC stack (or something else).
const DROPPED_HEADERS: &[&str] = &[
    "content-length",
    "content-encoding",
    "accept-encoding",
    "connect-protocol-version",
    "connect-content-encoding",
    "connect-accept-encoding",
    "grpc-encoding",
    "grpc-accept-encoding",
];

pub(crate) struct Shared {
    procedures: Procedures,
    /// `max_message_bytes`.
    limit: usize,
}

impl Shared {
    /// A JSON body may be twice the message limit: JSON spells out names and numbers; the
    /// message it encodes is held to the limit by the service, as over gRPC.
    fn body_cap(&self) -> usize {
        self.limit.saturating_mul(2)
    }
}

pub type ConnectLayer = StateLayer<Shared>;

pub type ConnectService<S> = WithState<S, Shared>;

/// The HTTP/JSON layer, for messages of at most `limit` bytes.
pub fn connect_layer(limit: usize) -> ConnectLayer {
    StateLayer::new(Arc::new(Shared {
        procedures: Procedures::new(),
        limit,
    }))
}

impl<S> tower::Service<Request<Body>> for ConnectService<S>
where
    S: tower::Service<Request<Body>, Response = Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Response<Body>, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner().poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let mut inner = self.take_ready();
        let Some(codec) = Codec::of(&request) else {
            return Box::pin(inner.call(request));
        };
        let shared = self.state.clone();
        Box::pin(async move {
            let (request, output) = shared.grpc_request(request, codec).await;
            let response = inner.call(request).await?;
            Ok(shared.connect_response(response, codec, output).await)
        })
    }
}

impl Shared {
    /// The gRPC call of a Connect request, and the response type to decode.
    async fn grpc_request(
        &self,
        request: Request<Body>,
        codec: Codec,
    ) -> (Request<Body>, Option<MessageDescriptor>) {
        let (mut parts, body) = request.into_parts();
        let procedure = self.procedures.get(parts.uri.path());
        let payload = match self.payload(&parts.headers, body, codec, procedure).await {
            Ok(payload) => frame(&payload),
            Err(status) => {
                parts.extensions.insert(Refusal(status));
                Bytes::new()
            }
        };
        let headers = &mut parts.headers;
        let timeout_ms = headers
            .remove("connect-timeout-ms")
            .and_then(|v| v.to_str().ok()?.trim().parse::<u64>().ok());
        for name in DROPPED_HEADERS {
            headers.remove(*name);
        }
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc"),
        );
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
        if let Some(ms) = timeout_ms {
            // grpc-timeout takes at most eight digits.
            let value = format!("{}m", ms.min(99_999_999));
            headers.insert(
                "grpc-timeout",
                HeaderValue::from_str(&value).expect("digits"),
            );
        }
        // Past the gRPC-Web layer, which lets HTTP/1.1 through only as gRPC-Web.
        parts.version = Version::HTTP_2;
        let output = procedure.map(|p| p.output.clone());
        (
            Request::from_parts(parts, Body::new(Full::new(payload))),
            output,
        )
    }

    /// The request message's encoding, or the status the call is refused with.
    async fn payload(
        &self,
        headers: &HeaderMap,
        body: Body,
        codec: Codec,
        procedure: Option<&procedures::Procedure>,
    ) -> Result<Bytes, Status> {
        if let Some(encoding) = headers.get(header::CONTENT_ENCODING)
            && encoding != "identity"
        {
            return Err(unsupported(format!(
                "compressed request bodies are not supported (content-encoding {})",
                String::from_utf8_lossy(encoding.as_bytes())
            )));
        }
        let body = read_capped(body, self.body_cap(), self.limit).await?;
        // An unknown path goes down as it is; the router answers UNIMPLEMENTED.
        let Some(procedure) = procedure else {
            return Ok(Bytes::new());
        };
        if procedure.streaming {
            return Err(unsupported(format!(
                "{} is a stream: call it over gRPC or gRPC-Web",
                procedure.input.full_name().trim_end_matches("Request")
            )));
        }
        match codec {
            Codec::Proto => Ok(body),
            Codec::Json => procedures::json_to_proto(&procedure.input, &body)
                .map(Bytes::from)
                .map_err(|error| malformed(&procedure.input, &error)),
        }
    }

    /// The Connect response of a gRPC response.
    async fn connect_response(
        &self,
        response: Response<Body>,
        codec: Codec,
        output: Option<MessageDescriptor>,
    ) -> Response<Body> {
        let (parts, body) = response.into_parts();
        let (status, data, trailers) = match Status::from_header_map(&parts.headers) {
            // Trailers-only: the call failed before answering.
            Some(status) => (status, Bytes::new(), HeaderMap::new()),
            None => match body.collect().await {
                Ok(collected) => {
                    let trailers = collected.trailers().cloned().unwrap_or_default();
                    let status = Status::from_header_map(&trailers)
                        .unwrap_or_else(|| internal("the call ended without a grpc-status"));
                    (status, collected.to_bytes(), trailers)
                }
                Err(status) => (status, Bytes::new(), HeaderMap::new()),
            },
        };
        let answer = if status.code() == Code::Ok {
            self.message(&data, codec, output.as_ref())
        } else {
            Err(status)
        };
        let mut response = match answer {
            Ok((content_type, body)) => {
                let mut response = Response::new(Body::new(Full::new(body)));
                response
                    .headers_mut()
                    .insert(header::CONTENT_TYPE, content_type);
                response
            }
            Err(status) => self.error(&status),
        };
        copy_metadata(&parts.headers, "", response.headers_mut());
        copy_metadata(&trailers, "trailer-", response.headers_mut());
        response
    }

    /// The response message, in the request's encoding.
    fn message(
        &self,
        data: &Bytes,
        codec: Codec,
        output: Option<&MessageDescriptor>,
    ) -> Result<(HeaderValue, Bytes), Status> {
        let message = unframe(data)?;
        match (codec, output) {
            (Codec::Proto, _) => Ok((HeaderValue::from_static("application/proto"), message)),
            (Codec::Json, Some(output)) => procedures::proto_to_json(output, &message)
                .map(|json| (HeaderValue::from_static("application/json"), json.into()))
                .map_err(|e| internal(format!("the response is not JSON: {e}"))),
            (Codec::Json, None) => Err(internal("a response of an unknown method")),
        }
    }

    fn error(&self, status: &Status) -> Response<Body> {
        let body = self.procedures.error_json(status);
        let mut response = Response::new(Body::new(Full::new(Bytes::from(body))));
        *response.status_mut() = procedures::http_status(status.code());
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        response
    }
}

/// The body, up to `cap` bytes; a longer one is MESSAGE_TOO_LARGE (the rest is read and
/// dropped, up to [`DRAIN_BYTES`]).
async fn read_capped(mut body: Body, cap: usize, limit: usize) -> Result<Bytes, Status> {
    let mut buffer = BytesMut::new();
    let mut over = false;
    let mut drained = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| {
            to_status(Error::invalid_many(
                Reason::MalformedRequest,
                format!("the request body could not be read: {e}"),
                Vec::new(),
            ))
        })?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        if over {
            drained += data.len();
            if drained > DRAIN_BYTES {
                break;
            }
        } else if buffer.len() + data.len() > cap {
            over = true;
            buffer = BytesMut::new();
        } else {
            buffer.extend_from_slice(&data);
        }
    }
    if over {
        return Err(too_large(limit));
    }
    Ok(buffer.freeze())
}

fn malformed(input: &MessageDescriptor, error: &str) -> Status {
    let message = format!(
        "the request is not valid JSON for {}: {error}",
        input.full_name()
    );
    to_status(Error::invalid_many(
        Reason::MalformedRequest,
        message,
        Vec::new(),
    ))
}

/// UNIMPLEMENTED `UNSUPPORTED`: a request in a form the gateway does not take.
fn unsupported(message: String) -> Status {
    to_status(Error::Unsupported { message })
}

/// INTERNAL, logged with `message` (which the caller never sees).
fn internal(message: impl std::fmt::Display) -> Status {
    to_status(Error::internal(message))
}

/// A gRPC message frame: no compression, the length, the message.
fn frame(message: &[u8]) -> Bytes {
    let mut framed = BytesMut::with_capacity(5 + message.len());
    framed.put_u8(0);
    framed.put_u32(message.len() as u32);
    framed.extend_from_slice(message);
    framed.freeze()
}

/// The one message of a unary response's body.
fn unframe(data: &Bytes) -> Result<Bytes, Status> {
    let broken = || internal("the response is not one gRPC message");
    if data.len() < 5 || data[0] != 0 {
        return Err(broken());
    }
    let length = u32::from_be_bytes([data[1], data[2], data[3], data[4]]) as usize;
    if data.len() != 5 + length {
        return Err(broken());
    }
    Ok(data.slice(5..))
}

/// Response metadata (not gRPC's own headers) as Connect headers, under `prefix`.
fn copy_metadata(from: &HeaderMap, prefix: &str, to: &mut HeaderMap) {
    for (name, value) in from {
        let name = name.as_str();
        if name.starts_with("grpc-") || name == "content-type" || name == "content-length" {
            continue;
        }
        if let Ok(name) = HeaderName::from_bytes(format!("{prefix}{name}").as_bytes()) {
            to.append(name, value.clone());
        }
    }
}

/// The status a call is refused with before it reaches a service; see the module doc.
#[derive(Clone)]
pub struct Refusal(Status);

/// Innermost: answers a call marked with a [`Refusal`] with its status.
#[derive(Clone, Copy, Default)]
pub struct RefusalLayer;

impl<S> tower::Layer<S> for RefusalLayer {
    type Service = RefusalService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RefusalService { inner }
    }
}

#[derive(Clone)]
pub struct RefusalService<S> {
    inner: S,
}

impl<S, B> tower::Service<Request<B>> for RefusalService<S>
where
    S: tower::Service<Request<B>, Response = Response<Body>>,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = Either<Ready<Result<Response<Body>, S::Error>>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        match request.extensions_mut().remove::<Refusal>() {
            Some(Refusal(status)) => Either::Left(ready(Ok(status.into_http()))),
            None => Either::Right(self.inner.call(request)),
        }
    }
}

#[cfg(test)]
mod tests {
    use http::StatusCode;

    use super::*;

    #[test]
    fn frames_round_trip() {
        let framed = frame(b"hello");
        assert_eq!(&framed[..5], &[0, 0, 0, 0, 5]);
        assert_eq!(unframe(&framed).unwrap(), Bytes::from_static(b"hello"));
        assert!(unframe(&Bytes::from_static(&[0, 0, 0, 0, 9, 1])).is_err());
        assert!(unframe(&Bytes::new()).is_err());
    }

    #[test]
    fn only_json_and_proto_posts_are_connect_calls() {
        let post = |content_type: &str| {
            Request::post("/agentry.v1.RegistryService/GetWorkspace")
                .header(header::CONTENT_TYPE, content_type)
                .body(())
                .unwrap()
        };
        assert_eq!(
            Codec::of(&post("application/json; charset=utf-8")),
            Some(Codec::Json)
        );
        assert_eq!(Codec::of(&post("application/proto")), Some(Codec::Proto));
        assert_eq!(Codec::of(&post("application/grpc")), None);
        assert_eq!(Codec::of(&post("application/grpc-web+proto")), None);
        let get = Request::get("/x")
            .header(header::CONTENT_TYPE, "application/json")
            .body(())
            .unwrap();
        assert_eq!(Codec::of(&get), None);
    }

    #[test]
    fn http_statuses_follow_connect() {
        for (code, status) in [
            (Code::InvalidArgument, StatusCode::BAD_REQUEST),
            (Code::Unauthenticated, StatusCode::UNAUTHORIZED),
            (Code::NotFound, StatusCode::NOT_FOUND),
            (Code::ResourceExhausted, StatusCode::TOO_MANY_REQUESTS),
        ] {
            assert_eq!(status, procedures::http_status(code), "{code:?}");
        }
    }
}
