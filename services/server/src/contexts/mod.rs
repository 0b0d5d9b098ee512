//! ContextService: immutable versioned documents with CAS writes, server-side patches,
//! diffs, rollback, watch and retention. Unary handlers live in [`handlers`], except
//! ReadContext, which [`read`] serves from responses kept encoded on a route of its own
//! ([`ContextRoutes`], what the server mounts); the watch stream is in [`watch`].

mod cache;
mod convert;
mod handlers;
mod read;
mod watch;

use agentry_proto::v1::{self as pb, context_service_server::ContextService};

use crate::{rpc::rpc, standard};

pub use cache::VersionCache;
pub(crate) use convert::context_to_proto;
pub(crate) use handlers::owner_filter;
pub use read::ContextRoutes;

rpc! {
    ContextService for Contexts;
    handlers::create_context(pb::CreateContextRequest) -> pb::Context;
    standard::get_context(pb::GetContextRequest) -> pb::Context;
    standard::list_contexts(pb::ListContextsRequest) -> pb::ListContextsResponse;
    standard::delete_context(pb::DeleteContextRequest) -> ();
    handlers::write_context(pb::WriteContextRequest) -> pb::WriteContextResponse;
    handlers::list_context_versions(pb::ListContextVersionsRequest) -> pb::ListContextVersionsResponse;
    handlers::diff_context_versions(pb::DiffContextVersionsRequest) -> pb::DiffContextVersionsResponse;
    handlers::rollback_context(pb::RollbackContextRequest) -> pb::WriteContextResponse;
    @stream watch::watch_context(pb::WatchContextRequest) -> WatchContextStream of pb::WatchContextResponse;
    @extra {
        /// Served by [`ContextRoutes`], which writes the encoded response out as it is;
        /// here for the trait's sake, it decodes that response.
        async fn read_context(
            &self,
            request: tonic::Request<pb::ReadContextRequest>,
        ) -> Result<tonic::Response<pb::ContextVersion>, tonic::Status> {
            let principal = crate::auth::principal(&request)?;
            let call = crate::call::Call::new(&self.ctx, principal);
            let encoded = read::read_context(&call, request.into_inner())
                .await
                .map_err(crate::error::to_status)?;
            <pb::ContextVersion as prost::Message>::decode(encoded)
                .map(tonic::Response::new)
                .map_err(|e| crate::error::to_status(agentry_core::Error::internal(e)))
        }
    }
}
