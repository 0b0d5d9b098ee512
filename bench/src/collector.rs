//! The observability benchmark's OTLP/gRPC collector: it counts the spans of each
//! `ExportTraceServiceRequest` by walking the message's field keys and lengths down to
//! `resource_spans.scope_spans.spans`, without decoding or copying anything, so that
//! the collector, which shares the machine with the servers, costs them as little as it
//! can, as a collector on a machine of its own would cost them nothing.

use std::{
    convert::Infallible,
    future::{Ready, ready},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context, Poll},
};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use prost::{Message as _, bytes::Buf as _, encoding::decode_varint};
use tonic::{
    Status,
    body::Body,
    codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder},
    codegen::{BoxFuture, Service},
    server::{Grpc, NamedService, UnaryService},
};

/// The path to the spans: `ExportTraceServiceRequest.resource_spans` (1),
/// `ResourceSpans.scope_spans` (2), `ScopeSpans.spans` (2).
const SPANS: [u64; 3] = [1, 2, 2];

/// The fields at `path` in the encoded message `message`, counted; `None` when it is
/// not a well-formed protobuf message.
fn count(mut message: &[u8], path: &[u64]) -> Option<u64> {
    let mut found = 0;
    while !message.is_empty() {
        let key = decode_varint(&mut message).ok()?;
        let len = match key & 7 {
            0 => {
                decode_varint(&mut message).ok()?;
                continue;
            }
            1 => 8,
            5 => 4,
            2 => usize::try_from(decode_varint(&mut message).ok()?).ok()?,
            _ => return None,
        };
        if len > message.len() {
            return None;
        }
        let (field, rest) = message.split_at(len);
        message = rest;
        if key & 7 == 2 && key >> 3 == path[0] {
            found += match path {
                [_] => 1,
                [_, deeper @ ..] => count(field, deeper)?,
                [] => 0,
            };
        }
    }
    Some(found)
}

/// Requests decode to their number of spans; responses encode as usual.
#[derive(Default)]
struct CountingCodec;

impl Codec for CountingCodec {
    type Encode = ExportTraceServiceResponse;
    type Decode = u64;
    type Encoder = Self;
    type Decoder = Self;

    fn encoder(&mut self) -> Self {
        Self
    }

    fn decoder(&mut self) -> Self {
        Self
    }
}

impl Encoder for CountingCodec {
    type Item = ExportTraceServiceResponse;
    type Error = Status;

    fn encode(&mut self, item: Self::Item, buf: &mut EncodeBuf<'_>) -> Result<(), Status> {
        item.encode(buf)
            .map_err(|e| Status::internal(e.to_string()))
    }
}

impl Decoder for CountingCodec {
    type Item = u64;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<u64>, Status> {
        // A message is buffered whole before it is decoded: one chunk.
        let len = buf.remaining();
        let spans = (buf.chunk().len() == len)
            .then(|| count(buf.chunk(), &SPANS))
            .flatten()
            .ok_or_else(|| Status::invalid_argument("not an ExportTraceServiceRequest"))?;
        buf.advance(len);
        Ok(Some(spans))
    }
}

/// `opentelemetry.proto.collector.trace.v1.TraceService`, counting spans.
#[derive(Clone, Default)]
pub struct Collector(Arc<AtomicU64>);

impl Collector {
    /// The spans received so far.
    pub fn spans(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

impl NamedService for Collector {
    const NAME: &'static str = "opentelemetry.proto.collector.trace.v1.TraceService";
}

impl Service<http::Request<Body>> for Collector {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Infallible>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let export = Export(self.0.clone());
        Box::pin(async move { Ok(Grpc::new(CountingCodec).unary(export, request).await) })
    }
}

/// The one method, `Export`.
struct Export(Arc<AtomicU64>);

impl UnaryService<u64> for Export {
    type Response = ExportTraceServiceResponse;
    type Future = Ready<Result<tonic::Response<Self::Response>, tonic::Status>>;

    fn call(&mut self, request: tonic::Request<u64>) -> Self::Future {
        self.0.fetch_add(*request.get_ref(), Ordering::Relaxed);
        ready(Ok(tonic::Response::new(
            ExportTraceServiceResponse::default(),
        )))
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry_proto::tonic::{
        collector::trace::v1::ExportTraceServiceRequest,
        trace::v1::{ResourceSpans, ScopeSpans, Span},
    };

    use super::*;

    #[test]
    fn spans_are_counted_in_every_resource_and_scope() {
        let span = |name: &str| Span {
            name: name.into(),
            start_time_unix_nano: 7,
            ..Default::default()
        };
        let scope = |n: usize| ScopeSpans {
            spans: (0..n).map(|i| span(&i.to_string())).collect(),
            schema_url: "s".into(),
            ..Default::default()
        };
        let request = ExportTraceServiceRequest {
            resource_spans: vec![
                ResourceSpans {
                    scope_spans: vec![scope(3), scope(0), scope(2)],
                    ..Default::default()
                },
                ResourceSpans {
                    scope_spans: vec![scope(5)],
                    ..Default::default()
                },
            ],
        };
        let bytes = request.encode_to_vec();
        assert_eq!(count(&bytes, &SPANS), Some(10));
        assert_eq!(count(&bytes[..bytes.len() - 1], &SPANS), None);
    }
}
