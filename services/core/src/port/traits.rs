//! The storage port's traits: what the server asks of storage, one trait per kind of
//! resource or call, each implemented by the store where those operations live.

use async_trait::async_trait;

use super::{
    AuditFilter, Claim, ClaimRequest, ContextHead, ContextWrite, DeleteGuard, KeyRecord, Mutation,
    NewApiKey, NewContext, NewProject, NewWorkspace, PageRequest, PoolConnections, ProjectPatch,
    ReapReport, RunReaper, RunStatsGroup, RunStatsQuery, VersionFilter, VersionsAfter,
    WorkspacePatch,
};
use crate::{
    Result,
    agent::{AgentPatch, NewAgent},
    instance::{InstanceFilter, InstancePatch, NewInstance, StatusChange},
    model::{
        Agent, ApiKey, AuditRecord, Context, ContextVersion, CreatedApiKey, Instance, Page,
        Project, Workspace, WriteOutcome,
    },
    names::{AgentName, ApiKeyName, ContextName, InstanceName, ProjectName, RunName, SessionName},
    run::{
        Approval, ApprovalDecision, EventInput, Lease, Message, NewRun, NewSession, PlanStep, Run,
        RunEvent, RunFilter, Session, TaskCompletion, TaskFailure,
    },
    time::{DurationMicros, UnixMicros},
};

/// Workspaces: the tenants. Deleting one removes its projects, instances, agent heads
/// and API keys; agent revisions and the audit log stay (append-only).
#[async_trait]
pub trait WorkspaceStore: Send + Sync {
    async fn create_workspace(&self, m: &Mutation, new: NewWorkspace) -> Result<Workspace>;
    async fn get_workspace(&self, id: &str) -> Result<Workspace>;
    async fn list_workspaces(&self, page: &PageRequest) -> Result<Page<Workspace>>;
    async fn update_workspace(
        &self,
        m: &Mutation,
        id: &str,
        patch: WorkspacePatch,
    ) -> Result<Workspace>;
    async fn delete_workspace(&self, m: &Mutation, id: &str, guard: &DeleteGuard) -> Result<()>;
}

/// Projects: namespaces inside a workspace, counted against `max_projects`.
#[async_trait]
pub trait ProjectStore: Send + Sync {
    async fn create_project(&self, m: &Mutation, new: NewProject) -> Result<Project>;
    async fn get_project(&self, name: &ProjectName) -> Result<Project>;
    async fn list_projects(&self, workspace: &str, page: &PageRequest) -> Result<Page<Project>>;
    async fn update_project(
        &self,
        m: &Mutation,
        name: &ProjectName,
        patch: ProjectPatch,
    ) -> Result<Project>;
    async fn delete_project(
        &self,
        m: &Mutation,
        name: &ProjectName,
        guard: &DeleteGuard,
    ) -> Result<()>;
}

/// API keys. Only a secret's hash is kept; a deleted key is revoked, not forgotten.
#[async_trait]
pub trait ApiKeyStore: Send + Sync {
    async fn create_api_key(&self, m: &Mutation, new: NewApiKey) -> Result<CreatedApiKey>;
    async fn list_api_keys(&self, workspace: &str, page: &PageRequest) -> Result<Page<ApiKey>>;
    async fn delete_api_key(&self, m: &Mutation, name: &ApiKeyName) -> Result<()>;
    /// The key a secret names, revoked or not, for authentication.
    async fn find_api_key(&self, workspace: &str, key: &str) -> Result<Option<KeyRecord>>;
}

/// Agents, as append-only revisions.
#[async_trait]
pub trait AgentStore: Send + Sync {
    async fn create_agent(&self, m: &Mutation, new: NewAgent) -> Result<Agent>;
    async fn get_agent(&self, name: &AgentName, revision: Option<i64>) -> Result<Agent>;
    async fn list_agents(&self, workspace: &str, page: &PageRequest) -> Result<Page<Agent>>;
    async fn list_agent_revisions(
        &self,
        name: &AgentName,
        page: &PageRequest,
    ) -> Result<Page<Agent>>;
    /// Appends a revision holding the latest one with `patch` applied (core checks the
    /// resulting spec before anything is written).
    async fn update_agent(
        &self,
        m: &Mutation,
        name: &AgentName,
        patch: AgentPatch,
    ) -> Result<Agent>;
    async fn delete_agent(&self, m: &Mutation, name: &AgentName, guard: &DeleteGuard)
    -> Result<()>;
}

/// Instances and their status and heartbeats.
#[async_trait]
pub trait InstanceStore: Send + Sync {
    async fn create_instance(&self, m: &Mutation, new: NewInstance) -> Result<Instance>;
    async fn get_instance(&self, name: &InstanceName) -> Result<Instance>;
    async fn list_instances(
        &self,
        project: &ProjectName,
        filter: &InstanceFilter,
        page: &PageRequest,
    ) -> Result<Page<Instance>>;
    async fn update_instance(
        &self,
        m: &Mutation,
        name: &InstanceName,
        patch: InstancePatch,
    ) -> Result<Instance>;
    async fn delete_instance(
        &self,
        m: &Mutation,
        name: &InstanceName,
        etag: Option<&str>,
    ) -> Result<Instance>;
    async fn set_instance_status(
        &self,
        m: &Mutation,
        name: &InstanceName,
        change: StatusChange,
    ) -> Result<Instance>;
    /// Records a heartbeat. Liveness is not a managed change: no audit record, and the
    /// etag moves only when the heartbeat brings the instance back from OFFLINE.
    async fn heartbeat_instance(&self, name: &InstanceName) -> Result<Instance>;
    /// Moves every live instance whose heartbeat lapsed before `now` to OFFLINE;
    /// returns how many moved.
    async fn reap_instances(&self, now: UnixMicros) -> Result<u64>;
}

/// The audit log, written with every committed mutation.
#[async_trait]
pub trait AuditStore: Send + Sync {
    /// A workspace's audit records, newest first.
    async fn list_audit_records(
        &self,
        workspace: &str,
        filter: &AuditFilter,
        page: &PageRequest,
    ) -> Result<Page<AuditRecord>>;
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
        create_time: UnixMicros,
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
        page: &PageRequest,
    ) -> Result<Page<ContextVersion>>;
    /// Up to `batch.limit` versions after `batch.after`, oldest first, for watchers.
    /// Fails with OUT_OF_RANGE `VERSION_COMPACTED` when versions after `batch.after`
    /// were compacted, so a watcher never skips one silently.
    async fn context_versions_after(
        &self,
        name: &ContextName,
        batch: VersionsAfter,
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

/// Sessions and their transcripts.
#[async_trait]
pub trait SessionStore: Send + Sync {
    async fn create_session(&self, m: &Mutation, new: NewSession) -> Result<Session>;
    async fn get_session(&self, name: &SessionName) -> Result<Session>;
    /// Sessions of a project, newest first.
    async fn list_sessions(
        &self,
        project: &ProjectName,
        instance: Option<&str>,
        page: &PageRequest,
    ) -> Result<Page<Session>>;
    /// Deletes an idle session with its transcript, runs and their event logs.
    async fn delete_session(&self, m: &Mutation, name: &SessionName) -> Result<()>;
    /// The transcript, oldest first.
    async fn list_messages(
        &self,
        name: &SessionName,
        show_superseded: bool,
        page: &PageRequest,
    ) -> Result<Page<Message>>;
}

/// Runs and their event logs.
#[async_trait]
pub trait RunStore: Send + Sync {
    async fn create_run(&self, m: &Mutation, new: NewRun) -> Result<Run>;
    async fn get_run(&self, name: &RunName) -> Result<Run>;
    /// Runs of one session (or of the whole project when `filter.session` is `None`),
    /// newest first.
    async fn list_runs(
        &self,
        project: &ProjectName,
        filter: &RunFilter,
        page: &PageRequest,
    ) -> Result<Page<Run>>;
    async fn cancel_run(&self, m: &Mutation, name: &RunName, reason: &str) -> Result<Run>;
    async fn decide_approval(
        &self,
        m: &Mutation,
        name: &RunName,
        verdict: &ApprovalDecision,
    ) -> Result<Run>;
    /// Events of a run with a sequence above `after`, oldest first, at most `limit`.
    /// With none, NOT_FOUND if the run itself is gone (its project or workspace was
    /// deleted), so that a stream following it ends rather than waiting forever.
    async fn run_events_after(
        &self,
        name: &RunName,
        after: i64,
        limit: u64,
    ) -> Result<Vec<RunEvent>>;
}

/// GetRunStats, computed by the database.
#[async_trait]
pub trait RunStatsStore: Send + Sync {
    /// The figures of `project`'s runs created in `[query.start, query.end)`: the total,
    /// and with `query.by_agent` each agent's (ordered by agent id).
    async fn run_stats(
        &self,
        project: &ProjectName,
        query: RunStatsQuery,
    ) -> Result<(RunStatsGroup, Vec<RunStatsGroup>)>;
}

/// PollTask's claims.
#[async_trait]
pub trait ClaimStore: Send + Sync {
    /// Leases the oldest claimable run of `claim.agents` in `claim.workspace`, if the
    /// workspace has a free concurrent-run slot.
    async fn claim_run(&self, claim: ClaimRequest<'_>) -> Result<Option<Claim>>;
}

/// The calls a worker makes under a run's lease. Each is fenced by the lease it names:
/// the run must still be leased, to the same attempt and lease epoch, with the lease
/// not expired.
#[async_trait]
pub trait WorkerStore: Send + Sync {
    /// Renews the lease for `wait` (the caller holds its reply that long) plus the
    /// lease's duration.
    async fn heartbeat_task(&self, lease: &Lease, wait: DurationMicros) -> Result<Run>;
    /// Appends a batch; returns the last sequence and whether a cancel was requested.
    async fn append_run_events(
        &self,
        m: &Mutation,
        lease: &Lease,
        inputs: Vec<EventInput>,
    ) -> Result<(i64, bool)>;
    /// Applies the autonomy matrix to a plan: auto-approved (the lease goes on), or the
    /// run waits for a human in REQUIRES_ACTION and the lease ends.
    async fn propose_plan(
        &self,
        m: &Mutation,
        lease: &Lease,
        steps: Vec<PlanStep>,
    ) -> Result<(bool, Approval)>;
    async fn complete_task(&self, m: &Mutation, lease: &Lease, done: TaskCompletion)
    -> Result<Run>;
    async fn fail_task(&self, m: &Mutation, lease: &Lease, failure: TaskFailure) -> Result<Run>;
}

/// Settings, probes, metrics and the reaper.
#[async_trait]
pub trait Upkeep: Send + Sync {
    /// The HMAC key for page tokens, created by whichever replica starts first.
    async fn page_token_key(&self) -> Result<String>;
    /// The stored root key hash, generating a root key when there is none yet. Returns
    /// the hash and, only on the start that generated it, the secret itself.
    async fn root_key_hash(&self) -> Result<(Vec<u8>, Option<String>)>;
    /// Ready to serve: the database answers and every migration this build knows is
    /// applied. The error says which is not the case.
    async fn readiness(&self) -> std::result::Result<(), String>;
    /// Connections of the database pools now.
    fn pool_connections(&self) -> PoolConnections;
    /// Runs by status, over every workspace: one `GROUP BY` over the runs table.
    async fn count_runs_by_status(&self) -> Result<Vec<(String, i64)>>;
    /// One pass over the run timers that fell due, within `reaper.limits`.
    async fn reap_runs(&self, reaper: &mut RunReaper) -> Result<ReapReport>;
    /// Forgets stored results older than `before` (micros); the reaper calls this.
    async fn purge_idempotency_keys(&self, before: i64) -> Result<u64>;
    /// One pass of the GetRunStats roller, within `max_time`: the runs folded into
    /// rollups, and whether the pass stopped before it was done.
    async fn roll_run_stats(&self, max_time: std::time::Duration) -> Result<(u64, bool)>;
    /// Closes the connections; the store serves nothing after.
    async fn close(&self);
}
