//! What the list handlers share after reading a page: the response of the list's own
//! type ([`ListResponse`], [`RequestCtx::respond`]) and the `create_time` bounds of
//! their filters ([`TimeBounds`]).

use agentry_core::{
    Result,
    model::Page,
    time::{Micros, TimeRange},
};
use agentry_proto::v1 as pb;
use prost::Message;

use crate::{
    convert::{filter_error, rfc3339_micros},
    request::RequestCtx,
};

/// A list response: its items and the token that continues after them.
pub trait ListResponse {
    type Item: Message;
    fn from_page(items: Vec<Self::Item>, next_page_token: String) -> Self;
}

macro_rules! list_response {
    ($($response:ident . $field:ident : $item:ident),* $(,)?) => {
        $(impl ListResponse for pb::$response {
            type Item = pb::$item;
            fn from_page(items: Vec<pb::$item>, next_page_token: String) -> Self {
                Self {
                    $field: items,
                    next_page_token,
                }
            }
        })*
    };
}

list_response!(
    ListWorkspacesResponse.workspaces: Workspace,
    ListProjectsResponse.projects: Project,
    ListApiKeysResponse.api_keys: ApiKey,
    ListAgentsResponse.agents: Agent,
    ListAgentRevisionsResponse.revisions: Agent,
    ListInstancesResponse.instances: Instance,
    ListAuditRecordsResponse.audit_records: AuditRecord,
    ListContextsResponse.contexts: Context,
    ListContextVersionsResponse.versions: ContextVersion,
    ListSessionsResponse.sessions: Session,
    ListMessagesResponse.messages: Message,
    ListRunsResponse.runs: Run,
);

impl RequestCtx {
    /// The response of a page read for the list `scope` names: its items converted
    /// and cut to size ([`RequestCtx::finish_page`]) and its continuation token.
    pub fn respond<T, R: ListResponse>(
        &self,
        scope: &str,
        page: Page<T>,
        convert: impl Fn(T) -> R::Item,
    ) -> R {
        let (items, next_page_token) = self.finish_page(scope, page, convert);
        R::from_page(items, next_page_token)
    }
}

/// The bounds of a filter's `create_time > "RFC 3339"` and `create_time < "…"` terms.
#[derive(Default)]
pub struct TimeBounds {
    pub after: Option<Micros>,
    pub before: Option<Micros>,
}

impl From<TimeBounds> for TimeRange {
    fn from(bounds: TimeBounds) -> Self {
        Self {
            after: bounds.after,
            before: bounds.before,
        }
    }
}

impl TimeBounds {
    /// Takes the term if it is a `create_time` bound (true), or leaves it (false).
    /// `supported` completes the error of a time that is not RFC 3339.
    pub fn take(&mut self, term: (&str, &str, &str), supported: &str) -> Result<bool> {
        let bound = match term {
            ("create_time", ">", _) => &mut self.after,
            ("create_time", "<", _) => &mut self.before,
            _ => return Ok(false),
        };
        let time = rfc3339_micros(term.2)
            .ok_or_else(|| filter_error("not an RFC 3339 time", supported))?;
        *bound = Some(time);
        Ok(true)
    }
}
