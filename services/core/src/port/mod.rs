//! The storage port: what the server asks of storage, as traits the store implements
//! for each database (as Quickwit's metastore: the service holds an `Arc<dyn …>`, a
//! backend implements it). The server names the concrete store only where it starts.
//!
//! Every operation is one transaction: a mutation ([`Mutation`]) performs the change,
//! appends its audit record and stores its result under the caller's `request_id`, all
//! or nothing, so a retry replays the first answer. What an operation changes wakes its
//! waiters through the [`ChangeFeed`] once it commits.
//!
//! The traits (`traits.rs`) follow what they serve, one per kind of resource or call
//! (as a metastore groups its methods by resource): the registry's ([`WorkspaceStore`],
//! [`ProjectStore`], [`ApiKeyStore`], [`AgentStore`], [`InstanceStore`], [`AuditStore`]),
//! the contexts' ([`ContextStore`], [`ContextReads`], [`ContextWrites`]), execution's
//! ([`SessionStore`], [`RunStore`], [`RunStatsStore`], [`ClaimStore`], [`WorkerStore`])
//! and [`Upkeep`] (start-up settings, probes, metrics, the reaper). [`Storage`] is all
//! of them with the [`ChangeFeed`]: what the server holds, as `Arc<dyn Storage>`. Their
//! commands and results are in `commands.rs`, [`Claim`] in `claim.rs`, the reaper's
//! state in `reaper.rs`.

mod claim;
mod commands;
mod feed;
mod reaper;
mod traits;

pub use claim::{Claim, ClaimRelease, Release};
pub use commands::{
    AuditFilter, ClaimAttempt, ClaimRequest, ContextChange, ContextHead, ContextWrite, DeleteGuard,
    KeyRecord, NewApiKey, NewContext, NewProject, NewWorkspace, Percentiles, PoolConnections,
    ProjectPatch, RunStatsGroup, RunStatsQuery, VersionFilter, VersionsAfter, WorkspacePatch,
};
// A committed mutation is a record of the model; the port names it where it lists them.
pub use crate::model::AuditRecord;
pub use feed::{ChangeFeed, Registry, Subscription};
pub use reaper::{ReapLimits, ReapReport, RunReaper};
pub use traits::{
    AgentStore, ApiKeyStore, AuditStore, ClaimStore, ContextReads, ContextStore, ContextWrites,
    InstanceStore, ProjectStore, RunStatsStore, RunStore, SessionStore, Upkeep, WorkerStore,
    WorkspaceStore,
};

/// Everything the server asks of storage; a backend implements every part and then
/// this (`impl Storage for Store {}`).
pub trait Storage:
    WorkspaceStore
    + ProjectStore
    + ApiKeyStore
    + AgentStore
    + InstanceStore
    + AuditStore
    + ContextStore
    + ContextReads
    + ContextWrites
    + SessionStore
    + RunStore
    + RunStatsStore
    + ClaimStore
    + WorkerStore
    + Upkeep
    + ChangeFeed
{
}

/// Where a list continues and how much of it to return.
#[derive(Debug, Clone, Default)]
pub struct PageRequest {
    pub size: usize,
    /// The cursor from the previous page's `next_cursor`, already verified by the caller.
    pub after: Option<String>,
}

/// Who writes what, for the audit log and the idempotency table.
#[derive(Debug, Clone)]
pub struct Mutation {
    /// The workspace the mutation belongs to (the new one, for CreateWorkspace).
    pub workspace: String,
    /// Where `request_id`s are unique: the workspace, or none for calls that create
    /// workspaces (whose request ids belong to the caller, not to the new workspace).
    pub scope: Option<String>,
    /// The caller: an API key's resource name, or `root`.
    pub principal: String,
    /// The gRPC method, e.g. `CreateProject`.
    pub method: &'static str,
    /// The resource name written.
    pub resource: String,
    /// The caller's request id, if it sent one.
    pub request_id: Option<String>,
    /// Hash of the whole request; a reused `request_id` must come with the same one.
    pub request_hash: Vec<u8>,
    /// Whether the mutation gets an audit record. Worker traffic (event batches,
    /// heartbeats) is recorded in the run's own log instead.
    pub audit: bool,
}
