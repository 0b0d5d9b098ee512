//! Table and column identifiers for the sea-query builders.

use sea_query::Iden;

#[derive(Iden, Clone, Copy)]
pub(crate) enum ServerSettings {
    Table,
    Key,
    Value,
}

#[derive(Iden, Clone, Copy)]
pub(crate) enum Workspaces {
    Table,
    WorkspaceId,
    DisplayName,
    Description,
    Quotas,
    Labels,
    Etag,
    CreateTime,
    UpdateTime,
}

#[derive(Iden, Clone, Copy)]
pub(crate) enum Projects {
    Table,
    WorkspaceId,
    ProjectId,
    DisplayName,
    Description,
    Labels,
    Etag,
    CreateTime,
    UpdateTime,
}

#[derive(Iden, Clone, Copy)]
pub(crate) enum ApiKeys {
    Table,
    WorkspaceId,
    KeyId,
    DisplayName,
    Role,
    SecretHash,
    CreateTime,
    ExpireTime,
    RevokeTime,
}

#[derive(Iden, Clone, Copy)]
pub(crate) enum Agents {
    Table,
    WorkspaceId,
    AgentId,
    AgentUid,
    LatestRevision,
    CreateTime,
    UpdateTime,
}

#[derive(Iden, Clone, Copy)]
pub(crate) enum AgentRevisions {
    Table,
    WorkspaceId,
    AgentUid,
    Revision,
    AgentId,
    Spec,
    CreateTime,
}

#[derive(Iden, Clone, Copy)]
pub(crate) enum Instances {
    Table,
    WorkspaceId,
    ProjectId,
    InstanceId,
    DisplayName,
    AgentId,
    AgentUid,
    AgentRevision,
    Config,
    EffectiveConfig,
    Status,
    StatusBeforeOffline,
    StatusMessage,
    HeartbeatTtlMs,
    LastHeartbeatTime,
    HeartbeatExpireTime,
    Labels,
    Etag,
    CreateTime,
    UpdateTime,
}

#[derive(Iden, Clone, Copy)]
pub(crate) enum IdempotencyKeys {
    Table,
    WorkspaceId,
    RequestId,
    Method,
    RequestHash,
    Response,
    CreateTime,
}

#[derive(Iden, Clone, Copy)]
pub(crate) enum AuditLog {
    Table,
    WorkspaceId,
    AuditId,
    CreateTime,
    Principal,
    Method,
    Resource,
    RequestId,
    Outcome,
}

#[derive(Iden, Clone, Copy)]
pub(crate) enum Contexts {
    Table,
    WorkspaceId,
    ProjectId,
    ContextId,
    Owner,
    Description,
    KeepLast,
    HeadVersion,
    FloorVersion,
    Labels,
    CreateTime,
    UpdateTime,
}

#[derive(Iden, Clone, Copy)]
pub(crate) enum ContextVersions {
    Table,
    WorkspaceId,
    ProjectId,
    ContextId,
    Version,
    Op,
    RollbackOf,
    Sha256,
    SizeBytes,
    Author,
    Description,
    RequestId,
    CreateTime,
}

#[derive(Iden, Clone, Copy)]
pub(crate) enum ContextBlobs {
    Table,
    WorkspaceId,
    Sha256,
    Data,
    SizeBytes,
    Refs,
    CreateTime,
}
