//! ReadContext, served from responses kept encoded.
//!
//! Which version a read wants is asked of the database on every read (the store's
//! `context_read_target`); the version itself never changes, so this replica keeps the
//! response it encoded for it ([`VersionCache`](super::VersionCache)) and writes those
//! bytes out again. [`ContextRoutes`] routes ReadContext to that path (with
//! [`EncodedCodec`]) and every other method to the generated service.

use std::{
    convert::Infallible,
    sync::Arc,
    task::{Context, Poll},
};

use agentry_core::{Result, model::ContextVersion, names::ContextName};
use agentry_proto::{
    encoded::EncodedCodec,
    v1::{self as pb, context_service_server::ContextServiceServer},
};
use prost::{Message, bytes::Bytes};
use tonic::{body::Body, server::NamedService};

use super::{Contexts, convert::version_to_proto, handlers::version_number};
use crate::{auth::Action, call::Call, request::RequestCtx};

const READ_CONTEXT: &str = "/agentry.v1.ContextService/ReadContext";

/// The encoded `pb::ContextVersion` a ReadContext answers with.
pub async fn read_context(ctx: &Call<'_>, req: pb::ReadContextRequest) -> Result<Bytes> {
    let name: ContextName = ctx.authorize("name", &req.name, Action::Read)?;
    let requested = version_number("version", req.version)?;
    let (head, version) = ctx.store.context_read_target(&name, requested).await?;
    let key = (name.to_string(), head.create_time, version);
    if let Some(found) = ctx.context_versions.get(&key) {
        return Ok(found);
    }
    match ctx
        .store
        .context_version_of(&name, head.create_time, version)
        .await?
    {
        Some(found) => {
            let encoded = encode(&name, found);
            ctx.context_versions.insert(key, encoded.clone());
            Ok(encoded)
        }
        // Deleted, created again or compacted since: answer as a plain read would.
        None => Ok(encode(&name, ctx.store.read_context(&name, version).await?)),
    }
}

fn encode(name: &ContextName, version: ContextVersion) -> Bytes {
    Bytes::from(version_to_proto(name, version).encode_to_vec())
}

/// The ContextService as served: ReadContext answered with encoded responses, every
/// other method by the generated service.
#[derive(Clone)]
pub struct ContextRoutes {
    generated: ContextServiceServer<Contexts>,
    ctx: Arc<RequestCtx>,
    max_message_bytes: usize,
}

impl ContextRoutes {
    pub fn new(ctx: Arc<RequestCtx>, max_message_bytes: usize) -> Self {
        Self {
            generated: ContextServiceServer::new(Contexts::new(ctx.clone()))
                .max_decoding_message_size(max_message_bytes)
                .max_encoding_message_size(max_message_bytes),
            ctx,
            max_message_bytes,
        }
    }
}

impl NamedService for ContextRoutes {
    const NAME: &'static str = <ContextServiceServer<Contexts> as NamedService>::NAME;
}

impl tower::Service<http::Request<Body>> for ContextRoutes {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future =
        futures::future::BoxFuture<'static, std::result::Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<std::result::Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        if request.uri().path() != READ_CONTEXT {
            return self.generated.call(request);
        }
        let (ctx, limit) = (self.ctx.clone(), self.max_message_bytes);
        Box::pin(async move {
            let mut grpc =
                tonic::server::Grpc::new(EncodedCodec::<pb::ReadContextRequest>::default())
                    .apply_max_message_size_config(Some(limit), Some(limit));
            Ok(grpc.unary(ReadContextMethod(ctx), request).await)
        })
    }
}

struct ReadContextMethod(Arc<RequestCtx>);

impl tonic::server::UnaryService<pb::ReadContextRequest> for ReadContextMethod {
    type Response = Bytes;
    type Future = futures::future::BoxFuture<
        'static,
        std::result::Result<tonic::Response<Bytes>, tonic::Status>,
    >;

    fn call(&mut self, request: tonic::Request<pb::ReadContextRequest>) -> Self::Future {
        let ctx = self.0.clone();
        Box::pin(async move {
            let principal = crate::auth::principal(&request)?;
            read_context(&Call::new(&ctx, principal), request.into_inner())
                .await
                .map(tonic::Response::new)
                .map_err(crate::error::to_status)
        })
    }
}
