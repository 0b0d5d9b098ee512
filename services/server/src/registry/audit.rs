//! The audit log, readable by the workspace's ADMIN or ROOT: ListAuditRecords's filter
//! and records (its handler is the standard List, `crate::standard`).

use agentry_core::{
    Result,
    names::{ApiKeyName, WorkspaceName},
    port::{AuditFilter, AuditRecord},
};
use agentry_proto::v1 as pb;

use crate::{
    convert::{filter_error, timestamp},
    paging::TimeBounds,
};

const SUPPORTED: &str = "principal = \"workspaces/…/apiKeys/…\" or \"root\", method = \"CreateRun\", resource = \"workspaces/…/projects/…\", create_time > \"RFC 3339\", create_time < \"…\"";

/// `principal = "…" AND method = "…" AND resource = "…" AND create_time > "RFC 3339"`.
pub(crate) fn audit_filter(parent: &WorkspaceName, text: &str) -> Result<AuditFilter> {
    let bad = |why: &str| filter_error(why, SUPPORTED);
    let mut filter = AuditFilter::default();
    let times = TimeBounds::filter(text, SUPPORTED, |key, operator, value| {
        match (key, operator) {
            ("principal", "=") => {
                if value != "root" {
                    ApiKeyName::parse("filter", value)?;
                }
                filter.principal = Some(value.to_owned());
            }
            ("method", "=") => {
                if value.is_empty() || !value.bytes().all(|b| b.is_ascii_alphanumeric()) {
                    return Err(bad("a method name such as CreateRun"));
                }
                filter.method = Some(value.to_owned());
            }
            ("resource", "=") => {
                let own = parent.to_string();
                let value = value.trim_end_matches('/');
                if value != own && !value.starts_with(&format!("{own}/")) {
                    return Err(bad("a resource of this workspace"));
                }
                filter.resource = Some(value.to_owned());
            }
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    filter.created = times.into();
    Ok(filter)
}

pub(crate) fn to_proto(r: AuditRecord) -> pb::AuditRecord {
    pb::AuditRecord {
        name: format!("workspaces/{}/auditRecords/{}", r.workspace_id, r.audit_id),
        create_time: timestamp(r.create_time),
        principal: r.principal,
        method: r.method,
        resource: r.resource,
        request_id: r.request_id.unwrap_or_default(),
    }
}
