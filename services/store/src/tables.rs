//! Table and column identifiers for the sea-query builders.
//!
//! Each table is an enum whose variants name it (`Table`) and its columns, with the
//! names spelled out. Their `Iden` writes a quoted name straight into the statement:
//! the names are plain lowercase ASCII, so quoting needs no escaping (a test checks),
//! and rendering skips the default's allocations and formatting per identifier, which
//! took about a tenth of the server's instructions on the run path.

use std::fmt::Write;

use sea_query::{Iden, Quote};

/// Table enums: `Name = "table" { Variant = "column", ... }`.
macro_rules! tables {
    ($($name:ident = $table:literal { $($variant:ident = $column:literal),* $(,)? })*) => {$(
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub(crate) enum $name {
            Table,
            $($variant),*
        }

        impl $name {
            /// The table's name (`Table`) or the column's.
            pub(crate) const fn name(self) -> &'static str {
                match self {
                    Self::Table => $table,
                    $(Self::$variant => $column),*
                }
            }
        }

        impl Iden for $name {
            fn unquoted(&self, s: &mut dyn Write) {
                let _ = s.write_str(self.name());
            }

            fn prepare(&self, s: &mut dyn Write, q: Quote) {
                let _ = s.write_char(q.left());
                let _ = s.write_str(self.name());
                let _ = s.write_char(q.right());
            }
        }
    )*

        /// Every table's and column's name, for the test that they need no escaping.
        #[cfg(test)]
        pub(crate) const ALL_NAMES: &[&str] = &[$($table, $($column),*),*];
    };
}

tables! {
    ServerSettings = "server_settings" {
        Key = "key",
        Value = "value",
    }
    Workspaces = "workspaces" {
        WorkspaceId = "workspace_id",
        DisplayName = "display_name",
        Description = "description",
        Quotas = "quotas",
        Labels = "labels",
        Etag = "etag",
        CreateTime = "create_time",
        UpdateTime = "update_time",
    }
    Projects = "projects" {
        WorkspaceId = "workspace_id",
        ProjectId = "project_id",
        DisplayName = "display_name",
        Description = "description",
        Labels = "labels",
        Etag = "etag",
        CreateTime = "create_time",
        UpdateTime = "update_time",
    }
    ApiKeys = "api_keys" {
        WorkspaceId = "workspace_id",
        KeyId = "key_id",
        DisplayName = "display_name",
        Role = "role",
        SecretHash = "secret_hash",
        CreateTime = "create_time",
        ExpireTime = "expire_time",
        RevokeTime = "revoke_time",
    }
    Agents = "agents" {
        WorkspaceId = "workspace_id",
        AgentId = "agent_id",
        AgentUid = "agent_uid",
        LatestRevision = "latest_revision",
        CreateTime = "create_time",
        UpdateTime = "update_time",
    }
    AgentRevisions = "agent_revisions" {
        WorkspaceId = "workspace_id",
        AgentUid = "agent_uid",
        Revision = "revision",
        AgentId = "agent_id",
        Spec = "spec",
        CreateTime = "create_time",
    }
    Instances = "instances" {
        WorkspaceId = "workspace_id",
        ProjectId = "project_id",
        InstanceId = "instance_id",
        DisplayName = "display_name",
        AgentId = "agent_id",
        AgentUid = "agent_uid",
        AgentRevision = "agent_revision",
        Config = "config",
        EffectiveConfig = "effective_config",
        Status = "status",
        StatusBeforeOffline = "status_before_offline",
        StatusMessage = "status_message",
        HeartbeatTtlMs = "heartbeat_ttl_ms",
        LastHeartbeatTime = "last_heartbeat_time",
        HeartbeatExpireTime = "heartbeat_expire_time",
        Labels = "labels",
        Etag = "etag",
        CreateTime = "create_time",
        UpdateTime = "update_time",
    }
    IdempotencyKeys = "idempotency_keys" {
        WorkspaceId = "workspace_id",
        RequestId = "request_id",
        Method = "method",
        RequestHash = "request_hash",
        Response = "response",
        CreateTime = "create_time",
    }
    AuditLog = "audit_log" {
        WorkspaceId = "workspace_id",
        AuditId = "audit_id",
        CreateTime = "create_time",
        Principal = "principal",
        Method = "method",
        Resource = "resource",
        RequestId = "request_id",
        Outcome = "outcome",
    }
    Contexts = "contexts" {
        WorkspaceId = "workspace_id",
        ProjectId = "project_id",
        ContextId = "context_id",
        Owner = "owner",
        Description = "description",
        KeepLast = "keep_last",
        HeadVersion = "head_version",
        HeadSha256 = "head_sha256",
        FloorVersion = "floor_version",
        Labels = "labels",
        CreateTime = "create_time",
        UpdateTime = "update_time",
    }
    ContextVersions = "context_versions" {
        WorkspaceId = "workspace_id",
        ProjectId = "project_id",
        ContextId = "context_id",
        Version = "version",
        Op = "op",
        RollbackOf = "rollback_of",
        Sha256 = "sha256",
        SizeBytes = "size_bytes",
        Author = "author",
        Description = "description",
        RequestId = "request_id",
        CreateTime = "create_time",
    }
    ContextBlobs = "context_blobs" {
        WorkspaceId = "workspace_id",
        ProjectId = "project_id",
        ContextId = "context_id",
        Sha256 = "sha256",
        Data = "data",
        SizeBytes = "size_bytes",
        Refs = "refs",
        CreateTime = "create_time",
    }
    Sessions = "sessions" {
        WorkspaceId = "workspace_id",
        ProjectId = "project_id",
        SessionId = "session_id",
        InstanceId = "instance_id",
        Description = "description",
        Labels = "labels",
        ActiveRun = "active_run",
        MessageCount = "message_count",
        CreateTime = "create_time",
        UpdateTime = "update_time",
    }
    Messages = "messages" {
        WorkspaceId = "workspace_id",
        ProjectId = "project_id",
        SessionId = "session_id",
        Sequence = "sequence",
        Role = "role",
        Content = "content",
        ToolCall = "tool_call",
        RunId = "run_id",
        Superseded = "superseded",
        CreateTime = "create_time",
    }
    RunSlots = "run_slots" {
        WorkspaceId = "workspace_id",
        Slot = "slot",
        RunId = "run_id",
    }
    RunSlotSurplus = "run_slot_surplus" {
        WorkspaceId = "workspace_id",
        Surplus = "surplus",
    }
    Runs = "runs" {
        WorkspaceId = "workspace_id",
        RunId = "run_id",
        ProjectId = "project_id",
        SessionId = "session_id",
        InstanceId = "instance_id",
        AgentId = "agent_id",
        AgentRevision = "agent_revision",
        Status = "status",
        StopReason = "stop_reason",
        Ready = "ready",
        Spec = "spec",
        Attempt = "attempt",
        Error = "error",
        InputTokens = "input_tokens",
        OutputTokens = "output_tokens",
        CostUsd = "cost_usd",
        LastSequence = "last_sequence",
        CancelRequested = "cancel_requested",
        Supersede = "supersede",
        Approval = "approval",
        ApprovalExpireTime = "approval_expire_time",
        Output = "output",
        NextAttemptTime = "next_attempt_time",
        Deadline = "deadline",
        LeaseEpoch = "lease_epoch",
        LeaseExpireTime = "lease_expire_time",
        LeaseDuration = "lease_duration",
        Worker = "worker",
        CreateTime = "create_time",
        StartTime = "start_time",
        EndTime = "end_time",
        UpdateTime = "update_time",
    }
    ToolCalls = "tool_calls" {
        WorkspaceId = "workspace_id",
        RunId = "run_id",
        CallId = "call_id",
        Tool = "tool",
        Open = "open",
    }
    RunEvents = "run_events" {
        WorkspaceId = "workspace_id",
        RunId = "run_id",
        Sequence = "sequence",
        Attempt = "attempt",
        Kind = "kind",
        Body = "body",
        CreateTime = "create_time",
    }
}

#[cfg(test)]
mod tests {
    use sea_query::{PostgresQueryBuilder, Query, SqliteQueryBuilder};

    use super::*;

    #[test]
    fn names_need_no_escaping() {
        for name in ALL_NAMES {
            assert!(
                !name.is_empty()
                    && name
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
                "{name:?} would need quoting rules"
            );
        }
    }

    #[test]
    fn identifiers_render_quoted() {
        let stmt = Query::select()
            .column((Runs::Table, Runs::WorkspaceId))
            .from(Runs::Table)
            .to_owned();
        assert_eq!(
            stmt.to_string(PostgresQueryBuilder),
            r#"SELECT "runs"."workspace_id" FROM "runs""#
        );
        assert_eq!(
            stmt.to_string(SqliteQueryBuilder),
            r#"SELECT "runs"."workspace_id" FROM "runs""#
        );
        assert_eq!(ContextVersions::Table.to_string(), "context_versions");
        assert_eq!(Contexts::HeadSha256.name(), "head_sha256");
    }
}
