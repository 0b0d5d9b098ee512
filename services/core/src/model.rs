//! Domain resources as the store returns them. They are serde types because an
//! idempotent write stores its result with the mutation and replays it on a retry.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{status::InstanceStatus, time::UnixMicros};

pub type Labels = BTreeMap<String, String>;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quotas {
    pub max_instances_per_project: i32,
    pub max_concurrent_runs: i32,
    pub context_keep_last: i32,
    pub max_context_bytes: i64,
    pub max_projects: i32,
}

impl Default for Quotas {
    fn default() -> Self {
        Self {
            max_instances_per_project: 100,
            max_concurrent_runs: 10,
            context_keep_last: 50,
            max_context_bytes: 1 << 20,
            max_projects: 100,
        }
    }
}

impl Quotas {
    /// Replaces zero fields with the defaults.
    pub fn or_defaults(self) -> Self {
        let d = Self::default();
        let pick32 = |v: i32, d: i32| if v == 0 { d } else { v };
        Self {
            max_instances_per_project: pick32(
                self.max_instances_per_project,
                d.max_instances_per_project,
            ),
            max_concurrent_runs: pick32(self.max_concurrent_runs, d.max_concurrent_runs),
            context_keep_last: pick32(self.context_keep_last, d.context_keep_last),
            max_context_bytes: if self.max_context_bytes == 0 {
                d.max_context_bytes
            } else {
                self.max_context_bytes
            },
            max_projects: pick32(self.max_projects, d.max_projects),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Workspace {
    pub id: String,
    pub display_name: String,
    pub description: String,
    pub quotas: Quotas,
    pub labels: Labels,
    pub create_time: UnixMicros,
    pub update_time: UnixMicros,
    pub etag: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Project {
    pub workspace: String,
    pub id: String,
    pub display_name: String,
    pub description: String,
    pub labels: Labels,
    pub create_time: UnixMicros,
    pub update_time: UnixMicros,
    pub etag: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Role {
    Root,
    Admin,
    Developer,
    Reader,
    Worker,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Root => "ROOT",
            Self::Admin => "ADMIN",
            Self::Developer => "DEVELOPER",
            Self::Reader => "READER",
            Self::Worker => "WORKER",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "ROOT" => Self::Root,
            "ADMIN" => Self::Admin,
            "DEVELOPER" => Self::Developer,
            "READER" => Self::Reader,
            "WORKER" => Self::Worker,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApiKey {
    pub workspace: String,
    pub id: String,
    pub display_name: String,
    pub role: Role,
    pub create_time: UnixMicros,
    pub expire_time: Option<UnixMicros>,
}

/// CreateApiKey's result. The secret is never stored, so a replayed create returns
/// the key with an empty secret.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CreatedApiKey {
    pub key: ApiKey,
    #[serde(skip)]
    pub secret: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ToolRisk {
    ReadOnly,
    Write,
    Destructive,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tool {
    pub name: String,
    pub description: String,
    pub risk: ToolRisk,
}

/// What one agent revision says; immutable once written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentSpec {
    pub display_name: String,
    pub description: String,
    pub agent_type: String,
    pub capabilities: Vec<String>,
    pub tools: Vec<Tool>,
    pub config_schema: Option<Value>,
    pub default_config: Option<Value>,
    pub labels: Labels,
    pub enabled: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Agent {
    pub workspace: String,
    pub id: String,
    pub revision: i64,
    pub latest_revision: i64,
    pub spec: AgentSpec,
    pub create_time: UnixMicros,
    pub revision_create_time: UnixMicros,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Instance {
    pub workspace: String,
    pub project: String,
    pub id: String,
    pub display_name: String,
    pub agent: String,
    pub agent_revision: i64,
    pub config: Value,
    pub effective_config: Value,
    pub status: InstanceStatus,
    pub status_message: String,
    pub heartbeat_ttl_ms: i64,
    pub last_heartbeat_time: Option<UnixMicros>,
    pub labels: Labels,
    pub create_time: UnixMicros,
    pub update_time: UnixMicros,
    pub etag: i64,
}

/// A page of results and the cursor after its last row, if more rows may follow.
#[derive(Debug, Clone, PartialEq)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
    /// The cursor after each item (`cursors[i]` continues after `items[i]`), so that a
    /// caller may end the page early, e.g. when its response would grow too large.
    pub cursors: Vec<String>,
}

/// Quota fields to change; zero restores a field's default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QuotasPatch {
    pub max_instances_per_project: Option<i32>,
    pub max_concurrent_runs: Option<i32>,
    pub context_keep_last: Option<i32>,
    pub max_context_bytes: Option<i64>,
    pub max_projects: Option<i32>,
}

impl QuotasPatch {
    pub fn apply(&self, quotas: Quotas) -> Quotas {
        Quotas {
            max_instances_per_project: self
                .max_instances_per_project
                .unwrap_or(quotas.max_instances_per_project),
            max_concurrent_runs: self
                .max_concurrent_runs
                .unwrap_or(quotas.max_concurrent_runs),
            context_keep_last: self.context_keep_last.unwrap_or(quotas.context_keep_last),
            max_context_bytes: self.max_context_bytes.unwrap_or(quotas.max_context_bytes),
            max_projects: self.max_projects.unwrap_or(quotas.max_projects),
        }
        .or_defaults()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ContextOp {
    Create,
    Replace,
    MergePatch,
    JsonPatch,
    Rollback,
}

impl ContextOp {
    pub const ALL: [Self; 5] = [
        Self::Create,
        Self::Replace,
        Self::MergePatch,
        Self::JsonPatch,
        Self::Rollback,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Create => "CREATE",
            Self::Replace => "REPLACE",
            Self::MergePatch => "MERGE_PATCH",
            Self::JsonPatch => "JSON_PATCH",
            Self::Rollback => "ROLLBACK",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|op| op.as_str() == s)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Context {
    pub workspace: String,
    pub project: String,
    pub id: String,
    /// The owning instance's id (in the same project), if any.
    #[serde(default, with = "crate::absent::as_empty")]
    pub owner: Option<String>,
    pub description: String,
    pub keep_last: i32,
    /// 0 while the context has no versions.
    pub head_version: i64,
    /// The oldest retained version (1 until compaction starts).
    pub floor_version: i64,
    pub labels: Labels,
    pub create_time: UnixMicros,
    pub update_time: UnixMicros,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContextVersion {
    pub version: i64,
    pub op: ContextOp,
    pub rollback_of: i64,
    pub sha256: String,
    pub size_bytes: i64,
    pub author: String,
    pub description: String,
    /// The request id of the write, if its caller sent one.
    #[serde(default, with = "crate::absent::as_empty")]
    pub request_id: Option<String>,
    pub create_time: UnixMicros,
    /// Present when the caller asked for the document.
    pub data: Option<Value>,
}

/// What WriteContext and RollbackContext answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WriteOutcome {
    pub version: ContextVersion,
    pub noop: bool,
}

/// One committed mutation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    pub workspace_id: String,
    pub audit_id: String,
    pub create_time: UnixMicros,
    pub principal: String,
    pub method: String,
    pub resource: String,
    /// The caller's request id, if it sent one.
    pub request_id: Option<String>,
}
