//! The registry's side of the storage port: workspaces, projects, API keys, agents,
//! instances and the audit log.

use async_trait::async_trait;

use super::{Mutation, PageRequest};
use crate::{
    Result,
    agent::{AgentPatch, NewAgent},
    instance::{InstanceFilter, InstancePatch, NewInstance},
    model::{
        Agent, ApiKey, CreatedApiKey, Instance, Labels, Page, Project, Quotas, QuotasPatch, Role,
        Workspace,
    },
    names::{AgentName, ApiKeyName, InstanceName, ProjectName},
    status::InstanceStatus,
    time::Micros,
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
    pub etag: String,
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
    pub etag: String,
}

#[derive(Debug, Clone)]
pub struct NewApiKey {
    pub workspace: String,
    pub display_name: String,
    pub role: Role,
    pub expire_time: Option<Micros>,
}

/// What authentication needs to know about a key.
#[derive(Debug, Clone)]
pub struct KeyRecord {
    pub key: ApiKey,
    pub secret_hash: Vec<u8>,
    pub revoke_time: Option<Micros>,
}

/// One committed mutation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    pub workspace_id: String,
    pub audit_id: String,
    pub create_time: i64,
    pub principal: String,
    pub method: String,
    pub resource: String,
    pub request_id: String,
}

/// Filters of ListAuditRecords; all of them must match.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub principal: Option<String>,
    pub method: Option<String>,
    /// The resource itself and everything under it (`{prefix}/…`).
    pub resource: Option<String>,
    pub after_time: Option<Micros>,
    pub before_time: Option<Micros>,
}

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
    async fn delete_workspace(&self, m: &Mutation, id: &str, force: bool, etag: &str)
    -> Result<()>;
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
        force: bool,
        etag: &str,
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
    async fn delete_agent(
        &self,
        m: &Mutation,
        name: &AgentName,
        force: bool,
        etag: &str,
    ) -> Result<()>;
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
        etag: &str,
    ) -> Result<Instance>;
    async fn set_instance_status(
        &self,
        m: &Mutation,
        name: &InstanceName,
        to: InstanceStatus,
        message: &str,
        etag: &str,
    ) -> Result<Instance>;
    /// Records a heartbeat. Liveness is not a managed change: no audit record, and the
    /// etag moves only when the heartbeat brings the instance back from OFFLINE.
    async fn heartbeat_instance(&self, name: &InstanceName) -> Result<Instance>;
    /// Moves every live instance whose heartbeat lapsed before `now` to OFFLINE;
    /// returns how many moved.
    async fn reap_instances(&self, now: Micros) -> Result<u64>;
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
