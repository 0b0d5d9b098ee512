//! ListAuditRecords: the audit log, readable by the workspace's ADMIN or ROOT.

use agentry_core::{
    Result,
    names::{ApiKeyName, WorkspaceName},
    port::{AuditFilter, AuditRecord},
};
use agentry_proto::v1 as pb;

use crate::{
    auth::Action,
    call::Call,
    convert::{filter_error, filter_terms, timestamp},
    paging::TimeBounds,
};

const SUPPORTED: &str = "principal = \"workspaces/…/apiKeys/…\" or \"root\", method = \"CreateRun\", resource = \"workspaces/…/projects/…\", create_time > \"RFC 3339\", create_time < \"…\"";

/// `principal = "…" AND method = "…" AND resource = "…" AND create_time > "RFC 3339"`.
fn audit_filter(parent: &WorkspaceName, text: &str) -> Result<AuditFilter> {
    let bad = |why: &str| filter_error(why, SUPPORTED);
    let mut filter = AuditFilter::default();
    let mut times = TimeBounds::default();
    for term @ (key, operator, value) in filter_terms(text, SUPPORTED)? {
        if times.take(term, SUPPORTED)? {
            continue;
        }
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
            _ => return Err(bad("unsupported term")),
        }
    }
    filter.created = times.into();
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
    ctx: &Call<'_>,
    req: pb::ListAuditRecordsRequest,
) -> Result<pb::ListAuditRecordsResponse> {
    let parent: WorkspaceName = ctx.authorize("parent", &req.parent, Action::ReadAudit)?;
    let filter = audit_filter(&parent, &req.filter)?;
    let scope = format!("ListAuditRecords {parent} {}", req.filter);
    let page = ctx.page(&scope, req.page_size, &req.page_token)?;
    let listed = ctx
        .store
        .list_audit_records(&parent.workspace, &filter, &page)
        .await?;
    Ok(ctx.respond(&scope, listed, to_proto))
}
