//! The observability benchmark's OTLP/gRPC collector: it counts the spans of each
//! `ExportTraceServiceRequest` without decoding them. Its messages are minimal prost
//! messages that keep only the path to the spans, each span left as `bytes` (its other
//! fields skipped unread), so the collector, which shares the machine with the servers,
//! costs little, as a collector on a machine of its own would cost them nothing.

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
use prost::bytes::Bytes;
use tonic::{
    body::Body,
    codegen::{BoxFuture, Service},
    server::{Grpc, NamedService, UnaryService},
};

/// `ExportTraceServiceRequest`, down to `resource_spans.scope_spans.spans`.
#[derive(Clone, PartialEq, prost::Message)]
struct ExportRequest {
    #[prost(message, repeated, tag = "1")]
    resource_spans: Vec<ResourceSpans>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ResourceSpans {
    #[prost(message, repeated, tag = "2")]
    scope_spans: Vec<ScopeSpans>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ScopeSpans {
    /// Each span's encoding, undecoded.
    #[prost(bytes = "bytes", repeated, tag = "2")]
    spans: Vec<Bytes>,
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
        Box::pin(async move {
            let codec =
                tonic_prost::ProstCodec::<ExportTraceServiceResponse, ExportRequest>::default();
            Ok(Grpc::new(codec).unary(export, request).await)
        })
    }
}

/// The one method, `Export`.
struct Export(Arc<AtomicU64>);

impl UnaryService<ExportRequest> for Export {
    type Response = ExportTraceServiceResponse;
    type Future = Ready<Result<tonic::Response<Self::Response>, tonic::Status>>;

    fn call(&mut self, request: tonic::Request<ExportRequest>) -> Self::Future {
        let spans: usize = request
            .get_ref()
            .resource_spans
            .iter()
            .flat_map(|r| &r.scope_spans)
            .map(|s| s.spans.len())
            .sum();
        self.0.fetch_add(spans as u64, Ordering::Relaxed);
        ready(Ok(tonic::Response::new(
            ExportTraceServiceResponse::default(),
        )))
    }
}
