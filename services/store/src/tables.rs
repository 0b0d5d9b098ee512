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
    HeadSha256,
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
    ProjectId,
    ContextId,
    Sha256,
    Data,
    SizeBytes,
    Refs,
    CreateTime,
}

#[derive(Iden, Clone, Copy)]
pub(crate) enum Sessions {
    Table,
    WorkspaceId,
    ProjectId,
    SessionId,
    InstanceId,
    Description,
    Labels,
    ActiveRun,
    MessageCount,
    CreateTime,
    UpdateTime,
}

#[derive(Iden, Clone, Copy)]
pub(crate) enum Messages {
    Table,
    WorkspaceId,
    ProjectId,
    SessionId,
    Sequence,
    Role,
    Content,
    ToolCall,
    RunId,
    Superseded,
    CreateTime,
}

#[derive(Iden, Clone, Copy)]
pub(crate) enum RunSlots {
    Table,
    WorkspaceId,
    Slot,
    RunId,
}

#[derive(Iden, Clone, Copy)]
pub(crate) enum RunSlotSurplus {
    Table,
    WorkspaceId,
    Surplus,
}

#[derive(Iden, Clone, Copy)]
pub(crate) enum Runs {
    Table,
    WorkspaceId,
    RunId,
    ProjectId,
    SessionId,
    InstanceId,
    AgentId,
    AgentRevision,
    Status,
    StopReason,
    Ready,
    Spec,
    Attempt,
    Error,
    InputTokens,
    OutputTokens,
    CostUsd,
    LastSequence,
    CancelRequested,
    Supersede,
    Approval,
    ApprovalExpireTime,
    Output,
    NextAttemptTime,
    Deadline,
    LeaseEpoch,
    LeaseExpireTime,
    LeaseDuration,
    Worker,
    CreateTime,
    StartTime,
    EndTime,
    UpdateTime,
}

#[derive(Iden, Clone, Copy)]
pub(crate) enum ToolCalls {
    Table,
    WorkspaceId,
    RunId,
    CallId,
    Tool,
    Open,
}

#[derive(Iden, Clone, Copy)]
pub(crate) enum RunEvents {
    Table,
    WorkspaceId,
    RunId,
    Sequence,
    Attempt,
    Kind,
    Body,
    CreateTime,
}
