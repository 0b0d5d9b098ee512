//! Reading the audit log (written by [`crate::mutation`] with every committed mutation).
//!
//! Records are listed newest first by `audit_id`, a UUIDv7 (time-ordered), so that a
//! page is a range scan of the primary key `(workspace_id, audit_id)` however long the
//! log grows; the filters narrow that scan.

use agentry_core::{
    Result,
    absent::non_empty,
    model::Page,
    port::{AuditFilter, AuditRecord, AuditStore},
};
use async_trait::async_trait;
use sea_query::{Expr, Func, Order, Query, SelectStatement};

use crate::{
    PageRequest, Store, paginate,
    rows::{columns, within},
    tables::AuditLog,
};

/// An audit record as [`COLUMNS`] decode it.
type AuditRow = (String, String, i64, String, String, String, String);

fn record(row: AuditRow) -> AuditRecord {
    let (workspace_id, audit_id, create_time, principal, method, resource, request_id) = row;
    AuditRecord {
        workspace_id,
        audit_id,
        create_time,
        principal,
        method,
        resource,
        request_id: non_empty(request_id),
    }
}

columns!(
    /// The columns of an audit record that lists return (all but `outcome`), in the order
    /// rows decode and inserts bind.
    pub(crate) COLUMNS: AuditLog [
        WorkspaceId, AuditId, CreateTime, Principal, Method, Resource, RequestId
    ]
);

fn list(workspace: &str, filter: &AuditFilter, page: &PageRequest) -> SelectStatement {
    let mut stmt = Query::select()
        .columns(COLUMNS)
        .from(AuditLog::Table)
        .and_where(Expr::col(AuditLog::WorkspaceId).eq(workspace))
        .to_owned();
    if let Some(principal) = &filter.principal {
        stmt.and_where(Expr::col(AuditLog::Principal).eq(principal.as_str()));
    }
    if let Some(method) = &filter.method {
        stmt.and_where(Expr::col(AuditLog::Method).eq(method.as_str()));
    }
    if let Some(resource) = &filter.resource {
        // A byte-exact prefix on both back ends: SQLite's LIKE ignores ASCII case and
        // Postgres orders text by collation, so neither LIKE nor a range would do.
        let under = format!("{resource}/");
        let head = Func::cust(Substr)
            .arg(Expr::col(AuditLog::Resource))
            .arg(1i32)
            .arg(under.chars().count() as i32);
        stmt.cond_where(
            Expr::col(AuditLog::Resource)
                .eq(resource.as_str())
                .or(Expr::expr(head).eq(under)),
        );
    }
    within(&mut stmt, AuditLog::CreateTime, filter.created);
    if let Some(after) = &page.after {
        stmt.and_where(Expr::col(AuditLog::AuditId).lt(after.as_str()));
    }
    stmt.order_by(AuditLog::AuditId, Order::Desc)
        .limit(page.size as u64 + 1)
        .to_owned()
}

#[derive(sea_query::Iden)]
#[iden = "substr"]
struct Substr;

#[async_trait]
impl AuditStore for Store {
    async fn list_audit_records(
        &self,
        workspace: &str,
        filter: &AuditFilter,
        page: &PageRequest,
    ) -> Result<Page<AuditRecord>> {
        let rows: Vec<AuditRow> = self.db.fetch_all(&list(workspace, filter, page)).await?;
        let records = rows.into_iter().map(record).collect();
        Ok(paginate(records, page.size, |r| r.audit_id.clone()))
    }
}
