//! The contexts' side of the storage port: versioned JSON documents, written with
//! compare-and-swap and kept as gapless, immutable versions down to a retention floor.

use async_trait::async_trait;
use serde_json::Value;

use super::{Mutation, PageRequest};
use crate::{
    Result, document,
    model::{Context, ContextOp, ContextVersion, Labels, Page, WriteOutcome},
    names::{ContextName, ProjectName},
    time::Micros,
};

#[derive(Debug, Clone)]
pub struct NewContext {
    pub name: ContextName,
    /// Instance id in the same project, or empty.
    pub owner: String,
    pub description: String,
    /// 0: the workspace's `context_keep_last`.
    pub keep_last: i32,
    pub labels: Labels,
    /// Becomes version 1 (op CREATE).
    pub data: Option<Value>,
}

/// How a write derives the new document from the head.
#[derive(Debug, Clone)]
pub enum ContextChange {
    Replace(Value),
    MergePatch(Value),
    JsonPatch(Vec<document::PatchOp>),
    /// Restore the data of this version.
    Rollback(i64),
}

#[derive(Debug, Clone)]
pub struct ContextWrite {
    pub change: ContextChange,
    /// Compare-and-swap on the head version (0: no versions yet).
    pub expected_version: Option<i64>,
    pub description: String,
}

/// Filters of ListContextVersions.
#[derive(Debug, Clone, Default)]
pub struct VersionFilter {
    pub author: Option<String>,
    pub op: Option<ContextOp>,
    pub after_time: Option<Micros>,
    pub before_time: Option<Micros>,
}

/// A context's identity and bounds at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContextHead {
    /// Tells a context from one deleted and created again under the same name.
    pub create_time: Micros,
    /// 0 when the context has no versions yet.
    pub head_version: i64,
    pub floor_version: i64,
}

/// Contexts themselves.
#[async_trait]
pub trait ContextStore: Send + Sync {
    async fn create_context(
        &self,
        m: &Mutation,
        new: NewContext,
    ) -> Result<(Context, Option<ContextVersion>)>;
    async fn get_context(&self, name: &ContextName) -> Result<Context>;
    async fn list_contexts(
        &self,
        project: &ProjectName,
        owner: Option<&str>,
        page: &PageRequest,
    ) -> Result<Page<Context>>;
    async fn delete_context(&self, m: &Mutation, name: &ContextName) -> Result<()>;
}

/// Reading versions back: the target of a read, one version, lists and watch batches.
#[async_trait]
pub trait ContextReads: Send + Sync {
    /// Where a read of `version` (`None`: the head) lands: the context's head as of a
    /// moment after this call began, and the version number, or the error such a read
    /// gives (no such context, `CONTEXT_EMPTY`, compacted, no such version). Concurrent
    /// calls may share one lookup; a caller may serve the version from its own copy,
    /// since versions never change.
    async fn context_read_target(
        &self,
        name: &ContextName,
        version: Option<i64>,
    ) -> Result<(ContextHead, i64)>;
    /// Version `version`, with its document, of the context created at `create_time`
    /// under `name` (one found by [`Self::context_read_target`]); `None` when that
    /// context no longer has it: deleted, created again, or compacted since.
    async fn context_version_of(
        &self,
        name: &ContextName,
        create_time: Micros,
        version: i64,
    ) -> Result<Option<ContextVersion>>;
    /// One version with its document. The common case is one query (the version joined
    /// with its context and blob); only a miss pays for finding out why: no such context,
    /// compacted, or never written. (A read of the head asks `context_read_target` for
    /// its number first.)
    async fn read_context(&self, name: &ContextName, version: i64) -> Result<ContextVersion>;
    async fn list_context_versions(
        &self,
        name: &ContextName,
        filter: &VersionFilter,
        full: bool,
        page: &PageRequest,
    ) -> Result<Page<ContextVersion>>;
    /// Up to `limit` versions after `after`, oldest first, for watchers. Fails with
    /// OUT_OF_RANGE `VERSION_COMPACTED` when versions after `after` were compacted, so a
    /// watcher never skips one silently.
    async fn context_versions_after(
        &self,
        name: &ContextName,
        after: i64,
        limit: u64,
        full: bool,
    ) -> Result<Vec<ContextVersion>>;
}

/// WriteContext and RollbackContext.
#[async_trait]
pub trait ContextWrites: Send + Sync {
    /// WriteContext and RollbackContext: at most one new version, CAS-guarded, with
    /// patches applied here, inside the transaction.
    async fn write_context(
        &self,
        m: &Mutation,
        name: &ContextName,
        write: ContextWrite,
    ) -> Result<WriteOutcome>;
}
