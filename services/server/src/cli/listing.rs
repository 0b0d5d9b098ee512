//! `list` commands read every page (or `--limit` items) and print them as one response
//! of the list's own type, whose `next_page_token` continues after the last item shown.

use std::future::Future;

use agentry_proto::v1 as pb;
use clap::Args;
use tonic::{Response, Status};

use super::{Failure, conn::Client};

/// A list response: its items and its continuation token.
pub trait Listing: Default + prost::Message + prost::Name {
    type Item;
    fn items(&mut self) -> &mut Vec<Self::Item>;
    fn token(&mut self) -> &mut String;
}

/// A list request: the page it asks for, and the call that answers it.
pub trait ListRequest: Clone {
    type Response: Listing;
    fn set_page(&mut self, page_size: i32, page_token: String);
    fn send(self, c: &Client) -> impl Future<Output = Result<Response<Self::Response>, Status>>;
}

/// `Request => client.method -> Response.items: Item`: the request's call and the
/// response's items.
macro_rules! listing {
    ($($request:ident => $client:ident.$method:ident -> $response:ident.$field:ident: $item:ident),* $(,)?) => {
        $(impl Listing for pb::$response {
            type Item = pb::$item;
            fn items(&mut self) -> &mut Vec<pb::$item> {
                &mut self.$field
            }
            fn token(&mut self) -> &mut String {
                &mut self.next_page_token
            }
        }

        impl ListRequest for pb::$request {
            type Response = pb::$response;
            fn set_page(&mut self, page_size: i32, page_token: String) {
                self.page_size = page_size;
                self.page_token = page_token;
            }
            async fn send(self, c: &Client) -> Result<Response<pb::$response>, Status> {
                c.$client().$method(self).await
            }
        })*
    };
}

listing!(
    ListWorkspacesRequest => registry.list_workspaces -> ListWorkspacesResponse.workspaces: Workspace,
    ListProjectsRequest => registry.list_projects -> ListProjectsResponse.projects: Project,
    ListApiKeysRequest => registry.list_api_keys -> ListApiKeysResponse.api_keys: ApiKey,
    ListAgentsRequest => registry.list_agents -> ListAgentsResponse.agents: Agent,
    ListAgentRevisionsRequest => registry.list_agent_revisions
        -> ListAgentRevisionsResponse.revisions: Agent,
    ListInstancesRequest => registry.list_instances -> ListInstancesResponse.instances: Instance,
    ListContextsRequest => contexts.list_contexts -> ListContextsResponse.contexts: Context,
    ListContextVersionsRequest => contexts.list_context_versions
        -> ListContextVersionsResponse.versions: ContextVersion,
    ListSessionsRequest => execution.list_sessions -> ListSessionsResponse.sessions: Session,
    ListMessagesRequest => execution.list_messages -> ListMessagesResponse.messages: Message,
    ListRunsRequest => execution.list_runs -> ListRunsResponse.runs: Run,
    ListAuditRecordsRequest => registry.list_audit_records
        -> ListAuditRecordsResponse.audit_records: AuditRecord,
);

/// A list request of the resources under a parent (its `parent` field).
pub trait Under: Default {
    fn parent_mut(&mut self) -> &mut String;

    /// The request for the resources under `parent`, its other fields at their defaults.
    fn under(parent: String) -> Self {
        let mut request = Self::default();
        *request.parent_mut() = parent;
        request
    }
}

macro_rules! under {
    ($($request:ident),* $(,)?) => {
        $(impl Under for pb::$request {
            fn parent_mut(&mut self) -> &mut String {
                &mut self.parent
            }
        })*
    };
}

under!(ListProjectsRequest, ListApiKeysRequest, ListAgentsRequest);

#[derive(Args, Debug, Clone, Default)]
pub struct Paging {
    /// Show at most this many items [default: all]
    #[arg(long)]
    pub limit: Option<usize>,
    /// Continue a listing from the next_page_token of an earlier one
    #[arg(long, default_value = "")]
    pub page_token: String,
}

const PAGE: usize = 200;

/// Sends `request` for one page after another until the list ends or `--limit` is
/// reached, and prints what it read as one response.
pub async fn print_all<Q: ListRequest>(
    c: &Client,
    paging: &Paging,
    request: Q,
) -> Result<(), Failure> {
    let mut out = Q::Response::default();
    let mut token = paging.page_token.clone();
    loop {
        let have = out.items().len();
        let size = paging.limit.map_or(PAGE, |limit| (limit - have).min(PAGE));
        let mut page_request = request.clone();
        page_request.set_page(size as i32, token);
        let mut page = page_request.send(c).await?.into_inner();
        out.items().append(page.items());
        token = std::mem::take(page.token());
        let full = paging.limit.is_some_and(|limit| out.items().len() >= limit);
        if token.is_empty() || full {
            *out.token() = token;
            return c.out.print(&out);
        }
    }
}
