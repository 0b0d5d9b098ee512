//! `list` commands read every page (or `--limit` items) and print them as one response
//! of the list's own type, whose `next_page_token` continues after the last item shown.

use std::future::Future;

use agentry_proto::v1 as pb;
use clap::Args;
use tonic::{Response, Status};

use super::Failure;

/// A list response: its items and its continuation token.
pub trait Listing: Default {
    type Item;
    fn items(&mut self) -> &mut Vec<Self::Item>;
    fn token(&mut self) -> &mut String;
}

macro_rules! listing {
    ($($response:ident . $field:ident : $item:ident),* $(,)?) => {
        $(impl Listing for pb::$response {
            type Item = pb::$item;
            fn items(&mut self) -> &mut Vec<pb::$item> {
                &mut self.$field
            }
            fn token(&mut self) -> &mut String {
                &mut self.next_page_token
            }
        })*
    };
}

listing!(
    ListWorkspacesResponse.workspaces: Workspace,
    ListProjectsResponse.projects: Project,
    ListApiKeysResponse.api_keys: ApiKey,
    ListAgentsResponse.agents: Agent,
    ListAgentRevisionsResponse.revisions: Agent,
    ListInstancesResponse.instances: Instance,
    ListContextsResponse.contexts: Context,
    ListContextVersionsResponse.versions: ContextVersion,
    ListSessionsResponse.sessions: Session,
    ListMessagesResponse.messages: Message,
    ListRunsResponse.runs: Run,
    ListAuditRecordsResponse.audit_records: AuditRecord,
);

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

/// Calls `fetch(page_size, page_token)` until the list ends or `--limit` is reached.
pub async fn all<R, F, Fut>(paging: &Paging, mut fetch: F) -> Result<R, Failure>
where
    R: Listing,
    F: FnMut(i32, String) -> Fut,
    Fut: Future<Output = Result<Response<R>, Status>>,
{
    let mut out = R::default();
    let mut token = paging.page_token.clone();
    loop {
        let have = out.items().len();
        let size = paging.limit.map_or(PAGE, |limit| (limit - have).min(PAGE));
        let mut page = fetch(size as i32, token).await?.into_inner();
        out.items().append(page.items());
        token = std::mem::take(page.token());
        let full = paging.limit.is_some_and(|limit| out.items().len() >= limit);
        if token.is_empty() || full {
            *out.token() = token;
            return Ok(out);
        }
    }
}
