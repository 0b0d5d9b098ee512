//! ListAuditRecords: the audit log, readable by the workspace's ADMIN or ROOT.

use agentry_core::{
    Result,
    names::{ApiKeyName, WorkspaceName},
    port::{AuditFilter, AuditRecord},
};
use agentry_proto::v1 as pb;

use crate::{
    auth::{Action, Principal},
    convert::{filter_error, filter_terms, rfc3339_micros, timestamp},
    request::RequestCtx,
};

const SUPPORTED: &str = "principal = \"workspaces/…/apiKeys/…\" or \"root\", method = \"CreateRun\", resource = \"workspaces/…/projects/…\", create_time > \"RFC 3339\", create_time < \"…\"";

/// `principal = "…" AND method = "…" AND resource = "…" AND create_time > "RFC 3339"`.
fn audit_filter(parent: &WorkspaceName, text: &str) -> Result<AuditFilter> {
    let bad = |why: &str| filter_error(why, SUPPORTED);
    let mut filter = AuditFilter::default();
    for (key, operator, value) in filter_terms(text, SUPPORTED)? {
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
            ("create_time", ">") => {
                filter.after_time =
                    Some(rfc3339_micros(value).ok_or_else(|| bad("not an RFC 3339 time"))?)
            }
            ("create_time", "<") => {
                filter.before_time =
                    Some(rfc3339_micros(value).ok_or_else(|| bad("not an RFC 3339 time"))?)
            }
            _ => return Err(bad("unsupported term")),
        }
    }
    Ok(filter)
}

fn to_proto(r: AuditRecord) -> pb::AuditRecord {
    pb::AuditRecord {
        name: format!("workspaces/{}/auditRecords/{}", r.workspace_id, r.audit_id),
        create_time: timestamp(r.create_time),
        principal: r.principal,
        method: r.method,
        resource: r.resource,
        request_id: r.request_id,
    }
}

pub async fn list_audit_records(
    ctx: &RequestCtx,
    p: &Principal,
    req: pb::ListAuditRecordsRequest,
) -> Result<pb::ListAuditRecordsResponse> {
    let parent = WorkspaceName::parse("parent", &req.parent)?;
    p.check(&parent.workspace, Action::ReadAudit)?;
    let filter = audit_filter(&parent, &req.filter)?;
    let scope = format!("ListAuditRecords {parent} {}", req.filter);
    let page = ctx.page(&scope, req.page_size, &req.page_token)?;
    let listed = ctx
        .store
        .list_audit_records(&parent.workspace, &filter, &page)
        .await?;
    let (audit_records, next_page_token) = ctx.finish_page(&scope, listed, to_proto);
    Ok(pb::ListAuditRecordsResponse {
        audit_records,
        next_page_token,
    })
}
