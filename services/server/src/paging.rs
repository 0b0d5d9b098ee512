//! What the list handlers share after reading a page: the response of the list's own
//! type ([`ListResponse`], [`RequestCtx::respond`]) and the `create_time` bounds of
//! their filters ([`TimeBounds`]).

use agentry_core::{
    Result,
    model::Page,
    port::PageRequest,
    time::{TimeRange, UnixMicros},
};
use agentry_proto::v1 as pb;
use prost::Message;

use crate::{
    convert::{filter_error, filter_terms, rfc3339_micros},
    request::RequestCtx,
};

/// A list response: its items and the token that continues after them.
pub trait ListResponse {
    type Item: Message;
    fn from_page(items: Vec<Self::Item>, next_page_token: String) -> Self;
}

/// A list request: the page it asks for, and the response it gets.
pub trait ListRequest {
    type Response: ListResponse;
    fn page_size(&self) -> i32;
    fn page_token(&self) -> &str;
}

/// `Request => Response.field: Item`, one a list method.
macro_rules! list_method {
    ($($request:ident => $response:ident . $field:ident : $item:ident),* $(,)?) => {
        $(impl ListResponse for pb::$response {
            type Item = pb::$item;
            fn from_page(items: Vec<pb::$item>, next_page_token: String) -> Self {
                Self {
                    $field: items,
                    next_page_token,
                }
            }
        }

        impl ListRequest for pb::$request {
            type Response = pb::$response;
            fn page_size(&self) -> i32 {
                self.page_size
            }
            fn page_token(&self) -> &str {
                &self.page_token
            }
        })*
    };
}

list_method!(
    ListWorkspacesRequest => ListWorkspacesResponse.workspaces: Workspace,
    ListProjectsRequest => ListProjectsResponse.projects: Project,
    ListApiKeysRequest => ListApiKeysResponse.api_keys: ApiKey,
    ListAgentsRequest => ListAgentsResponse.agents: Agent,
    ListAgentRevisionsRequest => ListAgentRevisionsResponse.revisions: Agent,
    ListInstancesRequest => ListInstancesResponse.instances: Instance,
    ListAuditRecordsRequest => ListAuditRecordsResponse.audit_records: AuditRecord,
    ListContextsRequest => ListContextsResponse.contexts: Context,
    ListContextVersionsRequest => ListContextVersionsResponse.versions: ContextVersion,
    ListSessionsRequest => ListSessionsResponse.sessions: Session,
    ListMessagesRequest => ListMessagesResponse.messages: Message,
    ListRunsRequest => ListRunsResponse.runs: Run,
);

impl RequestCtx {
    /// The page a list request asks for, in the list `scope` names
    /// ([`RequestCtx::page`]).
    pub fn page_of<R: ListRequest>(&self, scope: &str, req: &R) -> Result<PageRequest> {
        self.page(scope, req.page_size(), req.page_token())
    }

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
    pub after: Option<UnixMicros>,
    pub before: Option<UnixMicros>,
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

    /// Reads a list's filter: terms `key op value` joined by AND ([`filter_terms`]),
    /// the `create_time` bounds into the answer, every other term handed to `take`,
    /// which answers whether it supports it. `supported` completes the error of a term
    /// nothing takes.
    pub fn filter(
        text: &str,
        supported: &str,
        mut take: impl FnMut(&str, &str, &str) -> Result<bool>,
    ) -> Result<Self> {
        let mut times = Self::default();
        for term @ (key, operator, value) in filter_terms(text, supported)? {
            if !times.take(term, supported)? && !take(key, operator, value)? {
                return Err(filter_error("unsupported term", supported));
            }
        }
        Ok(times)
    }
}
