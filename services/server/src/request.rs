//! What every handler needs: the store, page tokens, and the helpers that turn a
//! request into a [`Mutation`] (request id, request hash, audit identity) or a
//! [`PageRequest`].

use agentry_core::{
    Error, Result,
    absent::non_empty,
    model::{Agent, Page},
    names::AgentName,
    page::PageTokens,
    port::{ChangeFeed, Mutation, PageRequest, Storage},
};
use agentry_proto::RequestId;
use prost::{Message, Name};
use sha2::{Digest, Sha256};
use tokio::sync::watch;

use std::sync::Arc;

use crate::{
    auth::{KeyCache, Principal},
    convert,
};

/// The most a list page's items may encode to: well under the 4 MiB default message
/// limit, leaving room for the rest of the response.
pub const PAGE_BYTES: usize = 3 << 20;

pub struct RequestCtx {
    /// Storage, through its port (`agentry_core::port`).
    pub store: Arc<dyn Storage>,
    pub pages: PageTokens,
    /// Wake-ups for streams and long polls: subscribe, then look at storage.
    pub feed: Arc<dyn ChangeFeed>,
    /// Verified keys; revocations must be forgotten here.
    pub keys: Arc<KeyCache>,
    /// Flips to true when the server shuts down; streams end cleanly on it.
    pub stopping: watch::Receiver<bool>,
    /// Agent revisions read by worker calls. Revisions are immutable, so entries never go
    /// stale; the map is simply emptied when it grows large.
    pub revisions: std::sync::Mutex<std::collections::HashMap<(String, String, i64), Agent>>,
    /// Context versions ReadContext has served (immutable, so never stale).
    pub context_versions: crate::contexts::VersionCache,
}

const MAX_CACHED_REVISIONS: usize = 4096;

impl RequestCtx {
    /// Revision `revision` of `workspaces/{workspace}/agents/{agent}`.
    pub async fn agent_revision(
        &self,
        workspace: &str,
        agent: &str,
        revision: i64,
    ) -> Result<Agent> {
        let key = (workspace.to_owned(), agent.to_owned(), revision);
        if let Some(found) = self.revisions.lock().expect("revisions lock").get(&key) {
            return Ok(found.clone());
        }
        let name = AgentName {
            workspace: workspace.to_owned(),
            agent: agent.to_owned(),
        };
        let found = self.store.get_agent(&name, Some(revision)).await?;
        let mut cached = self.revisions.lock().expect("revisions lock");
        if cached.len() >= MAX_CACHED_REVISIONS {
            cached.clear();
        }
        cached.insert(key, found.clone());
        Ok(found)
    }

    /// Describes a write. The method is the request's type without `Request`
    /// (`UpdateProjectRequest` → `UpdateProject`), the request id its `request_id`. The
    /// request hash covers the method and the whole encoded request (maps encode in key
    /// order), so a reused `request_id` with any other field changed is detected.
    pub fn mutation<R: Message + Name + RequestId>(
        &self,
        principal: &Principal,
        workspace: &str,
        resource: String,
        request: &R,
    ) -> Result<Mutation> {
        let method = method_of::<R>();
        let request_id = request.request_id();
        convert::request_id(request_id)?;
        let mut hasher = Sha256::new();
        hasher.update(method.as_bytes());
        hasher.update(request.encode_to_vec());
        Ok(Mutation {
            workspace: workspace.to_owned(),
            scope: Some(workspace.to_owned()),
            principal: principal.name.clone(),
            method,
            resource,
            request_id: non_empty(request_id),
            request_hash: hasher.finalize().to_vec(),
            audit: true,
        })
    }

    /// A page request for a list whose `scope` names the method, the parent and every
    /// filter: a token only continues the list it came from.
    pub fn page(&self, scope: &str, page_size: i32, page_token: &str) -> Result<PageRequest> {
        Ok(PageRequest {
            size: agentry_core::page::page_size(page_size)?,
            after: self.pages.decode(scope, page_token)?,
        })
    }

    /// Converts a page's items and its continuation token. A page whose items would
    /// encode to more than [`PAGE_BYTES`] ends early (after at least one item), with a
    /// token that continues after its last item: a page of large items (FULL context
    /// versions, long transcripts) never outgrows the message limit.
    pub fn finish_page<T, P: Message>(
        &self,
        scope: &str,
        page: Page<T>,
        convert: impl Fn(T) -> P,
    ) -> (Vec<P>, String) {
        let mut items = Vec::with_capacity(page.items.len());
        let mut bytes = 0;
        let mut next_cursor = page.next_cursor;
        let mut last_cursor = None;
        for (item, cursor) in page.items.into_iter().zip(page.cursors) {
            let item = convert(item);
            bytes += item.encoded_len();
            if bytes > PAGE_BYTES && !items.is_empty() {
                next_cursor = last_cursor;
                break;
            }
            items.push(item);
            last_cursor = Some(cursor);
        }
        let token = next_cursor
            .map(|c| self.pages.encode(scope, &c))
            .unwrap_or_default();
        (items, token)
    }
}

/// A required message field.
pub fn required<T>(field: &str, value: Option<T>) -> Result<T> {
    value.ok_or_else(|| Error::invalid(field, "required"))
}

/// The method a request message belongs to: its name without the `Request` suffix.
pub fn method_of<R: Name>() -> &'static str {
    R::NAME.strip_suffix("Request").unwrap_or(R::NAME)
}

impl crate::call::Call<'_> {
    /// The caller's write of the resource `name` ([`RequestCtx::mutation`]).
    pub fn mutation_of<N, R>(&self, name: &N, request: &R) -> Result<Mutation>
    where
        N: crate::resource::ResourceName + std::fmt::Display,
        R: Message + Name + RequestId,
    {
        self.mutation_in(name.workspace(), name.to_string(), request)
    }

    /// The caller's write of `resource` in `workspace` ([`RequestCtx::mutation`]).
    pub fn mutation_in<R: Message + Name + RequestId>(
        &self,
        workspace: &str,
        resource: String,
        request: &R,
    ) -> Result<Mutation> {
        self.mutation(&self.caller, workspace, resource, request)
    }
}
