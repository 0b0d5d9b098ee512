//! The version log of a context: appending (CAS, patches, noop detection, blob upsert,
//! compaction, change notification) and reading it back.

use std::collections::BTreeMap;

use agentry_core::{
    Error, FieldViolation, Result, document,
    model::{Context, ContextOp, ContextVersion, Page, WriteOutcome},
    names::{ContextName, ProjectName},
    time::{Micros, now_micros},
};
use sea_query::{Alias, Expr, Func, OnConflict, Order, Query, SelectStatement};
use serde_json::Value;

use super::{ContextHead, lock_context, where_context};
use crate::{
    PageRequest, Store,
    db::Tx,
    feed::Wakes,
    mutation::{Mutation, mutate},
    paginate,
    rows::json,
    tables::{ContextBlobs, ContextVersions, Contexts},
    workspaces::read_workspace,
};

/// How a write derives the new document from the head.
#[derive(Debug, Clone)]
pub enum ContextChange {
    Replace(Value),
    MergePatch(Value),
    JsonPatch(Vec<document::PatchOp>),
    /// Restore the data of this version.
    Rollback(i64),
}

#[derive(Debug, Clone)]
pub struct ContextWrite {
    pub change: ContextChange,
    /// Compare-and-swap on the head version (0: no versions yet).
    pub expected_version: Option<i64>,
    pub description: String,
}

/// Filters of ListContextVersions.
#[derive(Debug, Clone, Default)]
pub struct VersionFilter {
    pub author: Option<String>,
    pub op: Option<ContextOp>,
    pub after_time: Option<Micros>,
    pub before_time: Option<Micros>,
}

pub(crate) struct Append {
    pub(crate) data: Value,
    pub(crate) op: ContextOp,
    pub(crate) rollback_of: i64,
    pub(crate) author: String,
    pub(crate) description: String,
    pub(crate) request_id: String,
    pub(crate) max_bytes: i64,
}

#[derive(sqlx::FromRow)]
struct VersionRow {
    version: i64,
    op: String,
    rollback_of: i64,
    sha256: String,
    size_bytes: i64,
    author: String,
    description: String,
    request_id: String,
    create_time: i64,
    #[sqlx(default)]
    data: Option<String>,
}

impl TryFrom<VersionRow> for ContextVersion {
    type Error = Error;

    fn try_from(row: VersionRow) -> Result<Self> {
        Ok(Self {
            op: ContextOp::parse(&row.op)
                .ok_or_else(|| Error::internal(format!("unknown context op {:?}", row.op)))?,
            data: row.data.as_deref().map(|d| json("data", d)).transpose()?,
            version: row.version,
            rollback_of: row.rollback_of,
            sha256: row.sha256,
            size_bytes: row.size_bytes,
            author: row.author,
            description: row.description,
            request_id: row.request_id,
            create_time: row.create_time,
        })
    }
}

pub(crate) fn where_versions<T: sea_query::ConditionalStatement>(stmt: &mut T, name: &ContextName) {
    stmt.and_where(
        Expr::col((ContextVersions::Table, ContextVersions::WorkspaceId))
            .eq(name.workspace.as_str()),
    )
    .and_where(
        Expr::col((ContextVersions::Table, ContextVersions::ProjectId)).eq(name.project.as_str()),
    )
    .and_where(
        Expr::col((ContextVersions::Table, ContextVersions::ContextId)).eq(name.context.as_str()),
    );
}

/// Version headers, and the document too when `full`.
fn select_versions(name: &ContextName, full: bool) -> SelectStatement {
    let mut stmt = Query::select();
    stmt.columns([
        (ContextVersions::Table, ContextVersions::Version),
        (ContextVersions::Table, ContextVersions::Op),
        (ContextVersions::Table, ContextVersions::RollbackOf),
        (ContextVersions::Table, ContextVersions::Sha256),
        (ContextVersions::Table, ContextVersions::SizeBytes),
        (ContextVersions::Table, ContextVersions::Author),
        (ContextVersions::Table, ContextVersions::Description),
        (ContextVersions::Table, ContextVersions::RequestId),
        (ContextVersions::Table, ContextVersions::CreateTime),
    ])
    .from(ContextVersions::Table);
    if full {
        stmt.column((ContextBlobs::Table, ContextBlobs::Data))
            .inner_join(
                ContextBlobs::Table,
                Expr::col((ContextBlobs::Table, ContextBlobs::WorkspaceId))
                    .equals((ContextVersions::Table, ContextVersions::WorkspaceId))
                    .and(
                        Expr::col((ContextBlobs::Table, ContextBlobs::Sha256))
                            .equals((ContextVersions::Table, ContextVersions::Sha256)),
                    ),
            );
    }
    where_versions(&mut stmt, name);
    stmt
}

fn one_version(name: &ContextName, version: i64, full: bool) -> SelectStatement {
    select_versions(name, full)
        .and_where(Expr::col((ContextVersions::Table, ContextVersions::Version)).eq(version))
        .to_owned()
}

fn empty(name: &ContextName) -> Error {
    Error::precondition("CONTEXT_EMPTY", format!("{name} has no versions yet"))
}

fn compacted(name: &ContextName, version: i64, floor: i64) -> Error {
    Error::FailedPrecondition {
        reason: "VERSION_COMPACTED",
        message: format!(
            "version {version} of {name} was compacted; the oldest retained version is {floor}"
        ),
        metadata: BTreeMap::from([("first_version".to_owned(), floor.to_string())]),
    }
}

/// A retained version inside a transaction, with its document.
async fn version_in_tx(
    tx: &mut Tx,
    name: &ContextName,
    context: &Context,
    version: i64,
) -> Result<ContextVersion> {
    if version < context.floor_version && version >= 1 && version <= context.head_version {
        return Err(compacted(name, version, context.floor_version));
    }
    let row: Option<VersionRow> = tx.fetch_optional(&one_version(name, version, true)).await?;
    row.ok_or_else(|| Error::not_found(format!("{name}/versions/{version}")))?
        .try_into()
}

fn version_conflict(name: &ContextName, expected: i64, head: i64) -> Error {
    Error::Aborted {
        reason: "VERSION_CONFLICT",
        message: format!("expected version {expected} but the head of {name} is {head}"),
        metadata: BTreeMap::from([("current_version".to_owned(), head.to_string())]),
    }
}

/// The head document; an empty object before the first version.
async fn head_document(tx: &mut Tx, name: &ContextName, context: &Context) -> Result<Value> {
    Ok(match context.head_version {
        0 => Value::Object(Default::default()),
        head => version_in_tx(tx, name, context, head)
            .await?
            .data
            .unwrap_or(Value::Null),
    })
}

/// Appends one version holding `write.data`, or returns the head with `noop = true`
/// when the document equals it. Compacts beyond `keep_last` and notifies watchers.
pub(crate) async fn append(
    tx: &mut Tx,
    replica: &str,
    name: &ContextName,
    context: &mut Context,
    write: Append,
) -> Result<(ContextVersion, bool)> {
    if !write.data.is_object() {
        return Err(Error::invalid(
            "data",
            "a context document must be a JSON object",
        ));
    }
    let canonical = document::canonical_json(&write.data);
    let size = canonical.len() as i64;
    if size > write.max_bytes {
        return Err(Error::invalid_many(
            "DOCUMENT_TOO_LARGE",
            format!(
                "the document is {size} bytes of canonical JSON; the limit is {}",
                write.max_bytes
            ),
            vec![FieldViolation::new(
                "data",
                format!(
                    "at most {} bytes (quota max_context_bytes)",
                    write.max_bytes
                ),
            )],
        ));
    }
    let sha256 = document::sha256_hex(&canonical);
    if context.head_version > 0 {
        let row: Option<VersionRow> = tx
            .fetch_optional(&one_version(name, context.head_version, false))
            .await?;
        let head: ContextVersion = row
            .ok_or_else(|| Error::internal("head version row is missing"))?
            .try_into()?;
        if head.sha256 == sha256 {
            return Ok((head, true));
        }
    }
    let now = now_micros();
    let blob = Query::insert()
        .into_table(ContextBlobs::Table)
        .columns([
            ContextBlobs::WorkspaceId,
            ContextBlobs::Sha256,
            ContextBlobs::Data,
            ContextBlobs::SizeBytes,
            ContextBlobs::Refs,
            ContextBlobs::CreateTime,
        ])
        .values_panic([
            name.workspace.clone().into(),
            sha256.clone().into(),
            canonical.into(),
            size.into(),
            1i64.into(),
            now.into(),
        ])
        .on_conflict(
            OnConflict::columns([ContextBlobs::WorkspaceId, ContextBlobs::Sha256])
                .value(
                    ContextBlobs::Refs,
                    Expr::col((ContextBlobs::Table, ContextBlobs::Refs)).add(1),
                )
                .to_owned(),
        )
        .to_owned();
    tx.execute(&blob).await?;
    let version = ContextVersion {
        version: context.head_version + 1,
        op: write.op,
        rollback_of: write.rollback_of,
        sha256,
        size_bytes: size,
        author: write.author,
        description: write.description,
        request_id: write.request_id,
        create_time: now,
        data: None,
    };
    let insert = Query::insert()
        .into_table(ContextVersions::Table)
        .columns([
            ContextVersions::WorkspaceId,
            ContextVersions::ProjectId,
            ContextVersions::ContextId,
            ContextVersions::Version,
            ContextVersions::Op,
            ContextVersions::RollbackOf,
            ContextVersions::Sha256,
            ContextVersions::SizeBytes,
            ContextVersions::Author,
            ContextVersions::Description,
            ContextVersions::RequestId,
            ContextVersions::CreateTime,
        ])
        .values_panic([
            name.workspace.clone().into(),
            name.project.clone().into(),
            name.context.clone().into(),
            version.version.into(),
            version.op.as_str().into(),
            version.rollback_of.into(),
            version.sha256.clone().into(),
            version.size_bytes.into(),
            version.author.clone().into(),
            version.description.clone().into(),
            version.request_id.clone().into(),
            now.into(),
        ])
        .to_owned();
    tx.execute(&insert).await?;
    context.head_version = version.version;
    context.update_time = now;
    let keep_last = i64::from(context.keep_last.max(1));
    let floor = (context.head_version - keep_last + 1).max(context.floor_version);
    let mut update = Query::update()
        .table(Contexts::Table)
        .values([
            (Contexts::HeadVersion, context.head_version.into()),
            (Contexts::FloorVersion, floor.into()),
            (Contexts::UpdateTime, now.into()),
        ])
        .to_owned();
    where_context(&mut update, name);
    tx.execute(&update).await?;
    if floor > context.floor_version {
        context.floor_version = floor;
        compact(tx, name, floor).await?;
    }
    Wakes::of(super::context_key(name))
        .notify(tx, replica)
        .await?;
    Ok((version, false))
}

/// Deletes the versions below `floor` (already recorded on the context row, which is
/// what lets the trigger allow it) and releases their blobs.
async fn compact(tx: &mut Tx, name: &ContextName, floor: i64) -> Result<()> {
    let released = blobs_of(tx, name, Some(floor)).await?;
    let mut delete = Query::delete()
        .from_table(ContextVersions::Table)
        .and_where(Expr::col(ContextVersions::Version).lt(floor))
        .to_owned();
    where_versions(&mut delete, name);
    tx.execute(&delete).await?;
    release_blobs(tx, &name.workspace, released).await
}

#[derive(sqlx::FromRow)]
pub(crate) struct BlobUse {
    sha256: String,
    n: i64,
}

/// How many versions of `name` (below `below`, if given) use each blob.
pub(crate) async fn blobs_of(
    tx: &mut Tx,
    name: &ContextName,
    below: Option<i64>,
) -> Result<Vec<BlobUse>> {
    let mut stmt = Query::select()
        .column(ContextVersions::Sha256)
        .expr_as(
            Func::count(Expr::col(ContextVersions::Version)),
            Alias::new("n"),
        )
        .from(ContextVersions::Table)
        .group_by_col(ContextVersions::Sha256)
        .to_owned();
    where_versions(&mut stmt, name);
    if let Some(below) = below {
        stmt.and_where(Expr::col(ContextVersions::Version).lt(below));
    }
    tx.fetch_all(&stmt).await
}

pub(crate) async fn project_blobs(tx: &mut Tx, project: &ProjectName) -> Result<Vec<BlobUse>> {
    let stmt = Query::select()
        .column(ContextVersions::Sha256)
        .expr_as(
            Func::count(Expr::col(ContextVersions::Version)),
            Alias::new("n"),
        )
        .from(ContextVersions::Table)
        .and_where(Expr::col(ContextVersions::WorkspaceId).eq(project.workspace.as_str()))
        .and_where(Expr::col(ContextVersions::ProjectId).eq(project.project.as_str()))
        .group_by_col(ContextVersions::Sha256)
        .to_owned();
    tx.fetch_all(&stmt).await
}

/// Drops references to blobs and deletes the blobs nothing references any more.
pub(crate) async fn release_blobs(
    tx: &mut Tx,
    workspace: &str,
    released: Vec<BlobUse>,
) -> Result<()> {
    for BlobUse { sha256, n } in released {
        let by_key = Expr::col(ContextBlobs::WorkspaceId)
            .eq(workspace)
            .and(Expr::col(ContextBlobs::Sha256).eq(sha256.as_str()));
        tx.execute(
            &Query::update()
                .table(ContextBlobs::Table)
                .value(ContextBlobs::Refs, Expr::col(ContextBlobs::Refs).sub(n))
                .cond_where(by_key.clone())
                .to_owned(),
        )
        .await?;
        tx.execute(
            &Query::delete()
                .from_table(ContextBlobs::Table)
                .cond_where(by_key.and(Expr::col(ContextBlobs::Refs).lte(0)))
                .to_owned(),
        )
        .await?;
    }
    Ok(())
}

impl Store {
    /// WriteContext and RollbackContext: at most one new version, CAS-guarded, with
    /// patches applied here, inside the transaction.
    pub async fn write_context(
        &self,
        m: &Mutation,
        name: &ContextName,
        write: ContextWrite,
    ) -> Result<WriteOutcome> {
        // A stale CAS fails here without queueing for the row lock: under contention most
        // attempts are stale, and waiting for the lock only to fail slows every writer.
        // Calls with a request_id take the locked path, which can replay a stored result.
        if let Some(expected) = write.expected_version
            && m.request_id.is_empty()
        {
            let current = self.get_context(name).await?;
            if current.head_version != expected {
                return Err(version_conflict(name, expected, current.head_version));
            }
        }
        let outcome = mutate!(self, m, |tx| async {
            let mut context = lock_context(tx, name).await?;
            if let Some(expected) = write.expected_version
                && expected != context.head_version
            {
                return Err(version_conflict(name, expected, context.head_version));
            }
            let (data, op, rollback_of) = match &write.change {
                ContextChange::Replace(data) => (data.clone(), ContextOp::Replace, 0),
                ContextChange::MergePatch(patch) => {
                    let mut doc = head_document(tx, name, &context).await?;
                    agentry_core::json::merge_patch(&mut doc, patch);
                    (doc, ContextOp::MergePatch, 0)
                }
                ContextChange::JsonPatch(ops) => (
                    document::apply_patch(&head_document(tx, name, &context).await?, ops)?,
                    ContextOp::JsonPatch,
                    0,
                ),
                ContextChange::Rollback(target) => {
                    let target_version = version_in_tx(tx, name, &context, *target).await?;
                    (
                        target_version.data.unwrap_or(Value::Null),
                        ContextOp::Rollback,
                        *target,
                    )
                }
            };
            let workspace = read_workspace(tx, &name.workspace).await?;
            let record = Append {
                data,
                op,
                rollback_of,
                author: m.principal.clone(),
                description: write.description.clone(),
                request_id: m.request_id.clone(),
                max_bytes: workspace.quotas.max_context_bytes,
            };
            let (version, noop) = append(tx, &self.replica, name, &mut context, record).await?;
            Ok(WriteOutcome { version, noop })
        })?;
        if !outcome.noop {
            self.wake(&Wakes::of(super::context_key(name)));
        }
        Ok(outcome)
    }

    /// Where a read of `version` (`None`: the head) lands: the context's head as of a
    /// moment after this call began, and the version number, or the error such a read
    /// gives (no such context, `CONTEXT_EMPTY`, compacted, no such version). Concurrent
    /// calls share one statement on Postgres (see `heads`); a caller may serve the
    /// version from its own copy, since versions never change.
    pub async fn context_read_target(
        &self,
        name: &ContextName,
        version: Option<i64>,
    ) -> Result<(ContextHead, i64)> {
        let head = match &self.heads {
            Some(batcher) => batcher
                .head(name)
                .await?
                .ok_or_else(|| Error::not_found(name.to_string()))?,
            None => {
                let context = self.get_context(name).await?;
                ContextHead {
                    create_time: context.create_time,
                    head_version: context.head_version,
                    floor_version: context.floor_version,
                }
            }
        };
        let target = match version {
            None if head.head_version == 0 => return Err(empty(name)),
            None => head.head_version,
            Some(v) if v > head.head_version => {
                return Err(Error::not_found(format!("{name}/versions/{v}")));
            }
            Some(v) if v < head.floor_version => {
                return Err(compacted(name, v, head.floor_version));
            }
            Some(v) => v,
        };
        Ok((head, target))
    }

    /// Version `version`, with its document, of the context created at `create_time`
    /// under `name` (one found by [`Self::context_read_target`]); `None` when that
    /// context no longer has it: deleted, created again, or compacted since.
    pub async fn context_version_of(
        &self,
        name: &ContextName,
        create_time: Micros,
        version: i64,
    ) -> Result<Option<ContextVersion>> {
        let mut same_context = Query::select()
            .expr(Expr::val(1))
            .from(Contexts::Table)
            .and_where(Expr::col(Contexts::CreateTime).eq(create_time))
            .to_owned();
        where_context(&mut same_context, name);
        let stmt = one_version(name, version, true)
            .and_where(Expr::exists(same_context))
            .to_owned();
        self.db
            .fetch_optional::<VersionRow>(&stmt)
            .await?
            .map(ContextVersion::try_from)
            .transpose()
    }

    /// One version with its document. The common case is one query (the version joined
    /// with its context and blob); only a miss pays for finding out why: no such context,
    /// compacted, or never written. (A read of the head asks `context_read_target` for
    /// its number first.)
    pub async fn read_context(&self, name: &ContextName, version: i64) -> Result<ContextVersion> {
        let stmt = select_versions(name, true)
            .and_where(Expr::col((ContextVersions::Table, ContextVersions::Version)).eq(version))
            .to_owned();
        if let Some(row) = self.db.fetch_optional::<VersionRow>(&stmt).await? {
            return row.try_into();
        }
        let context = self.get_context(name).await?;
        if version < context.floor_version && version <= context.head_version {
            return Err(compacted(name, version, context.floor_version));
        }
        Err(Error::not_found(format!("{name}/versions/{version}")))
    }

    pub async fn list_context_versions(
        &self,
        name: &ContextName,
        filter: &VersionFilter,
        full: bool,
        page: &PageRequest,
    ) -> Result<Page<ContextVersion>> {
        self.get_context(name).await?;
        let mut stmt = select_versions(name, full);
        let col = |c| Expr::col((ContextVersions::Table, c));
        if let Some(author) = &filter.author {
            stmt.and_where(col(ContextVersions::Author).eq(author.as_str()));
        }
        if let Some(op) = filter.op {
            stmt.and_where(col(ContextVersions::Op).eq(op.as_str()));
        }
        if let Some(t) = filter.after_time {
            stmt.and_where(col(ContextVersions::CreateTime).gt(t));
        }
        if let Some(t) = filter.before_time {
            stmt.and_where(col(ContextVersions::CreateTime).lt(t));
        }
        if let Some(after) = &page.after {
            let after: i64 = after
                .parse()
                .map_err(|_| Error::internal("version cursor is not a number"))?;
            stmt.and_where(col(ContextVersions::Version).lt(after));
        }
        stmt.order_by(
            (ContextVersions::Table, ContextVersions::Version),
            Order::Desc,
        )
        .limit(page.size as u64 + 1);
        let rows: Vec<VersionRow> = self.db.fetch_all(&stmt).await?;
        let items = rows
            .into_iter()
            .map(ContextVersion::try_from)
            .collect::<Result<Vec<_>>>()?;
        Ok(paginate(items, page.size, |v| v.version.to_string()))
    }

    /// Up to `limit` versions after `after`, oldest first, for watchers. Fails with
    /// OUT_OF_RANGE `VERSION_COMPACTED` when versions after `after` were compacted, so a
    /// watcher never skips one silently.
    pub async fn context_versions_after(
        &self,
        name: &ContextName,
        after: i64,
        limit: u64,
        full: bool,
    ) -> Result<Vec<ContextVersion>> {
        let stmt = select_versions(name, full)
            .and_where(Expr::col((ContextVersions::Table, ContextVersions::Version)).gt(after))
            .order_by(
                (ContextVersions::Table, ContextVersions::Version),
                Order::Asc,
            )
            .limit(limit)
            .to_owned();
        let rows: Vec<VersionRow> = self.db.fetch_all(&stmt).await?;
        // Versions are gapless, so a first row past `after + 1` means compaction removed
        // what the caller has not seen: say so rather than skip it. With no rows, the
        // context row tells (read after the versions, so a compaction racing the read
        // shows up in the floor).
        let floor = match rows.first() {
            Some(first) if Some(first.version) == after.checked_add(1) => {
                return rows.into_iter().map(ContextVersion::try_from).collect();
            }
            Some(first) => first.version,
            None => {
                let context = self.get_context(name).await?;
                if after.saturating_add(1) >= context.floor_version || after >= context.head_version
                {
                    return Ok(Vec::new());
                }
                context.floor_version
            }
        };
        Err(Error::OutOfRange {
            reason: "VERSION_COMPACTED",
            message: format!(
                "versions after {after} of {name} were compacted; the oldest retained version is {floor}"
            ),
            metadata: BTreeMap::from([("first_version".to_owned(), floor.to_string())]),
        })
    }

    /// Stored blobs of a workspace (for storage accounting and tests).
    pub async fn context_blob_stats(&self, workspace: &str) -> Result<(i64, i64)> {
        #[derive(sqlx::FromRow)]
        struct Stats {
            blobs: i64,
            bytes: Option<i64>,
        }
        let stmt = Query::select()
            .expr_as(
                Func::count(Expr::col(ContextBlobs::Sha256)),
                Alias::new("blobs"),
            )
            .expr_as(
                Expr::cust("CAST(SUM(size_bytes) AS BIGINT)"),
                Alias::new("bytes"),
            )
            .from(ContextBlobs::Table)
            .and_where(Expr::col(ContextBlobs::WorkspaceId).eq(workspace))
            .to_owned();
        let stats: Option<Stats> = self.db.fetch_optional(&stmt).await?;
        Ok(stats
            .map(|s| (s.blobs, s.bytes.unwrap_or(0)))
            .unwrap_or((0, 0)))
    }
}
