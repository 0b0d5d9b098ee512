//! The commands and results of the storage port, as the server and the store exchange
//! them: what to create or change, filters, and what some calls give back.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::{
    document,
    model::{ApiKey, ContextOp, Labels, Quotas, QuotasPatch, Role},
    names::ContextName,
    run::Usage,
    time::{DurationMicros, TimeRange, UnixMicros},
};

#[derive(Debug, Clone)]
pub struct NewWorkspace {
    pub id: String,
    pub display_name: String,
    pub description: String,
    pub quotas: Quotas,
    pub labels: Labels,
}

/// Fields to change; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct WorkspacePatch {
    pub display_name: Option<String>,
    pub description: Option<String>,
    pub quotas: QuotasPatch,
    pub labels: Option<Labels>,
    /// The etag the caller expects, if it sent one (none: unconditional).
    pub etag: Option<String>,
}

#[derive(Debug, Clone)]
pub struct NewProject {
    pub workspace: String,
    pub id: String,
    pub display_name: String,
    pub description: String,
    pub labels: Labels,
}

#[derive(Debug, Clone, Default)]
pub struct ProjectPatch {
    pub display_name: Option<String>,
    pub description: Option<String>,
    pub labels: Option<Labels>,
    /// The etag the caller expects, if it sent one (none: unconditional).
    pub etag: Option<String>,
}

/// The guards of a delete: without `force` a resource that still has children is
/// refused; an `etag`, if given, must match the resource's.
#[derive(Debug, Clone, Default)]
pub struct DeleteGuard {
    pub force: bool,
    pub etag: Option<String>,
}

#[derive(Debug, Clone)]
pub struct NewApiKey {
    pub workspace: String,
    pub display_name: String,
    pub role: Role,
    pub expire_time: Option<UnixMicros>,
}

/// What authentication needs to know about a key.
#[derive(Debug, Clone)]
pub struct KeyRecord {
    pub key: ApiKey,
    pub secret_hash: Vec<u8>,
    pub revoke_time: Option<UnixMicros>,
}

/// Filters of ListAuditRecords; all of them must match.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub principal: Option<String>,
    pub method: Option<String>,
    /// The resource itself and everything under it (`{prefix}/…`).
    pub resource: Option<String>,
    /// Created within these bounds.
    pub created: TimeRange,
}

#[derive(Debug, Clone)]
pub struct NewContext {
    pub name: ContextName,
    /// The owning instance's id (in the same project), if any.
    pub owner: Option<String>,
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

/// Filters of ListContextVersions, and whether the versions come with their documents.
#[derive(Debug, Clone, Default)]
pub struct VersionFilter {
    pub author: Option<String>,
    pub op: Option<ContextOp>,
    /// Created within these bounds.
    pub created: TimeRange,
    /// With each version's document (the FULL view), not only its metadata.
    pub full: bool,
}

/// A watcher's batch: up to `limit` versions after `after`, oldest first.
#[derive(Debug, Clone, Copy)]
pub struct VersionsAfter {
    pub after: i64,
    pub limit: u64,
    /// With each version's document.
    pub full: bool,
}

/// A context's identity and bounds at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContextHead {
    /// Tells a context from one deleted and created again under the same name.
    pub create_time: UnixMicros,
    /// 0 when the context has no versions yet.
    pub head_version: i64,
    pub floor_version: i64,
}

/// GetRunStats: the runs created in `[start, end)`, with each agent's figures too when
/// `by_agent`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunStatsQuery {
    pub start: UnixMicros,
    pub end: UnixMicros,
    pub by_agent: bool,
}

/// PollTask's claim: a run of one of `agents` in `workspace`, leased to `worker` (its
/// identity, if it sent one) for `lease_duration`.
#[derive(Debug, Clone, Copy)]
pub struct ClaimRequest<'a> {
    pub workspace: &'a str,
    pub agents: &'a [String],
    pub worker: Option<&'a str>,
    pub lease_duration: DurationMicros,
    /// What the caller knows of the queue, for the store's choice between looking for a
    /// run without a transaction first (a round trip more when one is there) and going
    /// straight to the claim's transaction (two more, its BEGIN and ROLLBACK, when none
    /// is). Either way the claim's outcome is the same.
    pub attempt: ClaimAttempt,
}

/// Which claim of a PollTask call this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimAttempt {
    /// The call's first: the queue may or may not hold a run (the store goes by what
    /// the workspace's recent first claims found).
    First,
    /// After a wake-up for a newly queued run: probably one is there.
    Woken,
    /// After a wait that timed out: probably none is there.
    TimedOut,
}

/// Percentiles of a duration (micros) and how many values they were taken over.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Percentiles {
    pub count: i64,
    pub p50: DurationMicros,
    pub p95: DurationMicros,
    pub p99: DurationMicros,
}

/// The figures of one group of runs: a project's, or one agent's in it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunStatsGroup {
    /// The agent's id; none for the project total.
    pub agent: Option<String>,
    pub total: i64,
    /// By stored status name (`SUCCEEDED` …).
    pub by_status: BTreeMap<String, i64>,
    pub finished: i64,
    pub succeeded: i64,
    /// Creation to first start, of runs that started.
    pub queue_wait: Percentiles,
    /// First start to end, of runs that ended.
    pub run_time: Percentiles,
    pub usage: Usage,
}

/// Connections of the database pools, for `agentry_db_pool_connections{state}`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolConnections {
    /// Checked out by a call or a background task.
    pub active: u64,
    /// Open and waiting in the pool.
    pub idle: u64,
    /// The most the pools will open.
    pub max: u64,
}
